import { Inject, Injectable } from '@nestjs/common';
import { CancellationEvents } from './cancellation-events.js';
import type {
  CancelledEvent,
  CancellationListener,
  InFlightRequest,
  SettledEvent,
} from './cancellation-events.types.js';
import { InFlightRegistry } from './in-flight.registry.js';

/** The longest message `cancel()` accepts: it ends up in a response body and a log line. */
const MAX_CANCEL_MESSAGE_LENGTH = 500;

/**
 * What operators use: the list of work in flight, cancel by id, and events when work is cancelled and when
 * its handler has settled. Injectable anywhere once `CancellationModule` is imported.
 *
 * @example
 * ```ts
 * const stuck = this.registry.inFlight().filter((request) => request.elapsedMs > 60_000);
 * for (const request of stuck) this.registry.cancel(request.id, 'Cancelled by an operator');
 * ```
 */
@Injectable()
export class CancellationRegistry {
  constructor(
    @Inject(InFlightRegistry) private readonly registry: InFlightRegistry,
    @Inject(CancellationEvents) private readonly events: CancellationEvents,
  ) {}

  /**
   * The HTTP requests in flight, oldest first: id, method, route, start, elapsed time and the remaining time
   * budget when there is one. gRPC calls are listed too (method `GRPC`, route `package.Service/Method`), and so
   * are the runs of scheduled jobs with `CancellationScheduleModule` (method `CRON`, `INTERVAL` or `TIMEOUT`,
   * route the job's name). A request that was cancelled but whose handler is still running (it ignores its
   * signal) stays listed, with `cancelled` saying why, until the handler settles: what `pg_stat_activity` is to
   * a database. Only requests that reached the interceptor are known (not those still in a guard).
   */
  inFlight(): InFlightRequest[] {
    return this.registry.list();
  }

  /**
   * Cancels the request in flight with this id: its signal aborts with a `CancellationError` of kind
   * `'manual'` and its client is answered 503 with `message`. Returns how many requests were cancelled: 1,
   * or 0 when none has this id (it ended, or never existed). Ids are made by the server and unique; a
   * request's `correlationId` (its `requestIdHeader`) is not one.
   *
   * @param id an id from `inFlight()` (or a log line)
   * @param message why, for the client's 503 body and the log (at most 500 characters)
   */
  cancel(id: string, message = 'The request was cancelled by an operator'): number {
    if (typeof id !== 'string') throw new TypeError('nestjs-cancellation: cancel(id) takes a string id');
    if (typeof message !== 'string' || message.length > MAX_CANCEL_MESSAGE_LENGTH) {
      throw new TypeError(
        `nestjs-cancellation: cancel(id, message): the message must be a string of at most ${MAX_CANCEL_MESSAGE_LENGTH} characters`,
      );
    }
    return this.registry.cancelById(id, message);
  }

  /**
   * Calls `listener` each time an HTTP request is cancelled (its signal aborts), with its id, kind, method,
   * route and elapsed time. For metrics and audit logs; a listener that throws is logged and does not disturb
   * the request. Returns the function that removes the listener.
   */
  onCancelled(listener: CancellationListener<CancelledEvent>): () => void {
    return this.events.onCancelled(listener);
  }

  /**
   * Calls `listener` when the handler of a cancelled request has settled (exactly once per cancellation),
   * with `settledAfterMs`: how long the work went on after the abort. A large value names a handler that
   * does not honour its signal. Returns the function that removes the listener.
   */
  onSettled(listener: CancellationListener<SettledEvent>): () => void {
    return this.events.onSettled(listener);
  }
}
