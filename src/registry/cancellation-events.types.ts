import type { CancellationError, CancellationKind } from '../core/cancellation-error.js';

/**
 * A request was cancelled: its signal aborted. Given to `CancellationService.onCancelled()` listeners.
 */
export interface CancelledEvent {
  /**
   * The request's id: made by the server, unique, what `cancel(id)` takes. (In 0.1.0 it was the
   * `requestIdHeader` value when the request carried one: that value is now `correlationId`.)
   */
  readonly id: string;
  /** The request's `requestIdHeader` value, when it carried a well-formed one: the caller's id for it. */
  readonly correlationId?: string;
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
  /**
   * The request's id: made by the server, unique, what `cancel(id)` takes. (In 0.1.0 it was the
   * `requestIdHeader` value when the request carried one: that value is now `correlationId`.)
   */
  readonly id: string;
  /**
   * The request's `requestIdHeader` value, when it carried a well-formed one: to find it in the logs of the
   * gateway or client that sent it. Not unique (the client chooses it), so not what `cancel()` takes.
   */
  readonly correlationId?: string;
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
