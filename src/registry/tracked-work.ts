import type { CancellationError } from '../core/cancellation-error.js';

/**
 * What the registry of work in flight knows of a unit of work (an HTTP request, and whatever else registers:
 * messages, jobs): enough to list it, report its cancellation and cancel it.
 * @internal
 */
export interface TrackedWork {
  /** Its id, made by the server and unique: what `cancel(id)` takes. */
  readonly id: string;
  /**
   * The id the caller gave it (the `requestIdHeader` of a request, a gRPC call's metadata entry), when it
   * gave a well-formed one: for finding it in the caller's logs, never for acting on it.
   */
  readonly correlationId?: string;
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

/**
 * How log lines name `work`: `GET /users/:id [<id>]`, with ` (correlation id <value>)` when it has one.
 * @internal
 */
export function describeWork(work: TrackedWork): string {
  const correlation = work.correlationId === undefined ? '' : ` (correlation id ${work.correlationId})`;
  return `${work.method} ${work.route} [${work.id}]${correlation}`;
}
