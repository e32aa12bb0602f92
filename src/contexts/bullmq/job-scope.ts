import { CancellationError } from '../../core/cancellation-error.js';
import type { CancellationRuntime } from '../../module/cancellation-runtime.js';
import { TrackedRun } from '../../registry/tracked-run.js';

/** What a job scope needs to know of its BullMQ job (structural: nothing is imported from bullmq here). */
export interface ScopedJob {
  readonly id?: string;
  readonly name: string;
  readonly queueName: string;
}

/**
 * The state of one BullMQ job while its processor runs: the AsyncLocalStorage store `CancellationService`
 * reads inside the processor, tracked in the registry as `JOB <queue>/<name>` with the id `<queue>:<job id>`.
 * Its signal aborts on the first of: the worker's `cancelJob(id, reason)` (BullMQ aborts the job's own signal,
 * which this scope follows: kind `'manual'`), `cancel(id)` of the registry (kind `'manual'`), the job's time
 * budget (kind `'timeout'`) and the application's shutdown (kind `'shutdown'`, from the registry's walk once
 * the grace period is over).
 * @internal
 */
export class JobScope extends TrackedRun {
  readonly id: string;
  readonly method = 'JOB';
  readonly route: string;

  private readonly onWorkerCancel = (): void => {
    const reason = this.workerSignal?.reason as unknown;
    this.cancel(
      new CancellationError(
        'manual',
        typeof reason === 'string' && reason !== '' ? reason : 'The job was cancelled by its worker',
      ),
    );
  };

  constructor(
    job: ScopedJob,
    runtime: CancellationRuntime,
    /** The signal BullMQ gives the processor (aborted by `worker.cancelJob()`). */
    private readonly workerSignal: AbortSignal | undefined,
  ) {
    super(runtime);
    this.id = `${job.queueName}:${job.id ?? ''}`;
    this.route = `${job.queueName}/${job.name}`;
  }

  /** Registers the job and starts watching its cancellations; `budgetMs` is its time budget, if any. */
  start(budgetMs: number | undefined): void {
    const { runtime, workerSignal } = this;
    this.begin(budgetMs);
    if (runtime.signals.isShuttingDown) {
      this.cancel(runtime.signals.shutdownReason());
      return;
    }
    if (workerSignal?.aborted) {
      this.onWorkerCancel();
      return;
    }
    workerSignal?.addEventListener('abort', this.onWorkerCancel, { once: true });
  }

  /** The processor returned or threw: stops watching, leaves the registry, reports the settlement. */
  release(): void {
    this.workerSignal?.removeEventListener('abort', this.onWorkerCancel);
    this.finish();
  }

  protected budgetSpentMessage(): string {
    return "The job's time budget was spent";
  }
}
