import { Inject, Injectable } from '@nestjs/common';
import { requestStorage } from './cancellation.constants.js';
import { setAxiosHeader } from './cancellation.deadline.js';
import type { AxiosLikeInstance } from './cancellation.deadline.js';
import type { CancellationError } from './cancellation.error.js';
import { CancellationLifecycle } from './cancellation.lifecycle.js';

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

  private currentReason(): CancellationError | undefined {
    const scope = requestStorage.getStore();
    if (scope !== undefined) return scope.reason;
    return this.lifecycle.isShuttingDown ? this.lifecycle.shutdownReason() : undefined;
  }
}
