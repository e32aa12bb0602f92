import 'reflect-metadata';
import { RequestMethod } from '@nestjs/common';
import { fail } from '../module/options.validation.js';
import { compileExclusions, RouteExclusions } from './route-exclusion.js';

function exclusions(...entries: unknown[]): RouteExclusions {
  return new RouteExclusions(compileExclusions(entries, fail));
}

const get = (url: string) => ({ method: 'GET', url });

describe('RouteExclusions (the exclude option)', () => {
  it('matches a literal path with or without its slashes, in any case, ignoring the query string', () => {
    const ex = exclusions('health');
    for (const url of ['/health', '/health/', '/HEALTH', '/health?full=1'])
      expect(ex.matchesPath(get(url))).toBe(true);
    for (const url of ['/healthz', '/health/deep', '/api/health', '/'])
      expect(ex.matchesPath(get(url))).toBe(false);
  });

  it('matches a :param as one segment and a trailing wildcard as the rest, nothing included', () => {
    const ex = exclusions('/users/:id/avatar', 'metrics/*', 'docs/{*rest}', 'static/*path');
    expect(ex.matchesPath(get('/users/42/avatar'))).toBe(true);
    expect(ex.matchesPath(get('/users/42/43/avatar'))).toBe(false);
    expect(ex.matchesPath(get('/users//avatar'))).toBe(false);
    for (const url of ['/metrics', '/metrics/', '/metrics/a/b', '/docs/x', '/static/css/a.css'])
      expect(ex.matchesPath(get(url))).toBe(true);
    expect(ex.matchesPath(get('/metricsx'))).toBe(false);
  });

  it('matches the method given, a GET covering HEAD, and ALL or none any method', () => {
    const ex = exclusions({ path: 'ready', method: RequestMethod.GET }, { path: 'hook', method: 'post' });
    expect(ex.matchesPath({ method: 'GET', url: '/ready' })).toBe(true);
    expect(ex.matchesPath({ method: 'HEAD', url: '/ready' })).toBe(true);
    expect(ex.matchesPath({ method: 'POST', url: '/ready' })).toBe(false);
    expect(ex.matchesPath({ method: 'POST', url: '/hook' })).toBe(true);
    expect(ex.matchesPath({ method: 'GET', url: '/hook' })).toBe(false);
    const any = exclusions({ path: 'x', method: RequestMethod.ALL }, '*');
    expect(any.matchesPath({ method: 'DELETE', url: '/anything/at/all' })).toBe(true);
  });

  it('treats pattern characters in a literal segment as text, never as a regular expression', () => {
    expect(() => exclusions('a.b')).not.toThrow();
    expect(exclusions('a.b').matchesPath(get('/aXb'))).toBe(false);
    for (const bad of [
      'a/(.*)',
      'a/b?',
      'a+',
      'a/*/b',
      'a:b',
      '',
      '  ',
      42,
      null,
      { path: 'x', method: 99 },
    ]) {
      expect(() => exclusions(bad)).toThrow(/invalid option "exclude\[0\]/);
    }
  });

  it('has no patterns, and matches nothing, when the option is empty', () => {
    const none = exclusions();
    expect(none.hasPatterns).toBe(false);
    expect(none.matchesPath(get('/health'))).toBe(false);
  });
});
