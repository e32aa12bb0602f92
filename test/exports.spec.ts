import 'reflect-metadata';
import * as publicApi from '../src/index.js';

/**
 * The public surface of the package, pinned: adding or removing an export is a decision, so it must change
 * this list too (an accidental export becomes API that cannot be removed without a major version).
 */
const EXPECTED: Record<string, 'class' | 'function'> = {
  CancellationError: 'class',
  CancellationInterceptor: 'class',
  CancellationModule: 'class',
  CancellationService: 'class',
  RequestSignal: 'function',
  RequestTimeout: 'function',
  checkpoint: 'function',
  findCancellationError: 'function',
  isCancellationError: 'function',
};

function kindOf(value: unknown): string {
  if (typeof value !== 'function') return typeof value;
  return /^class\b/.test(Function.prototype.toString.call(value)) ? 'class' : 'function';
}

describe('public surface of nestjs-cancellation', () => {
  it('exports exactly the documented names', async () => {
    const exported = Object.keys(await import('../src/index.js')).sort();
    expect(exported).toEqual(Object.keys(EXPECTED).sort());
  });

  it.each(Object.entries(EXPECTED))('exports %s as a %s', (name, kind) => {
    expect(kindOf((publicApi as Record<string, unknown>)[name])).toBe(kind);
  });

  it('exports classes that work as the API says', () => {
    const err = new publicApi.CancellationError('timeout');
    expect(publicApi.isCancellationError(err)).toBe(true);
    expect(typeof publicApi.CancellationModule.forRoot).toBe('function');
    expect(typeof publicApi.CancellationModule.forRootAsync).toBe('function');
  });
});
