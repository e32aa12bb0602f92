import { Inject, Injectable, Logger } from '@nestjs/common';
import type { OnApplicationBootstrap, OnApplicationShutdown } from '@nestjs/common';
import { DiscoveryService } from '@nestjs/core';
import { WorkerHost } from '@nestjs/bullmq';
import type { Worker } from 'bullmq';
import { CancellationRuntime } from '../../module/cancellation-runtime.js';
import type { ApplicationSignals } from '../../shutdown/application-signals.js';
import { bindWorker } from './cancellable-worker.js';
import { JOB_CANCELLATION_OPTIONS } from './job-cancellation.options.js';
import type { ResolvedJobCancellationOptions } from './job-cancellation.options.js';
import { JobRunner } from './job-runner.js';

/**
 * The workers' part of the application's shutdown. `worker.close()` waits for the jobs in flight with no
 * limit and aborts nothing, and `@nestjs/bullmq` calls it from `onApplicationShutdown`: one long job would hold
 * `app.close()` for as long as it runs. Here, instead: when the drain begins the workers stop taking jobs
 * (`pause`, and a job fetched after that goes back to its queue unprocessed); the jobs in flight get the grace
 * period (they are in the registry the drain waits on); when it is over their signals abort (the registry's
 * walk), and once their processors have returned, or
 * `settleTimeoutMs` later, the workers are closed, by force if a processor still runs. `@nestjs/bullmq`'s own
 * `close()` then finds them closed.
 * @internal
 */
@Injectable()
export class JobShutdown implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger('Cancellation');
  private closing: Promise<void> | undefined = undefined;
  private readonly onDrain = (): void => this.pauseWorkers();
  private readonly onShutdown = (): void => void this.closeWorkers();

  constructor(
    @Inject(JobRunner) private readonly runner: JobRunner,
    @Inject(CancellationRuntime) private readonly runtime: CancellationRuntime,
    @Inject(DiscoveryService) private readonly discovery: DiscoveryService,
    @Inject(JOB_CANCELLATION_OPTIONS) private readonly options: ResolvedJobCancellationOptions,
  ) {}

  private get signals(): ApplicationSignals {
    return this.runtime.signals;
  }

  /** Binds the workers of the application's `@Processor()` classes to its runner; watches the shutdown. */
  onApplicationBootstrap(): void {
    for (const wrapper of this.discovery.getProviders()) {
      const host: unknown = wrapper.instance;
      if (!(host instanceof WorkerHost)) continue;
      // `worker` throws until the registrar made it; `_worker` is where @nestjs/bullmq keeps it.
      const worker = (host as unknown as { _worker?: Worker })._worker;
      if (worker === undefined) continue;
      bindWorker(worker, this.runner);
      this.runner.adopt(worker);
    }
    this.signals.drainingSignal.addEventListener('abort', this.onDrain, { once: true });
    this.signals.shutdownSignal.addEventListener('abort', this.onShutdown, { once: true });
  }

  /** Waits for the workers' closing (bounded), so that `@nestjs/bullmq`'s `close()` finds them closed. */
  async onApplicationShutdown(): Promise<void> {
    this.signals.drainingSignal.removeEventListener('abort', this.onDrain);
    this.signals.shutdownSignal.removeEventListener('abort', this.onShutdown);
    this.runner.retire();
    await this.closeWorkers();
  }

  /**
   * `pause(true)`: the worker fetches no more jobs and waits for nothing. (Without `true` it would also
   * reconnect its blocking connection once its jobs end, after the worker was closed: a connection left open.)
   * A job that a fetch already under way brings in is handed back to the queue by the runner.
   */
  private pauseWorkers(): void {
    for (const worker of this.runner.workers) worker.pause(true).catch(() => undefined);
  }

  private closeWorkers(): Promise<void> {
    return (this.closing ??= this.settleThenClose());
  }

  private async settleThenClose(): Promise<void> {
    const { runner } = this;
    let timer: NodeJS.Timeout | undefined;
    const settled = await new Promise<boolean>((resolve) => {
      timer = setTimeout(resolve, this.options.settleTimeoutMs, false);
      runner.whenIdle(() => resolve(true));
    });
    clearTimeout(timer);
    runner.whenIdle(() => undefined);
    if (!settled) {
      this.logger.warn(
        `${runner.running.size} job processor(s) still running ${this.options.settleTimeoutMs} ms after their ` +
          'signals aborted: closing their workers without waiting (BullMQ retries those jobs once their locks expire)',
      );
    }
    await Promise.all(
      [...runner.workers].map((worker) =>
        worker
          .close(!settled)
          .catch((err: unknown) => this.logger.warn(`Could not close worker ${worker.name}: ${String(err)}`)),
      ),
    );
  }
}
