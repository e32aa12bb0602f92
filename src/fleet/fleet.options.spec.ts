import { resolveFleetOptions } from './fleet.options.js';

describe('resolveFleetOptions', () => {
  it('fills the defaults', () => {
    const options = resolveFleetOptions({ redis: 'redis://127.0.0.1:6379' });
    expect(options).toMatchObject({
      redis: 'redis://127.0.0.1:6379',
      leaseMs: 10_000,
      timeoutMs: 1_000,
      pendingCancelMs: 30_000,
      prefix: 'nestjs-cancellation:fleet',
    });
    expect(options.instanceId).toMatch(/^.+:\d+:[0-9a-f]{4}$/);
  });

  it('keeps what is given', () => {
    const redis = { host: '127.0.0.1', port: 6380 };
    expect(
      resolveFleetOptions({ redis, instanceId: 'web-1', leaseMs: 1_500, timeoutMs: 200, prefix: 'app' }),
    ).toMatchObject({ redis, instanceId: 'web-1', leaseMs: 1_500, timeoutMs: 200, prefix: 'app' });
  });

  it.each([
    [{ redis: 42 }, /"redis": 42/],
    [{ redis: 'redis://x', leaseMs: 0 }, /"leaseMs": 0/],
    [{ redis: 'redis://x', timeoutMs: Number.NaN }, /"timeoutMs"/],
    [{ redis: 'redis://x', instanceId: 'a b' }, /"instanceId": "a b"/],
    [{ redis: 'redis://x', prefix: '' }, /"prefix"/],
  ])('refuses %j, naming the option', (options, message) => {
    expect(() => resolveFleetOptions(options as never)).toThrow(message);
  });
});
