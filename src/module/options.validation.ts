import { compileExclusions } from '../http/route-exclusion.js';
import { DEFAULT_OPTIONS, DEFAULT_SHUTDOWN_TIMEOUT_MARGIN_MS } from './cancellation.options.js';
import type { CancellationModuleOptions, ResolvedCancellationOptions } from './cancellation.options.js';

/** An HTTP header name (RFC 9110 token). */
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/**
 * The longest budget `setTimeout` can hold (about 24.8 days); a larger value would fire at once.
 * @internal
 */
export const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/** @internal */
export function fail(option: string, value: unknown, expected: string): never {
  throw new TypeError(
    `nestjs-cancellation: invalid option "${option}": ${describe(value)} (expected ${expected})`,
  );
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'function') return 'a function';
  if (typeof value === 'object' && value !== null) {
    try {
      return JSON.stringify(value);
    } catch {
      return 'an object';
    }
  }
  return String(value);
}

/**
 * Checks a time budget given in milliseconds: a positive integer no larger than `setTimeout` can hold, or
 * `false` for none. `where` names the option or the route in the error.
 * @internal
 */
export function validateTimeout(where: string, value: unknown): number | false {
  if (value === false) return false;
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0 || value > MAX_TIMEOUT_MS) {
    fail(where, value, `false or a whole number of milliseconds from 1 to ${MAX_TIMEOUT_MS}`);
  }
  return value;
}

/**
 * Fills in the defaults and validates every field, so that a typo or a wrong value stops the application
 * at start-up instead of silently changing what happens at shutdown.
 * @internal
 */
export function resolveOptions(options: CancellationModuleOptions | undefined): ResolvedCancellationOptions {
  if (options === undefined || options === null) return { ...DEFAULT_OPTIONS };
  if (typeof options !== 'object') fail('options', options, 'an object');
  for (const key of Object.keys(options)) {
    if (key === 'admin') {
      throw new TypeError(
        'nestjs-cancellation: option "admin" is given to forRoot() / forRootAsync() itself, beside ' +
          'useFactory, not returned by the factory: it decides which controllers the module has',
      );
    }
    if (!Object.hasOwn(DEFAULT_OPTIONS, key)) {
      throw new TypeError(
        `nestjs-cancellation: unknown option "${key}" (known options: ${Object.keys(DEFAULT_OPTIONS).join(', ')})`,
      );
    }
  }
  const resolved = { ...DEFAULT_OPTIONS };
  if (options.timeoutMs !== undefined) resolved.timeoutMs = validateTimeout('timeoutMs', options.timeoutMs);
  if (options.timeoutStatus !== undefined) {
    const status = options.timeoutStatus;
    if (typeof status !== 'number' || !Number.isInteger(status) || status < 400 || status > 599) {
      fail('timeoutStatus', status, 'an HTTP status code from 400 to 599');
    }
    resolved.timeoutStatus = status;
  }
  if (options.retryAfterSeconds !== undefined) {
    const seconds = options.retryAfterSeconds;
    if (typeof seconds !== 'number' || !Number.isInteger(seconds) || seconds < 0) {
      fail('retryAfterSeconds', seconds, 'a whole number of seconds, 0 or more');
    }
    resolved.retryAfterSeconds = seconds;
  }
  if (options.shutdownGracePeriodMs !== undefined) {
    const grace = options.shutdownGracePeriodMs;
    if (typeof grace !== 'number' || !Number.isInteger(grace) || grace < 0 || grace > MAX_TIMEOUT_MS) {
      fail('shutdownGracePeriodMs', grace, `a whole number of milliseconds from 0 to ${MAX_TIMEOUT_MS}`);
    }
    resolved.shutdownGracePeriodMs = grace;
  }
  if (options.shutdownTimeoutMs === undefined) {
    resolved.shutdownTimeoutMs = Math.min(
      resolved.shutdownGracePeriodMs + DEFAULT_SHUTDOWN_TIMEOUT_MARGIN_MS,
      MAX_TIMEOUT_MS,
    );
  } else {
    const hard = validateTimeout('shutdownTimeoutMs', options.shutdownTimeoutMs);
    if (hard === false || hard <= resolved.shutdownGracePeriodMs) {
      fail(
        'shutdownTimeoutMs',
        options.shutdownTimeoutMs,
        `a whole number of milliseconds longer than shutdownGracePeriodMs (${resolved.shutdownGracePeriodMs})`,
      );
    }
    resolved.shutdownTimeoutMs = hard;
  }
  if (options.deadlineHeader !== undefined) {
    const header = options.deadlineHeader;
    if (header !== false && (typeof header !== 'string' || !HEADER_NAME.test(header))) {
      fail('deadlineHeader', header, 'false or an HTTP header name such as "x-request-timeout-ms"');
    }
    resolved.deadlineHeader = header === false ? false : header.toLowerCase();
  }
  if (options.logCancellations !== undefined) {
    if (typeof options.logCancellations !== 'boolean') {
      fail('logCancellations', options.logCancellations, 'true or false');
    }
    resolved.logCancellations = options.logCancellations;
  }
  if (options.requestIdHeader !== undefined) {
    const header = options.requestIdHeader;
    if (header !== false && (typeof header !== 'string' || !HEADER_NAME.test(header))) {
      fail('requestIdHeader', header, 'false or an HTTP header name such as "x-request-id"');
    }
    resolved.requestIdHeader = header === false ? false : header.toLowerCase();
  }
  if (options.stillRunningWarningMs !== undefined) {
    resolved.stillRunningWarningMs = validateTimeout('stillRunningWarningMs', options.stillRunningWarningMs);
  }
  if (options.metrics !== undefined) {
    if (typeof options.metrics !== 'boolean') fail('metrics', options.metrics, 'true or false');
    resolved.metrics = options.metrics;
  }
  if (options.asyncContext !== undefined) {
    if (typeof options.asyncContext !== 'boolean')
      fail('asyncContext', options.asyncContext, 'true or false');
    resolved.asyncContext = options.asyncContext;
  }
  if (options.exclude !== undefined) {
    compileExclusions(options.exclude, fail);
    resolved.exclude = [...options.exclude];
  }
  return resolved;
}
