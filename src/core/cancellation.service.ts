import { Inject, Injectable } from '@nestjs/common';
import type { AxiosLikeInstance } from '../outbound/axios-like.js';
import { OutboundCancellation } from '../outbound/outbound-cancellation.service.js';
import { CancellationRegistry } from '../registry/cancellation-registry.service.js';
import type {
  CancelledEvent,
  CancellationListener,
  InFlightRequest,
  SettledEvent,
} from '../registry/cancellation-events.types.js';
import { ApplicationSignals } from '../shutdown/application-signals.js';
import { scopeStorage } from './async-context.js';
import type { CancellationError } from './cancellation-error.js';

/**
 * The cancellation state of whatever is running now, for ordinary singleton services: no request-scoped
 * provider is needed. Inside an HTTP request it speaks of that request (found through AsyncLocalStorage, so
 * it stays right after `await`, in timers, in `Promise.all` branches and in callbacks of streams and
 * emitters the request created); inside a WebSocket or microservice message or a gRPC call, of that; inside a
 * run of a `@Cron()` / `@Interval()` / `@Timeout()` method (with `CancellationScheduleModule` from
 * `nestjs-cancellation/schedule`), of that run; outside any (a queue consumer, `onModuleInit` work) it speaks
 * of the application, whose signal aborts when it shuts down.
 *
 * Operators' tools live in `CancellationRegistry`, outbound HTTP helpers in `OutboundCancellation`.
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
  constructor(
    @Inject(ApplicationSignals) private readonly signals: ApplicationSignals,
    @Inject(CancellationRegistry) private readonly registry: CancellationRegistry,
    @Inject(OutboundCancellation) private readonly outbound: OutboundCancellation,
  ) {}

  /**
   * The current request's AbortSignal; outside a request, the application's shutdown signal. It aborts with
   * a `CancellationError` whose `kind` says why. Pass it to `fetch`, `timers/promises`, `fs/promises`,
   * `child_process`, `stream.pipeline`, `events.once`, axios, or check it in your own loops.
   */
  get signal(): AbortSignal {
    return scopeStorage.getStore()?.signal ?? this.signals.shutdownSignal;
  }

  /**
   * Aborts when work in flight must stop: when the application starts shutting down (`app.close()`, or a
   * signal under `enableShutdownHooks()`), or, with `shutdownGracePeriodMs`, once that grace period is over.
   * Whether or not a request is running: what background work in progress should watch.
   */
  get shutdownSignal(): AbortSignal {
    return this.signals.shutdownSignal;
  }

  /**
   * Aborts as soon as shutdown begins, before the grace period (`shutdownGracePeriodMs`) lets requests in
   * flight finish: the moment to stop taking new work (a queue consumer stops pulling jobs, a scheduler
   * stops starting them) while the work already taken goes on until `shutdownSignal`. With no grace period
   * both abort together.
   */
  get drainingSignal(): AbortSignal {
    return this.signals.drainingSignal;
  }

  /**
   * Milliseconds left of the current request's time budget (`@RequestTimeout()`, `timeoutMs`, or a shorter
   * one the caller propagated in `deadlineHeader`); `undefined` when it has none, outside a request, and once
   * the response streams (an `@Sse()` stream's headers are out: the budget covers the work until then).
   */
  get remainingMs(): number | undefined {
    return scopeStorage.getStore()?.remainingMs;
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
   * The current request's id, as `inFlight()` lists it, `cancel(id)` takes it and log lines show it: made by
   * the server and unique; inside a gRPC call or a scheduled run, its id. `undefined` outside any. (In 0.1.0 it
   * was the `requestIdHeader` value when the request carried one: that is now `correlationId`.)
   */
  get requestId(): string | undefined {
    const id = (scopeStorage.getStore() as { id?: unknown } | undefined)?.id;
    return typeof id === 'string' ? id : undefined;
  }

  /**
   * The current request's `requestIdHeader` value (e.g. the id a gateway or tracing proxy assigned), when it
   * carried a well-formed one; `undefined` otherwise and outside a request.
   */
  get correlationId(): string | undefined {
    const id = (scopeStorage.getStore() as { correlationId?: unknown } | undefined)?.correlationId;
    return typeof id === 'string' ? id : undefined;
  }

  /**
   * `fetch()` that carries the current request's cancellation downstream.
   * @deprecated use `OutboundCancellation.fetch()`, which this calls.
   */
  fetch(input: string | URL | Request, init?: RequestInit): Promise<Response> {
    return this.outbound.fetch(input, init);
  }

  /**
   * Makes every request of an axios instance carry the cancellation of the request it is made for.
   * @deprecated use `OutboundCancellation.instrumentAxios()`, which this calls.
   */
  instrumentAxios(axios: AxiosLikeInstance): number {
    return this.outbound.instrumentAxios(axios);
  }

  /**
   * The HTTP requests in flight, oldest first.
   * @deprecated use `CancellationRegistry.inFlight()`, which this calls.
   */
  inFlight(): InFlightRequest[] {
    return this.registry.inFlight();
  }

  /**
   * Cancels the request in flight with this id (`kind: 'manual'`, answered 503 with `message`).
   * @deprecated use `CancellationRegistry.cancel()`, which this calls.
   */
  cancel(id: string, message?: string): number {
    return this.registry.cancel(id, message);
  }

  /**
   * Calls `listener` each time an HTTP request is cancelled.
   * @deprecated use `CancellationRegistry.onCancelled()`, which this calls.
   */
  onCancelled(listener: CancellationListener<CancelledEvent>): () => void {
    return this.registry.onCancelled(listener);
  }

  /**
   * Calls `listener` when the handler of a cancelled request has settled.
   * @deprecated use `CancellationRegistry.onSettled()`, which this calls.
   */
  onSettled(listener: CancellationListener<SettledEvent>): () => void {
    return this.registry.onSettled(listener);
  }

  private currentReason(): CancellationError | undefined {
    const scope = scopeStorage.getStore();
    if (scope !== undefined) return scope.reason;
    return this.signals.isShuttingDown ? this.signals.shutdownReason() : undefined;
  }
}
