import { Module } from '@nestjs/common';
import { DiscoveryModule } from '@nestjs/core';
import { ScheduledRuns } from './scheduled-runs.js';

/**
 * Gives each run of the application's `@Cron()`, `@Interval()` and `@Timeout()` methods (`@nestjs/schedule`)
 * its own scope: inside a run, `CancellationService.signal` is that run's signal, which aborts at shutdown
 * (after `shutdownGracePeriodMs`, as for requests), when the job's `@JobTimeout()` budget runs out, and on
 * `CancellationRegistry.cancel(id)`. Runs in flight are listed by `inFlight()` (method `CRON`, `INTERVAL` or
 * `TIMEOUT`, route the job's name), shutdown waits for them during the grace period, and `app.close()`
 * resolves only once the aborted ones have settled (up to `shutdownTimeoutMs`). A tick that fires once
 * shutdown has begun is skipped.
 *
 * Import it beside `ScheduleModule.forRoot()` and `CancellationModule.forRoot()`, in any order.
 *
 * @example
 * ```ts
 * @Module({
 *   imports: [ScheduleModule.forRoot(), CancellationModule.forRoot(), CancellationScheduleModule],
 *   providers: [ReportJob],
 * })
 * export class AppModule {}
 * ```
 */
@Module({
  imports: [DiscoveryModule],
  providers: [ScheduledRuns],
})
export class CancellationScheduleModule {}
