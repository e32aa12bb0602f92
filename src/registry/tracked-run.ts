import { CancellationError } from '../core/cancellation-error.js';
import { Scope } from '../core/scope.js';
import type { CancellationRuntime } from '../module/cancellation-runtime.js';
import type { TrackedWork } from './tracked-work.js';

/**
 * Work that runs as one call and settles as a Promise (a scheduled run, a queue job), tracked by the
 * application: in `inFlight()` from `begin()`, with an optional time budget. Once cancelled it leaves the work
 * in flight (the drain stops waiting for it) and is listed as lingering until it settles (`finish()`), which
 * is then reported with how long the work went on after the abort.
 * @internal
 */
export abstract class TrackedRun extends Scope implements TrackedWork {
  abstract readonly id: string;
  abstract readonly method: string;
  abstract readonly route: string;
  /** `performance.now()` when the budget runs out; 0 when there is none. */
  private deadline = 0;
  private timer: NodeJS.Timeout | undefined = undefined;
  /** The work has settled. */
  private ended = false;

  constructor(protected readonly runtime: CancellationRuntime) {
    super();
  }

  /** Milliseconds left of the budget (0 once spent); `undefined` when there is none. */
  get remainingMs(): number | undefined {
    return this.deadline === 0 ? undefined : Math.max(0, this.deadline - performance.now());
  }

  /** What the timeout's reason says once the budget is spent. */
  protected abstract budgetSpentMessage(): string;

  /** Registers the work and arms its budget (`budgetMs`), if it has one. */
  protected begin(budgetMs: number | undefined): void {
    this.runtime.registry.track(this);
    if (budgetMs === undefined) return;
    this.deadline = performance.now() + budgetMs;
    this.timer = setTimeout(onBudgetSpent, budgetMs, this);
    this.timer.unref();
  }

  /**
   * Cancels the work: aborts its signal with `reason`; it leaves the work in flight and lingers until it
   * settles. Does nothing once it was cancelled or has settled.
   */
  cancel(reason: CancellationError): void {
    if (this.reason !== undefined || this.ended) return;
    this.abortWith(reason);
    clearTimeout(this.timer);
    const { registry, events } = this.runtime;
    events.cancelled(this, reason);
    registry.untrack(this);
    registry.linger(this);
  }

  /** The work settled, whichever way: it leaves the registry; a cancelled one reports its settling. */
  protected finish(): void {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.timer);
    const { registry, events } = this.runtime;
    const reason = this.reason;
    if (reason === undefined) {
      registry.untrack(this);
      return;
    }
    registry.unlinger(this);
    events.settled(this, reason, performance.now() - this.abortedAt);
  }

  /** @internal */
  budgetSpent(): void {
    this.cancel(new CancellationError('timeout', this.budgetSpentMessage()));
  }
}

function onBudgetSpent(run: TrackedRun): void {
  run.budgetSpent();
}
