import { CancellationError } from '../../core/cancellation-error.js';
import { Scope } from '../../core/scope.js';
import type { CancellationRuntime } from '../../module/cancellation-runtime.js';
import type { TrackedWork } from '../../registry/tracked-work.js';

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
export class JobScope extends Scope implements TrackedWork {
  readonly id: string;
  readonly method = 'JOB';
  readonly route: string;

  private timer: NodeJS.Timeout | undefined = undefined;
  private deadline = 0;
  private settled = false;
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
    private readonly runtime: CancellationRuntime,
    /** The signal BullMQ gives the processor (aborted by `worker.cancelJob()`). */
    private readonly workerSignal: AbortSignal | undefined,
  ) {
    super();
    this.id = `${job.queueName}:${job.id ?? ''}`;
    this.route = `${job.queueName}/${job.name}`;
  }

  /** Milliseconds left of the job's budget; `undefined` when it has none. */
  get remainingMs(): number | undefined {
    return this.deadline === 0 ? undefined : Math.max(0, this.deadline - performance.now());
  }

  /** Registers the job and starts watching its cancellations; `budgetMs` is its time budget, if any. */
  start(budgetMs: number | undefined): void {
    const { runtime, workerSignal } = this;
    runtime.registry.track(this);
    if (runtime.signals.isShuttingDown) {
      this.cancel(runtime.signals.shutdownReason());
      return;
    }
    if (workerSignal?.aborted) {
      this.onWorkerCancel();
      return;
    }
    workerSignal?.addEventListener('abort', this.onWorkerCancel, { once: true });
    if (budgetMs !== undefined) {
      this.deadline = this.startedAt + budgetMs;
      this.timer = setTimeout(onBudgetSpent, budgetMs, this);
      this.timer.unref();
    }
  }

  /** Aborts the signal with `reason`; the processor, still running, is listed as lingering until it returns. */
  cancel(reason: CancellationError): void {
    if (this.reason !== undefined || this.settled) return;
    this.abortWith(reason);
    const { registry, events } = this.runtime;
    registry.untrack(this);
    registry.linger(this);
    events.cancelled(this, reason);
  }

  /** The processor returned or threw: stops watching, leaves the registry, reports the settlement. */
  release(): void {
    if (this.settled) return;
    this.settled = true;
    clearTimeout(this.timer);
    this.workerSignal?.removeEventListener('abort', this.onWorkerCancel);
    const { registry, events } = this.runtime;
    if (this.reason === undefined) {
      registry.untrack(this);
      return;
    }
    registry.unlinger(this);
    events.settled(this, this.reason, performance.now() - this.abortedAt);
  }
}

function onBudgetSpent(scope: JobScope): void {
  scope.cancel(new CancellationError('timeout', "The job's time budget was spent"));
}
