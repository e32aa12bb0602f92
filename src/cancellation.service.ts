import { Inject, Injectable } from '@nestjs/common';
import { requestStorage } from './cancellation.constants.js';
import { setAxiosHeader } from './cancellation.deadline.js';
import type { AxiosLikeInstance } from './cancellation.deadline.js';
import type { CancellationError } from './cancellation.error.js';
import type {
  CancelledEvent,
  CancellationListener,
  InFlightRequest,
  SettledEvent,
} from './cancellation.events.js';
import { CancellationLifecycle } from './cancellation.lifecycle.js';
import { RequestScope } from './cancellation.scope.js';

/** The longest message `cancel()` accepts: it ends up in a response body and a log line. */
const MAX_CANCEL_MESSAGE_LENGTH = 500;

/**
 * The cancellation state of whatever is running now, for ordinary singleton services: no request-scoped
 * provider is needed. Inside an HTTP request it speaks of that request (found through AsyncLocalStorage, so
 * it stays right after `await`, in timers, in `Promise.all` branches and in callbacks of streams and
 * emitters the request created); outside any request (a cron job, a queue consumer, `onModuleInit` work) it
 * speaks of the application, whose signal aborts when it shuts down.
 *
 * @example
 * ```ts
 * @Injectable()
 * export class ReportService {
 *   constructor(private readonly cancellation: CancellationService) {}
 *
 *   async build(): Promise<Report> {
 *     const rows = await fetch(ROWS_URL, { signal: this.cancellation.signal });
 *     return summarise(await rows.json());
 *   }
 * }
 * ```
 */
@Injectable()
export class CancellationService {
  constructor(@Inject(CancellationLifecycle) private readonly lifecycle: CancellationLifecycle) {}

  /**
   * The current request's AbortSignal; outside a request, the application's shutdown signal. It aborts with
   * a `CancellationError` whose `kind` says why. Pass it to `fetch`, `timers/promises`, `fs/promises`,
   * `child_process`, `stream.pipeline`, `events.once`, axios, or check it in your own loops.
   */
  get signal(): AbortSignal {
    return requestStorage.getStore()?.signal ?? this.lifecycle.shutdownSignal;
  }

  /**
   * Aborts when work in flight must stop: when the application starts shutting down (`app.close()`, or a
   * signal under `enableShutdownHooks()`), or, with `shutdownGracePeriodMs`, once that grace period is over.
   * Whether or not a request is running: what background work in progress should watch.
   */
  get shutdownSignal(): AbortSignal {
    return this.lifecycle.shutdownSignal;
  }

  /**
   * Aborts as soon as shutdown begins, before the grace period (`shutdownGracePeriodMs`) lets requests in
   * flight finish: the moment to stop taking new work (a queue consumer stops pulling jobs, a scheduler
   * stops starting them) while the work already taken goes on until `shutdownSignal`. With no grace period
   * both abort together.
   */
  get drainingSignal(): AbortSignal {
    return this.lifecycle.drainingSignal;
  }

  /**
   * Milliseconds left of the current request's time budget (`@RequestTimeout()`, `timeoutMs`, or a shorter
   * one the caller propagated in `deadlineHeader`); `undefined` when it has none or outside a request.
   */
  get remainingMs(): number | undefined {
    return requestStorage.getStore()?.remainingMs;
  }

  /**
   * `fetch()` that carries the current request's cancellation downstream: it aborts with the request's
   * signal (as well as with `init.signal`, if given) and, when `deadlineHeader` is set and the request has a
   * budget, sends what is left of it in that header, so that the service called stops in time too.
   * Outside a request it aborts on shutdown.
   *
   * @example
   * ```ts
   * const res = await this.cancellation.fetch(`${INVENTORY_URL}/stock/${sku}`);
   * ```
   */
  fetch(input: string | URL | Request, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    const header = this.lifecycle.options.deadlineHeader;
    const remaining = this.remainingMs;
    if (header !== false && remaining !== undefined) headers.set(header, String(Math.ceil(remaining)));
    const signal = init.signal ? AbortSignal.any([init.signal, this.signal]) : this.signal;
    return fetch(input, { ...init, headers, signal });
  }

