import type { CancellationError, CancellationKind } from '../core/cancellation-error.js';

/**
 * A request was cancelled: its signal aborted. Given to `CancellationService.onCancelled()` listeners.
 */
export interface CancelledEvent {
  /** The request's id (from `requestIdHeader`, else generated). */
  readonly id: string;
  /** Why it was cancelled. */
  readonly kind: CancellationKind;
  /** The reason its signal aborted with. */
  readonly reason: CancellationError;
  /** The request method. */
  readonly method: string;
  /** The route pattern that matched (e.g. `/users/:id`), the URL when there is none. */
  readonly route: string;
  /** Milliseconds from the request reaching the interceptor to its cancellation. */
  readonly elapsedMs: number;
}

/**
 * The handler of a cancelled request has settled: its Promise resolved or rejected, or its Observable was
 * torn down. Given to `CancellationService.onSettled()` listeners, exactly once after each `CancelledEvent`.
 */
export interface SettledEvent extends CancelledEvent {
  /**
   * Milliseconds from the abort to the handler settling: how long the work went on for nobody. 0 for an
   * Observable (unsubscribing stops it) and for a handler that had already returned (a streamed body).
   */
  readonly settledAfterMs: number;
}

/** A request in flight, as `CancellationService.inFlight()` lists it. */
export interface InFlightRequest {
  /** The request's id (from `requestIdHeader`, else generated): what `cancel(id)` takes. */
  readonly id: string;
  /** The request method. */
  readonly method: string;
  /** The route pattern that matched (e.g. `/users/:id`), the URL when there is none. */
  readonly route: string;
  /** When the request reached the interceptor, in milliseconds since the epoch. */
  readonly startedAt: number;
  /** Milliseconds since then. */
  readonly elapsedMs: number;
  /** Milliseconds left of its time budget, when it has one. */
  readonly remainingMs?: number;
  /**
   * Set when the request was already cancelled but its handler is still running (it ignores its signal):
   * why it was cancelled.
   */
  readonly cancelled?: CancellationKind;
}

/** A listener of `onCancelled()` / `onSettled()`. */
export type CancellationListener<E> = (event: E) => void;
