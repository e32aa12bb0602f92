import { Inject, Injectable } from '@nestjs/common';
import { HealthIndicatorService } from '@nestjs/terminus';
import type { HealthIndicatorResult } from '@nestjs/terminus';
import { CancellationService } from '../core/cancellation.service.js';

/**
 * A `@nestjs/terminus` health indicator for a readiness probe: `up` while the application takes work, `down`
 * from the moment the drain begins (`drainingSignal`, the first thing shutdown does, before any other module's
 * shutdown hook), with the reason: a load balancer or Kubernetes stops sending traffic while the requests in
 * flight finish. Provide it beside `TerminusModule`; mark the health controller `@SkipCancellation()` (or list
 * its path in `exclude`) so that the probe is answered while every other request is refused.
 *
 * @example
 * ```ts
 * @Controller('health')
 * @SkipCancellation()
 * export class HealthController {
 *   constructor(
 *     private readonly health: HealthCheckService,
 *     private readonly cancellation: CancellationHealthIndicator,
 *   ) {}
 *
 *   @Get('ready')
 *   @HealthCheck()
 *   ready() {
 *     return this.health.check([() => this.cancellation.isReady()]);
 *   }
 * }
 * ```
 */
@Injectable()
export class CancellationHealthIndicator {
  constructor(
    @Inject(HealthIndicatorService) private readonly health: HealthIndicatorService,
    @Inject(CancellationService) private readonly cancellation: CancellationService,
  ) {}

  /**
   * `up`, or `down` with `{ draining: true, message }` once the application drains (and for good: an
   * application does not come back from shutdown).
   * @param key the indicator's key in the health check's result
   */
  isReady<const Key extends string = 'cancellation'>(
    key: Key = 'cancellation' as Key,
  ): HealthIndicatorResult<Key> {
    const session = this.health.check(key);
    const { drainingSignal } = this.cancellation;
    if (!drainingSignal.aborted) return session.up();
    const reason: unknown = drainingSignal.reason;
    return session.down({
      draining: true,
      message: reason instanceof Error ? reason.message : 'The application is shutting down',
    });
  }
}