  /**
   * Makes every request of an axios instance (e.g. `HttpService.axiosRef` of `@nestjs/axios`) carry the
   * cancellation of the request it is made for: its signal, unless the call passes its own, and, when
   * `deadlineHeader` is set, the remaining budget. Register it once, e.g. in `onModuleInit()`.
   *
   * @returns the id of the axios request interceptor (for `interceptors.request.eject(id)`)
   *
   * @example
   * ```ts
   * onModuleInit() {
   *   this.cancellation.instrumentAxios(this.http.axiosRef);
   * }
   * ```
   */
  instrumentAxios(axios: AxiosLikeInstance): number {
    return axios.interceptors.request.use((config) => {
      config.signal ??= this.signal;
      const header = this.lifecycle.options.deadlineHeader;
      const remaining = this.remainingMs;
      if (header !== false && remaining !== undefined)
        setAxiosHeader(config, header, String(Math.ceil(remaining)));
      return config;
    });
  }

  /**
   * Whether the current request (outside a request: the application) has been cancelled. Cheaper than
   * `signal.aborted`: it creates no AbortController for a request that has none yet.
   */
  get isCancelled(): boolean {
    return this.currentReason() !== undefined;
  }

  /**
   * Throws the `CancellationError` if the current request (outside a request: the application) has been
   * cancelled; does nothing otherwise. Let it propagate: the interceptor answers it as the cancellation it
   * is (503, 504, or nothing for a client that left), never as a 500.
   */
  throwIfCancelled(): void {
    const reason = this.currentReason();
    if (reason !== undefined) throw reason;
  }

  /**
   * The current HTTP request's id (from `requestIdHeader` when the request carried a valid one, else
   * generated), as `inFlight()` lists it and log lines show it; `undefined` outside an HTTP request.
   */
  get requestId(): string | undefined {
    const scope = requestStorage.getStore();
    return scope instanceof RequestScope ? scope.id : undefined;
  }

  /**
   * The HTTP requests in flight, oldest first: id, method, route, start, elapsed time and the remaining time
   * budget when there is one. A request that was cancelled but whose handler is still running (it ignores its
   * signal) stays listed, with `cancelled` saying why, until the handler settles: what `pg_stat_activity` is to
   * a database. Only requests that reached the interceptor are known (not those still in a guard).
   */
  inFlight(): InFlightRequest[] {
    return this.lifecycle.list();
  }

  /**
   * Cancels the request in flight with this id: its signal aborts with a `CancellationError` of kind
   * `'manual'` and its client is answered 503 with `message`. Returns how many requests were cancelled: 0
   * when none has this id (it ended, or never existed), more than 1 only when clients sent the same id in
   * `requestIdHeader`.
   *
   * @param id an id from `inFlight()` (or a log line)
   * @param message why, for the client's 503 body and the log (at most 500 characters)
   *
   * @example
   * ```ts
   * const stuck = this.cancellation.inFlight().filter((request) => request.elapsedMs > 60_000);
   * for (const request of stuck) this.cancellation.cancel(request.id, 'Cancelled by an operator');
   * ```
   */
  cancel(id: string, message = 'The request was cancelled by an operator'): number {
    if (typeof id !== 'string') throw new TypeError('nestjs-cancellation: cancel(id) takes a string id');
    if (typeof message !== 'string' || message.length > MAX_CANCEL_MESSAGE_LENGTH) {
      throw new TypeError(
        `nestjs-cancellation: cancel(id, message): the message must be a string of at most ${MAX_CANCEL_MESSAGE_LENGTH} characters`,
      );
    }
    return this.lifecycle.cancelById(id, message);
  }

  /**
   * Calls `listener` each time an HTTP request is cancelled (its signal aborts), with its id, kind, method,
   * route and elapsed time. For metrics and audit logs; a listener that throws is logged and does not disturb
   * the request. Returns the function that removes the listener.
   *
   * @example
   * ```ts
   * onModuleInit() {
   *   this.cancellation.onCancelled((event) => this.audit.record(event.id, event.kind));
   * }
   * ```
   */
  onCancelled(listener: CancellationListener<CancelledEvent>): () => void {
    return this.lifecycle.onCancelled(listener);
  }

  /**
   * Calls `listener` when the handler of a cancelled request has settled (exactly once per cancellation),
   * with `settledAfterMs`: how long the work went on after the abort. A large value names a handler that
   * does not honour its signal. Returns the function that removes the listener.
   */
  onSettled(listener: CancellationListener<SettledEvent>): () => void {
    return this.lifecycle.onSettled(listener);
  }

  private currentReason(): CancellationError | undefined {
    const scope = requestStorage.getStore();
    if (scope !== undefined) return scope.reason;
    return this.lifecycle.isShuttingDown ? this.lifecycle.shutdownReason() : undefined;
  }
}
