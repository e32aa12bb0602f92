import type { Job, Worker } from 'bullmq';
import { fail } from '../../module/options.validation.js';

/** The options of `CancellationBullModule.forRoot()`. */
export interface JobCancellationOptions {
  /**
   * Each job's time budget in milliseconds: a number for every job, or a function of the job (its queue, name,
   * data) that returns the job's budget, or `undefined` / `false` for none. When it is spent the job's signal
   * aborts with a `CancellationError` of kind `'timeout'`, and the job fails like any failed job (retried
   * when it has `attempts` left).
   * @default undefined (no budget)
   */
  jobTimeoutMs?: number | ((job: Job) => number | false | undefined);
  /**
   * At shutdown, once the jobs' signals aborted: how long the workers wait for their processors to return (a
   * job cut by the shutdown goes back to its queue then) before they are closed without waiting. A processor
   * that ignores its signal is left behind then: BullMQ gives its job to another worker once its lock expires.
   * @default 5_000
   */
  settleTimeoutMs?: number;
  /**
   * The Worker class to extend (`WorkerPro` of BullMQ Pro, or a class of your own); it is installed as
   * `BullModule.workerClass`.
   * @default Worker (from bullmq)
   */
  workerClass?: typeof Worker;
}

/** The options with their defaults. @internal */
export interface ResolvedJobCancellationOptions {
  readonly jobTimeoutMs: (job: Job) => number | undefined;
  readonly settleTimeoutMs: number;
}

/** @internal */
export const JOB_CANCELLATION_OPTIONS = Symbol('nestjs-cancellation:job-options');

function isDuration(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value > 0;
}

/** Validates the options and resolves their defaults; a wrong value fails at start-up, named. @internal */
export function resolveJobOptions(options: JobCancellationOptions): ResolvedJobCancellationOptions {
  const { jobTimeoutMs, settleTimeoutMs = 5_000 } = options;
  if (jobTimeoutMs !== undefined && typeof jobTimeoutMs !== 'function' && !isDuration(jobTimeoutMs)) {
    fail('jobTimeoutMs', jobTimeoutMs, 'a positive number of milliseconds or a function of the job');
  }
  if (typeof settleTimeoutMs !== 'number' || !Number.isFinite(settleTimeoutMs) || settleTimeoutMs < 0) {
    fail('settleTimeoutMs', settleTimeoutMs, 'a number of milliseconds, 0 or more');
  }
  const budgetOf = (job: Job): number | undefined => {
    const budget = typeof jobTimeoutMs === 'function' ? jobTimeoutMs(job) : jobTimeoutMs;
    if (budget === undefined || budget === false) return undefined;
    if (!isDuration(budget)) fail('jobTimeoutMs', budget, 'a positive number of milliseconds');
    return budget;
  };
  return { jobTimeoutMs: budgetOf, settleTimeoutMs };
}
