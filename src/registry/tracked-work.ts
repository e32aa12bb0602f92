import type { CancellationError } from '../core/cancellation-error.js';

/**
 * What the registry of work in flight knows of a unit of work (an HTTP request, and whatever else registers:
 * messages, jobs): enough to list it, report its cancellation and cancel it.
 * @internal
 */
export interface TrackedWork {
  /** Its id: what `cancel(id)` takes. */
  readonly id: string;
  /** The request method, or what kind of work it is for work that is not an HTTP request. */
  readonly method: string;
  /** The route pattern, or the name of the work. */
  readonly route: string;
  /** `performance.now()` when it began. */
  readonly startedAt: number;
  /** `performance.now()` when it was cancelled (0 while it is not). */
  readonly abortedAt: number;
  /** Milliseconds left of its time budget; `undefined` when it has none. */
  readonly remainingMs: number | undefined;
  /** Why it was cancelled; `undefined` while it is not. */
  readonly reason: CancellationError | undefined;
  /** Cancels it (does nothing once it was cancelled or has ended). */
  cancel(reason: CancellationError): void;
}
