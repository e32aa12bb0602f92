import { Inject, Injectable } from '@nestjs/common';
import { UnrecoverableError, WaitingError } from 'bullmq';
import type { Job, Worker } from 'bullmq';
import { scopeStorage } from '../../core/async-context.js';
import type { CancellationError } from '../../core/cancellation-error.js';
import { CancellationRuntime } from '../../module/cancellation-runtime.js';
import { registerRunner } from './cancellable-worker.js';
import type { JobRunnerLike, Processor } from './cancellable-worker.js';
import { JOB_CANCELLATION_OPTIONS } from './job-cancellation.options.js';
import type { ResolvedJobCancellationOptions } from './job-cancellation.options.js';
import { JobScope } from './job-scope.js';

/**
 * Runs an application's jobs, each in its own `JobScope`, and turns a cancelled job's end into what BullMQ
 * should do with it: a job cut by the shutdown goes back to its queue (another worker takes it, no attempt
 * spent), a job cancelled by an operator fails for good (`UnrecoverableError`: no retry), a job whose budget
 * was spent fails with the timeout (retried when it has attempts left).
 * @internal
 */
@Injectable()
export class JobRunner implements JobRunnerLike {
  /** The jobs whose processor is running. */
  readonly running = new Set<JobScope>();
  /** The workers whose jobs run here. */
  readonly workers = new Set<Worker>();
  private onIdle: (() => void) | undefined = undefined;

  constructor(
    @Inject(CancellationRuntime) private readonly runtime: CancellationRuntime,
    @Inject(JOB_CANCELLATION_OPTIONS) private readonly options: ResolvedJobCancellationOptions,
  ) {
    registerRunner(this, true);
  }

  adopt(worker: Worker): void {
    this.workers.add(worker);
  }

  /** Stops binding workers that run a job before anyone bound them to this application. */
  retire(): void {
    registerRunner(this, false);
  }

  /** Calls `listener` once no processor runs any more (at once if none does). */
  whenIdle(listener: () => void): void {
    this.onIdle = listener;
    if (this.running.size === 0) listener();
  }

  async run(
    job: Job,
    token: string | undefined,
    signal: AbortSignal | undefined,
    processor: Processor,
  ): Promise<unknown> {
    // Fetched after the drain began (a fetch under way when the workers paused): for another worker.
    if (this.runtime.signals.isDraining && token !== undefined)
      throw await this.handBack(job, token, undefined);
    const scope = new JobScope(job, this.runtime, signal);
    this.running.add(scope);
    try {
      scope.start(this.options.jobTimeoutMs(job));
      const store = this.runtime.options.asyncContext ? scope : undefined;
      const work =
        store === undefined
          ? processor(job, token, scope.signal)
          : scopeStorage.run(store, processor, job, token, scope.signal);
      return await work;
    } catch (err) {
      const reason = scope.reason;
      throw reason === undefined ? err : await this.endOfCancelled(job, token, reason, err);
    } finally {
      scope.release();
      this.running.delete(scope);
      if (this.running.size === 0) this.onIdle?.();
    }
  }

  /**
   * Puts the job back in its queue without spending an attempt, and returns the error that tells BullMQ so;
   * when that fails (Redis gone), `err`: the job's lock expires and BullMQ's stalled-job check hands it on.
   */
  private async handBack(job: Job, token: string, err: unknown): Promise<unknown> {
    if (typeof job.moveToWait !== 'function') return err ?? new WaitingError();
    try {
      await job.moveToWait(token);
      return new WaitingError();
    } catch {
      return err ?? new WaitingError();
    }
  }

  /** What a cancelled job's processor failing becomes. */
  private async endOfCancelled(
    job: Job,
    token: string | undefined,
    reason: CancellationError,
    err: unknown,
  ): Promise<unknown> {
    switch (reason.kind) {
      case 'shutdown':
        return token === undefined ? err : this.handBack(job, token, err);
      case 'manual':
        return Object.assign(new UnrecoverableError(reason.message), { cause: reason });
      default:
        return reason;
    }
  }
}
