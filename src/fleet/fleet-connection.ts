import { Logger } from '@nestjs/common';
import { Redis } from 'ioredis';
import type { RedisOptions } from 'ioredis';
import type { ResolvedFleetOptions } from './fleet.options.js';

/**
 * A Redis client for the fleet that fails fast instead of hanging: no offline queue (a command while the
 * connection is down fails at once), each command bounded by `timeoutMs`, reconnecting in the background
 * with a capped backoff. Its errors are logged once per outage (a warning, then a line when it is back),
 * never thrown: ioredis's reconnect errors must not crash the application.
 * @internal
 */
export function fleetClient(options: ResolvedFleetOptions, role: 'commands' | 'subscriber'): Redis {
  const { redis, timeoutMs } = options;
  const failFast: RedisOptions = {
    lazyConnect: true,
    // The subscriber queues its SUBSCRIBE until connected (and re-subscribes after a reconnect by itself).
    enableOfflineQueue: role === 'subscriber',
    maxRetriesPerRequest: role === 'subscriber' ? null : 0,
    connectTimeout: Math.max(timeoutMs, 1_000),
    ...(role === 'commands' ? { commandTimeout: timeoutMs } : {}),
    retryStrategy: (attempt: number) => Math.min(50 * 2 ** attempt, 2_000),
    connectionName: `nestjs-cancellation-fleet-${role}`,
  };
  const client =
    typeof redis === 'string' ? new Redis(redis, failFast) : new Redis({ ...redis, ...failFast });
  const logger = new Logger('CancellationFleet');
  let down = false;
  client.on('error', (err: Error) => {
    if (down) return;
    down = true;
    logger.warn(
      `Redis ${role} connection lost (${err.message}): fleet calls fail until it is back; local cancellation works`,
    );
  });
  client.on('ready', () => {
    if (!down) return;
    down = false;
    logger.log(`Redis ${role} connection is back`);
  });
  return client;
}
