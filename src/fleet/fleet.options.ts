import type { RedisOptions } from 'ioredis';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { fail } from '../module/options.validation.js';

/** The options of `CancellationFleetModule.forRoot()`. */
export interface FleetOptions {
  /** The Redis every instance of the application shares: a URL (`redis://host:port/db`) or ioredis options. */
  redis: string | RedisOptions;
  /**
   * This instance's name in the fleet's listing.
   * @default `<hostname>:<pid>:<4 random hex digits>`
   */
  instanceId?: string;
  /**
   * How long an instance stays listed without renewing its lease: one that dies without a goodbye (`kill -9`,
   * a lost host) drops out of the listing within this time. It renews it every `leaseMs / 3`, publishing what
   * it has in flight.
   * @default 10_000
   */
  leaseMs?: number;
  /**
   * The longest a fleet call (`FleetRegistry.inFlight()`, `cancel()`) waits on Redis before it fails with a
   * `FleetUnavailableError`; `cancel()` also waits up to this long for the instances to answer.
   * @default 1_000
   */
  timeoutMs?: number;
  /**
   * How long a cancel is remembered for work that has not started yet (a cancel that arrives before the
   * request or job registers still cancels it), and kept in Redis for instances that were not listening.
   * @default 30_000
   */
  pendingCancelMs?: number;
  /**
   * The prefix of the Redis keys and channels: instances with the same prefix form one fleet.
   * @default 'nestjs-cancellation:fleet'
   */
  prefix?: string;
}

/** The options with their defaults. @internal */
export interface ResolvedFleetOptions {
  readonly redis: string | RedisOptions;
  readonly instanceId: string;
  readonly leaseMs: number;
  readonly timeoutMs: number;
  readonly pendingCancelMs: number;
  readonly prefix: string;
}

/** @internal */
export const FLEET_OPTIONS = Symbol('nestjs-cancellation:fleet-options');

function duration(option: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    fail(option, value, 'a positive number of milliseconds');
  }
  return value;
}

/** Validates the options and resolves their defaults; a wrong value fails at start-up, named. @internal */
export function resolveFleetOptions(options: FleetOptions): ResolvedFleetOptions {
  if (typeof options !== 'object' || options === null) fail('fleet', options, 'an object with `redis`');
  const { redis, instanceId, prefix = 'nestjs-cancellation:fleet' } = options;
  if (typeof redis !== 'string' && (typeof redis !== 'object' || redis === null)) {
    fail('redis', redis, 'a Redis URL or ioredis options');
  }
  if (instanceId !== undefined && (typeof instanceId !== 'string' || !/^[\w.:@-]{1,200}$/.test(instanceId))) {
    fail('instanceId', instanceId, 'a string of letters, digits and . : @ - _');
  }
  if (typeof prefix !== 'string' || prefix === '') fail('prefix', prefix, 'a non-empty string');
  return {
    redis,
    instanceId: instanceId ?? `${hostname()}:${process.pid}:${randomBytes(2).toString('hex')}`,
    leaseMs: duration('leaseMs', options.leaseMs, 10_000),
    timeoutMs: duration('timeoutMs', options.timeoutMs, 1_000),
    pendingCancelMs: duration('pendingCancelMs', options.pendingCancelMs, 30_000),
    prefix,
  };
}
