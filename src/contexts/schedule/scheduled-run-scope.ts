import { randomUUID } from 'node:crypto';
import { scopeStorage } from '../../core/async-context.js';
import { CancellationError, findCancellationError } from '../../core/cancellation-error.js';
import { Scope } from '../../core/scope.js';
import type { CancellationRuntime } from '../../module/cancellation-runtime.js';
import type { TrackedWork } from '../../registry/tracked-work.js';
import type { ScheduledRunKind } from './scheduled-method.js';

/**
 * One run of a scheduled method (a tick of `@Cron()`, `@Interval()`, a `@Timeout()`): the AsyncLocalStorage
 * store `CancellationService` reads inside it, whose signal aborts when the application shuts down (after the
 * grace period, as for requests), when the job's `@JobTimeout()` budget runs out, and on `cancel(id)`. Every run
 * has its own scope, overlapping runs of one job too. It is registered in the in-flight registry, so
 * `inFlight()` lists it (method `CRON`, `INTERVAL` or `TIMEOUT`, route the job's name) and shutdown's drain
 * waits for it; once cancelled it stays listed, with `cancelled`, until the method settles.
 *
 * A run that fails with its own cancellation (the reason, or an `AbortError` whose cause it is) ends quietly;
 * any other failure is the scheduler's to log.
 * @internal
 */
export class ScheduledRunScope extends Scope implements TrackedWork {
  /** A fresh UUID: what `cancel(id)` takes. */
  readonly id = randomUUID();
  /** `CRON`, `INTERVAL` or `TIMEOUT`. */
  readonly method: string;
  /** `Date.now()` when the run's budget runs out; `undefined` when it has none. */
  private readonly deadline: number | undefined;
  private timer: NodeJS.Timeout | undefined = undefined;
  /** The method has settled. */
  private ended = false;
  /** Resolves when the method has settled, whichever way. */
  readonly settled: Promise<void>;
  private resolveSettled!: () => void;

  constructor(
    kind: ScheduledRunKind,
    /** The job's name: the decorator's `name`, else `Class.method`. */
    readonly route: string,
    private readonly runtime: CancellationRuntime,
    /** The job's budget (`@JobTimeout()`), or `false`. */
    budgetMs: number | false,
  ) {
    super();
    this.method = kind.toUpperCase();
    this.deadline = budgetMs === false ? undefined : Date.now() + budgetMs;
    this.settled = new Promise((resolve) => (this.resolveSettled = resolve));
  }

  /** Milliseconds left of the run's budget (0 once spent); `undefined` when it has none. */
  get remainingMs(): number | undefined {
    return this.deadline === undefined ? undefined : Math.max(0, this.deadline - Date.now());
  }

  /**
   * Runs `invoke` (the method) inside this scope, registered while it runs. Resolves with what it returns;
   * rejects with what it throws, unless that is this run's cancellation.
   */
  async run(invoke: () => unknown): Promise<unknown> {
    const { registry } = this.runtime;
    registry.track(this);
    if (this.deadline !== undefined) {
      this.timer = setTimeout(onBudgetSpent, this.deadline - Date.now(), this);
      this.timer.unref();
    }
    try {
      return await scopeStorage.run(this, invoke);
    } catch (err) {
      if (this.reason !== undefined && findCancellationError(err) !== undefined) return undefined;
      throw err;
    } finally {
      this.end();
    }
  }

  /**
   * Cancels the run: aborts its signal with `reason`. The run leaves the work in flight (the drain stops waiting
   * for it) and is listed as cancelled until its method settles. Does nothing once it was cancelled or ended.
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

  private end(): void {
    this.ended = true;
    clearTimeout(this.timer);
    const { registry, events } = this.runtime;
    const reason = this.reason;
    if (reason === undefined) {
      registry.untrack(this);
    } else {
      registry.unlinger(this);
      events.settled(this, reason, performance.now() - this.abortedAt);
    }
    this.resolveSettled();
  }
}

function onBudgetSpent(scope: ScheduledRunScope): void {
  scope.cancel(new CancellationError('timeout', "The job's time budget (@JobTimeout) ran out"));
}
