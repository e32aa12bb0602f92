import { Module } from '@nestjs/common';
import type { DynamicModule } from '@nestjs/common';
import { DiscoveryModule } from '@nestjs/core';
import { BullModule } from '@nestjs/bullmq';
import { cancellableWorkerClass } from './cancellable-worker.js';
import { JOB_CANCELLATION_OPTIONS, resolveJobOptions } from './job-cancellation.options.js';
import type { JobCancellationOptions } from './job-cancellation.options.js';
import { JobRunner } from './job-runner.js';
import { JobShutdown } from './job-shutdown.js';

/**
 * Gives every BullMQ job of the application a scope of its own, as `CancellationModule` gives every request
 * one: inside a processor (`WorkerHost.process()`, request-scoped processors included), `CancellationService`'s
 * `signal` is the job's signal. It aborts when the worker's `cancelJob(id)` or the registry's `cancel(id)`
 * cancels the job (which then fails without retry), when its `jobTimeoutMs` is spent, and at shutdown (the job
 * goes back to its queue for another worker). Running jobs are listed by `inFlight()`. At shutdown the workers
 * stop taking jobs when the drain begins and are closed once their jobs have stopped, so `app.close()` never
 * waits on a job. Import it beside `CancellationModule.forRoot()` and `BullModule.forRoot()`, before the
 * `BullModule.registerQueue()` calls.
 *
 * @example
 * ```ts
 * @Module({
 *   imports: [
 *     CancellationModule.forRoot({ shutdownGracePeriodMs: 10_000 }),
 *     CancellationBullModule.forRoot({ jobTimeoutMs: 60_000 }),
 *     BullModule.forRoot({ connection: new Redis(process.env.REDIS_URL, { maxRetriesPerRequest: null }) }),
 *     BullModule.registerQueue({ name: 'reports' }),
 *   ],
 *   providers: [ReportsProcessor],
 * })
 * export class AppModule {}
 * ```
 */
@Module({})
export class CancellationBullModule {
  /**
   * Installs the cancellable Worker class as `BullModule.workerClass` (process-wide, as that setting is) and
   * registers the job runner with these options.
   * @param options see {@link JobCancellationOptions}
   */
  static forRoot(options: JobCancellationOptions = {}): DynamicModule {
    const resolved = resolveJobOptions(options);
    BullModule.workerClass = cancellableWorkerClass(options.workerClass);
    return {
      module: CancellationBullModule,
      imports: [DiscoveryModule],
      providers: [{ provide: JOB_CANCELLATION_OPTIONS, useValue: resolved }, JobRunner, JobShutdown],
    };
  }
}
