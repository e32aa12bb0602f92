import { randomUUID } from 'node:crypto';
import { scopeStorage } from '../../core/async-context.js';
import { findCancellationError } from '../../core/cancellation-error.js';
import type { CancellationRuntime } from '../../module/cancellation-runtime.js';
import { TrackedRun } from '../../registry/tracked-run.js';
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
export class ScheduledRunScope extends TrackedRun {
  /** A fresh UUID: what `cancel(id)` takes. */
  readonly id = randomUUID();
  /** `CRON`, `INTERVAL` or `TIMEOUT`. */
  readonly method: string;
  /** Resolves when the method has settled, whichever way. */
  readonly settled: Promise<void>;
  private resolveSettled!: () => void;

  constructor(
    kind: ScheduledRunKind,
    /** The job's name: the decorator's `name`, else `Class.method`. */
    readonly route: string,
    runtime: CancellationRuntime,
    /** The job's budget (`@JobTimeout()`), or `false`. */
    private readonly budgetMs: number | false,
  ) {
    super(runtime);
    this.method = kind.toUpperCase();
    this.settled = new Promise((resolve) => (this.resolveSettled = resolve));
  }

  /**
   * Runs `invoke` (the method) inside this scope, registered while it runs. Resolves with what it returns;
   * rejects with what it throws, unless that is this run's cancellation.
   */
  async run(invoke: () => unknown): Promise<unknown> {
    this.begin(this.budgetMs === false ? undefined : this.budgetMs);
    try {
      return await scopeStorage.run(this, invoke);
    } catch (err) {
      if (this.reason !== undefined && findCancellationError(err) !== undefined) return undefined;
      throw err;
    } finally {
      this.finish();
      this.resolveSettled();
    }
  }

  protected budgetSpentMessage(): string {
    return "The job's time budget (@JobTimeout) ran out";
  }
}
