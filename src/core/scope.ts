import type { ScopeState } from './async-context.js';
import type { CancellationError } from './cancellation-error.js';

/**
 * What every cancellable unit of work shares, whatever runs it (an HTTP request, a message, a job): the
 * reason it was cancelled and an AbortSignal created only when somebody reads it (most handlers never do), so
 * that a scope costs one object until then.
 * @internal
 */
export abstract class Scope implements ScopeState {
  /** `performance.now()` when the scope began. */
  readonly startedAt = performance.now();
  /** `performance.now()` when it was cancelled. */
  abortedAt = 0;

  private cancelReason: CancellationError | undefined = undefined;
  private controller: AbortController | undefined = undefined;

  /** Why the work was cancelled; `undefined` while it is not. */
  get reason(): CancellationError | undefined {
    return this.cancelReason;
  }

  /** The scope's AbortSignal; aborted with a `CancellationError` when the work is cancelled. */
  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController();
      const reason = this.reason;
      if (reason !== undefined) this.controller.abort(reason);
      else this.signalCreated();
    }
    return this.controller.signal;
  }

  /** Whether the work was cancelled. Reading it creates nothing. */
  get isCancelled(): boolean {
    return this.reason !== undefined;
  }

  /** Milliseconds since the scope began. */
  get elapsedMs(): number {
    return performance.now() - this.startedAt;
  }

  /** Milliseconds left of the time budget; `undefined` when there is none. */
  abstract get remainingMs(): number | undefined;

  /** Records the reason and aborts the signal, if anybody asked for it. Callers check `reason` first. */
  protected abortWith(reason: CancellationError): void {
    this.cancelReason = reason;
    this.abortedAt = performance.now();
    this.controller?.abort(reason);
  }

  /** The signal was just created, not aborted: a scope that learns of its cancellation lazily starts here. */
  protected signalCreated(): void {}
}
