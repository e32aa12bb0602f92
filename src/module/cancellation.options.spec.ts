import 'reflect-metadata';
import { inspect } from 'node:util';
import { DEFAULT_OPTIONS } from './cancellation.options.js';
import { MAX_TIMEOUT_MS, resolveOptions, validateTimeout } from './options.validation.js';
import type { CancellationModuleOptions } from './cancellation.options.js';

/** Calls `resolveOptions` with values the type would refuse, as plain JavaScript or a config file would. */
function resolveUntyped(options: unknown) {
  return resolveOptions(options as CancellationModuleOptions);
}

/** The message `resolveOptions` throws with, or fails the test if it does not throw a TypeError. */
function failureOf(options: unknown): string {
  try {
    resolveUntyped(options);
  } catch (err) {
    expect(err).toBeInstanceOf(TypeError);
    return (err as TypeError).message;
  }
  throw new Error(`resolveOptions(${inspect(options)}) did not throw`);
}

describe('resolveOptions', () => {
  describe('defaults', () => {
    it('fills in every default when no options are given', () => {
      expect(resolveOptions(undefined)).toEqual({
        timeoutMs: false,
        timeoutStatus: 504,
        retryAfterSeconds: 1,
        shutdownGracePeriodMs: 0,
        shutdownTimeoutMs: 10_000,
        deadlineHeader: false,
        logCancellations: true,
        requestIdHeader: 'x-request-id',
        stillRunningWarningMs: false,
        metrics: false,
        asyncContext: true,
        exclude: [],
      });
      expect(resolveUntyped(null)).toEqual(DEFAULT_OPTIONS);
      expect(resolveOptions({})).toEqual(DEFAULT_OPTIONS);
    });

    it('treats a field set to undefined as absent', () => {
      expect(
        resolveOptions({
          timeoutMs: undefined,
          timeoutStatus: undefined,
          retryAfterSeconds: undefined,
          logCancellations: undefined,
        }),
      ).toEqual(DEFAULT_OPTIONS);
    });

    it('keeps the given fields and fills in the others', () => {
      expect(resolveOptions({ timeoutMs: 30_000 })).toEqual({ ...DEFAULT_OPTIONS, timeoutMs: 30_000 });
      expect(resolveOptions({ logCancellations: false })).toEqual({
        ...DEFAULT_OPTIONS,
        logCancellations: false,
      });
    });

    it('returns a fresh object, so that changing one result changes neither the defaults nor the next result', () => {
      const first = resolveOptions(undefined);
      first.timeoutMs = 5;
      expect(DEFAULT_OPTIONS.timeoutMs).toBe(false);
      expect(resolveOptions(undefined).timeoutMs).toBe(false);
      expect(resolveOptions({})).not.toBe(DEFAULT_OPTIONS);
    });

    it('does not modify the options it was given', () => {
      const given = Object.freeze({ timeoutMs: 1000 });
      expect(() => resolveOptions(given)).not.toThrow();
      expect(given).toEqual({ timeoutMs: 1000 });
    });
  });

  describe('timeoutMs', () => {
    it.each<number | false>([false, 1, 1000, 30_000, MAX_TIMEOUT_MS])('accepts %p', (value) => {
      expect(resolveOptions({ timeoutMs: value }).timeoutMs).toBe(value);
    });

    it.each([
      [-5, '-5'],
      [0, '0'],
      [Number.NaN, 'NaN'],
      ['100', '"100"'],
      [1.5, '1.5'],
      [2 ** 31, '2147483648'],
      [Number.POSITIVE_INFINITY, 'Infinity'],
      [true, 'true'],
      [null, 'null'],
      [{ ms: 5 }, '{"ms":5}'],
    ])('rejects %p, naming the option and the value', (value, shown) => {
      const message = failureOf({ timeoutMs: value });
      expect(message).toContain('"timeoutMs"');
      expect(message).toContain(`: ${shown} `);
      expect(message).toContain(String(MAX_TIMEOUT_MS));
    });
  });

  describe('timeoutStatus', () => {
    it.each([400, 408, 499, 503, 504, 599])('accepts %p', (value) => {
      expect(resolveOptions({ timeoutStatus: value }).timeoutStatus).toBe(value);
    });

    it.each([
      [200, '200'],
      [399, '399'],
      [600, '600'],
      ['504', '"504"'],
      [504.5, '504.5'],
      [Number.NaN, 'NaN'],
    ])('rejects %p, naming the option and the value', (value, shown) => {
      const message = failureOf({ timeoutStatus: value });
      expect(message).toContain('"timeoutStatus"');
      expect(message).toContain(`: ${shown} `);
    });
  });

  describe('retryAfterSeconds', () => {
    it.each([0, 1, 30, 3600])('accepts %p', (value) => {
      expect(resolveOptions({ retryAfterSeconds: value }).retryAfterSeconds).toBe(value);
    });

    it.each([
      [-1, '-1'],
      [1.5, '1.5'],
      ['1', '"1"'],
      [Number.NaN, 'NaN'],
      [Number.POSITIVE_INFINITY, 'Infinity'],
    ])('rejects %p, naming the option and the value', (value, shown) => {
      const message = failureOf({ retryAfterSeconds: value });
      expect(message).toContain('"retryAfterSeconds"');
      expect(message).toContain(`: ${shown} `);
    });
  });

  describe('shutdownGracePeriodMs and shutdownTimeoutMs', () => {
    it('defaults the hard deadline to the grace period plus 10 s', () => {
      expect(resolveOptions({ shutdownGracePeriodMs: 5_000 }).shutdownTimeoutMs).toBe(15_000);
      expect(resolveOptions({}).shutdownTimeoutMs).toBe(10_000);
    });

    it('accepts a hard deadline longer than the grace period', () => {
      expect(resolveOptions({ shutdownGracePeriodMs: 1_000, shutdownTimeoutMs: 1_001 })).toMatchObject({
        shutdownGracePeriodMs: 1_000,
        shutdownTimeoutMs: 1_001,
      });
    });

    it.each([
      [-1, '-1'],
      [1.5, '1.5'],
      ['100', '"100"'],
      [Number.NaN, 'NaN'],
      [MAX_TIMEOUT_MS + 1, String(MAX_TIMEOUT_MS + 1)],
    ])('rejects a grace period of %p, naming the option and the value', (value, shown) => {
      const message = failureOf({ shutdownGracePeriodMs: value });
      expect(message).toContain('"shutdownGracePeriodMs"');
      expect(message).toContain(`: ${shown} `);
    });

    it.each([
      [{ shutdownTimeoutMs: 0 }, '0'],
      [{ shutdownTimeoutMs: false }, 'false'],
      [{ shutdownTimeoutMs: '5000' }, '"5000"'],
      [{ shutdownGracePeriodMs: 5_000, shutdownTimeoutMs: 5_000 }, '5000'],
      [{ shutdownGracePeriodMs: 5_000, shutdownTimeoutMs: 1_000 }, '1000'],
    ])('rejects %p, naming shutdownTimeoutMs and the value', (options, shown) => {
      const message = failureOf(options);
      expect(message).toContain('"shutdownTimeoutMs"');
      expect(message).toContain(`: ${shown} `);
    });
  });

  describe('deadlineHeader', () => {
    it('accepts a header name, lower-cased, or false', () => {
      expect(resolveOptions({ deadlineHeader: 'X-Request-Timeout-Ms' }).deadlineHeader).toBe(
        'x-request-timeout-ms',
      );
      expect(resolveOptions({ deadlineHeader: false }).deadlineHeader).toBe(false);
    });

    it.each([
      ['', '""'],
      ['x header', '"x header"'],
      ['x:y', '"x:y"'],
      [true, 'true'],
      [42, '42'],
    ])('rejects %p, naming the option and the value', (value, shown) => {
      const message = failureOf({ deadlineHeader: value });
      expect(message).toContain('"deadlineHeader"');
      expect(message).toContain(`: ${shown} `);
    });
  });

  describe('logCancellations', () => {
    it.each([true, false])('accepts %p', (value) => {
      expect(resolveOptions({ logCancellations: value }).logCancellations).toBe(value);
    });

    it.each([
      ['yes', '"yes"'],
      [1, '1'],
      [0, '0'],
      [null, 'null'],
    ])('rejects %p, naming the option and the value', (value, shown) => {
      const message = failureOf({ logCancellations: value });
      expect(message).toContain('"logCancellations"');
      expect(message).toContain(`: ${shown} `);
    });
  });

  describe('requestIdHeader', () => {
    it('accepts a header name, lower-cased, or false', () => {
      expect(resolveOptions({ requestIdHeader: 'X-Correlation-ID' }).requestIdHeader).toBe(
        'x-correlation-id',
      );
      expect(resolveOptions({ requestIdHeader: false }).requestIdHeader).toBe(false);
    });

    it.each([
      ['', '""'],
      ['x id', '"x id"'],
      [true, 'true'],
    ])('rejects %p, naming the option and the value', (value, shown) => {
      const message = failureOf({ requestIdHeader: value });
      expect(message).toContain('"requestIdHeader"');
      expect(message).toContain(`: ${shown} `);
    });
  });

  describe('stillRunningWarningMs, metrics and asyncContext', () => {
    it('accepts a whole number of milliseconds or false, and booleans', () => {
      expect(resolveOptions({ stillRunningWarningMs: 500 }).stillRunningWarningMs).toBe(500);
      expect(resolveOptions({ stillRunningWarningMs: false }).stillRunningWarningMs).toBe(false);
      expect(resolveOptions({ metrics: true }).metrics).toBe(true);
      expect(resolveOptions({ asyncContext: false }).asyncContext).toBe(false);
    });

    it.each([
      [{ stillRunningWarningMs: 0 }, 'stillRunningWarningMs', '0'],
      [{ stillRunningWarningMs: 1.5 }, 'stillRunningWarningMs', '1.5'],
      [{ stillRunningWarningMs: true }, 'stillRunningWarningMs', 'true'],
      [{ metrics: 'true' }, 'metrics', '"true"'],
      [{ metrics: 1 }, 'metrics', '1'],
      [{ asyncContext: 'false' }, 'asyncContext', '"false"'],
      [{ asyncContext: 0 }, 'asyncContext', '0'],
    ])('rejects %p, naming the option and the value', (options, option, shown) => {
      const message = failureOf(options);
      expect(message).toContain(`"${option}"`);
      expect(message).toContain(`: ${shown} `);
    });
  });

  describe('unknown options', () => {
    it('says where admin belongs when a factory returns it', () => {
      expect(failureOf({ admin: { guard: class {} } })).toMatch(
        /"admin" is given to forRoot\(\) \/ forRootAsync\(\) itself/,
      );
    });

    it('rejects a misspelt option, naming it and listing the known ones', () => {
      const message = failureOf({ timeOutMs: 100 });
      expect(message).toContain('"timeOutMs"');
      for (const known of ['timeoutMs', 'timeoutStatus', 'retryAfterSeconds', 'logCancellations']) {
        expect(message).toContain(known);
      }
    });

    it('rejects an unknown option even next to valid ones', () => {
      expect(failureOf({ timeoutMs: 100, retry: 3 })).toContain('"retry"');
    });

    it.each(['constructor', 'toString', 'hasOwnProperty', '__proto__'])(
      'rejects %p, a name every object inherits',
      (key) => {
        // JSON.parse makes `__proto__` an own key, as a config file would.
        const options: unknown = JSON.parse(`{"${key}": 5}`);
        expect(failureOf(options)).toContain(`"${key}"`);
      },
    );
  });

  it.each([
    ['a string', '30000'],
    ['a number', 30_000],
    ['a boolean', true],
  ])('rejects options that are %s, naming them', (_what, value) => {
    const message = failureOf(value);
    expect(message).toContain('"options"');
  });
});

describe('validateTimeout', () => {
  it('names the place it is given in the message', () => {
    expect(() => validateTimeout('@RequestTimeout() on Reports.export', -1)).toThrow(
      '@RequestTimeout() on Reports.export',
    );
  });

  it('returns the value it accepts', () => {
    expect(validateTimeout('x', 250)).toBe(250);
    expect(validateTimeout('x', false)).toBe(false);
  });
});
