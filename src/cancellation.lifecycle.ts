import { Inject, Injectable, Logger } from '@nestjs/common';
import type {
  BeforeApplicationShutdown,
  OnApplicationBootstrap,
  OnApplicationShutdown,
} from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import { randomUUID } from 'node:crypto';
import { ServerResponse } from 'node:http';
import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import { CancellationError } from './cancellation.error.js';
import { RESOLVED_OPTIONS } from './cancellation.module-definition.js';
import type { ResolvedCancellationOptions } from './cancellation.options.js';
import { platformFor } from './cancellation.platform.js';
import type { HttpPlatform } from './cancellation.platform.js';
import type {
  CancelledEvent,
  CancellationListener,
  InFlightRequest,
  SettledEvent,
} from './cancellation.events.js';
import type { RequestScope } from './cancellation.scope.js';

/** A request id taken from a header: printable, no separators that would break a URL path or a log line. */
const REQUEST_ID = /^[A-Za-z0-9._~:@+=-]{1,128}$/;

function addListener<L>(listeners: L[], listener: L): () => void {
  if (typeof listener !== 'function')
    throw new TypeError('nestjs-cancellation: a listener must be a function');
  listeners.push(listener);
  return () => {
    const index = listeners.indexOf(listener);
    if (index !== -1) listeners.splice(index, 1);
  };
}

/** A socket of the HTTP server, with the time it connected and the response it is writing (Node's own field). */
type TrackedSocket = Socket & { _httpMessage?: unknown };

/**
 * The application's side of cancellation: its draining and shutdown signals, the registry of requests in
 * flight (which shutdown walks once, instead of every request subscribing to a shared shutdown subject), and
 * the hard deadline that ends whatever still holds the HTTP server open.
 *
 * Shutdown starts in `beforeApplicationShutdown`: Nest closes the HTTP server after that hook and before
 * `onApplicationShutdown`, and closing the server waits for every request in flight. Cancelling any later
 * would only run once the requests it should stop had finished. `onApplicationShutdown` repeats the abort,
 * which does nothing the second time, for the case where an earlier hook failed.
 * @internal
 */
@Injectable()
export class CancellationLifecycle
  implements OnApplicationBootstrap, BeforeApplicationShutdown, OnApplicationShutdown
{
  private readonly drainingController = new AbortController();
  private readonly shutdownController = new AbortController();
  private readonly inFlight = new Set<RequestScope>();
  /** Cancelled requests whose handler has not settled yet: work going on for nobody. */
  private readonly lingering = new Set<RequestScope>();
  private readonly cancelledListeners: CancellationListener<CancelledEvent>[] = [];
  private readonly settledListeners: CancellationListener<SettledEvent>[] = [];
  /** Routes `stillRunningWarningMs` has reported, once each. */
  private readonly reportedRoutes = new Set<string>();
  private readonly logger = new Logger('Cancellation');
  private httpPlatform: HttpPlatform | undefined;
  /** Open sockets of the HTTP server and when each connected: what the hard deadline ends. */
  private readonly sockets = new Map<TrackedSocket, number>();
  private server: Server | undefined;
  private hardDeadline: NodeJS.Timeout | undefined;
  /** Resolves the drain's wait once the last request in flight has ended. */
  private onDrained: (() => void) | undefined;
  /**
   * Responses that were open when the drain began: their requests arrived before it, so they may still reach
   * the interceptor (past a slow guard, a body still uploading) and finish within the grace period.
   */
  private readonly admitted = new WeakSet<ServerResponse>();
  /** How many of those have not closed yet. */
  private admittedOpen = 0;

  constructor(
    @Inject(RESOLVED_OPTIONS) readonly options: ResolvedCancellationOptions,
    @Inject(HttpAdapterHost) private readonly adapterHost: HttpAdapterHost,
  ) {}

  /** Aborts when shutdown begins: stop taking new work (with no grace period, at the same time as `shutdownSignal`). */
  get drainingSignal(): AbortSignal {
    return this.drainingController.signal;
  }

  /** Aborts with a `CancellationError` of kind `'shutdown'` when work in flight must stop. */
  get shutdownSignal(): AbortSignal {
    return this.shutdownController.signal;
  }

  /** Shutdown has begun: new requests are refused. */
  get isDraining(): boolean {
    return this.drainingController.signal.aborted;
  }

  get isShuttingDown(): boolean {
    return this.shutdownController.signal.aborted;
  }

  /** The reason new requests are refused with, once `isDraining`. */
  drainReason(): CancellationError {
    return this.drainingController.signal.reason as CancellationError;
  }

  /** The reason the shutdown signal aborted with (only meaningful once `isShuttingDown`). */
  shutdownReason(): CancellationError {
    return this.shutdownController.signal.reason as CancellationError;
  }

  /** Express or Fastify, known once the HTTP adapter exists. */
  get platform(): HttpPlatform {
    return (this.httpPlatform ??= platformFor(this.adapterHost.httpAdapter?.getType()));
  }

  /** How many requests are in flight. */
  get inFlightCount(): number {
    return this.inFlight.size;
  }

  track(scope: RequestScope): void {
    this.inFlight.add(scope);
  }

  untrack(scope: RequestScope): void {
    this.inFlight.delete(scope);
    this.checkDrained();
  }

  /**
   * Whether a request that reaches the interceptor now must be refused: it arrived after the drain began,
   * or the grace period is over.
   */
  refuses(response: ServerResponse): boolean {
    return this.isDraining && (this.isShuttingDown || !this.admitted.has(response));
  }

  private checkDrained(): void {
    if (this.onDrained !== undefined && this.inFlight.size === 0 && this.admittedOpen === 0) this.onDrained();
  }

  /**
   * Remembers the responses open as the drain begins (requests that arrived before it, wherever they are:
   * past the interceptor, in a guard, still uploading their body), and counts them down as they close.
   */
  private admitOpenRequests(): void {
    for (const socket of this.sockets.keys()) {
      const response = socket._httpMessage;
      if (!(response instanceof ServerResponse) || response.writableEnded || this.admitted.has(response))
        continue;
      this.admitted.add(response);
      this.admittedOpen++;
      response.once('close', () => {
        this.admittedOpen--;
        this.checkDrained();
      });
    }
  }

  /** How many cancelled requests have a handler still running. */
  get lingeringCount(): number {
    return this.lingering.size;
  }

  /**
   * The id of a request: the `requestIdHeader`'s value when it is one well-formed value, else a new UUID.
   * Express's and Fastify's requests both expose Node's header object.
   */
  requestIdOf(request: unknown): string {
    const header = this.options.requestIdHeader;
    if (header !== false) {
      const value = (request as { headers?: Record<string, unknown> }).headers?.[header];
      if (typeof value === 'string' && REQUEST_ID.test(value)) return value;
    }
    return randomUUID();
  }

  /**
   * One line per cancelled request, never at error level (a cancellation is not a failure of the server),
   * and the `onCancelled()` listeners.
   */
  reportCancelled(scope: RequestScope, reason: CancellationError): void {
    const { platform } = this;
    if (this.options.logCancellations) {
      this.logger.verbose(
        `${platform.method(scope.request)} ${platform.route(scope.request)} [${scope.id}] cancelled ` +
          `(${reason.kind}) after ${Math.round(scope.elapsedMs)} ms`,
      );
    }
    if (this.cancelledListeners.length === 0) return;
    const event = this.eventOf(scope, reason);
    for (const listener of this.cancelledListeners.slice()) this.notify(listener, event);
  }

  /** The handler of a cancelled request settled, `settledAfterMs` after the abort. */
  reportSettled(scope: RequestScope, reason: CancellationError, settledAfterMs: number): void {
    if (this.settledListeners.length === 0) return;
    const event: SettledEvent = { ...this.eventOf(scope, reason), settledAfterMs };
    for (const listener of this.settledListeners.slice()) this.notify(listener, event);
  }

  private eventOf(scope: RequestScope, reason: CancellationError): CancelledEvent {
    const { platform } = this;
    return {
      id: scope.id,
      kind: reason.kind,
      reason,
      method: platform.method(scope.request),
      route: platform.route(scope.request),
      elapsedMs: scope.abortedAt - scope.startedAt,
    };
  }

  /** A listener that throws must not break the request that triggered it, nor the other listeners. */
  private notify<E>(listener: CancellationListener<E>, event: E): void {
    try {
      listener(event);
    } catch (err) {
      this.logger.error('A cancellation listener threw', err instanceof Error ? err.stack : String(err));
    }
  }

  /** Adds a listener; returns the function that removes it. */
  onCancelled(listener: CancellationListener<CancelledEvent>): () => void {
    return addListener(this.cancelledListeners, listener);
  }

  /** Adds a listener; returns the function that removes it. */
  onSettled(listener: CancellationListener<SettledEvent>): () => void {
    return addListener(this.settledListeners, listener);
  }

  /**
   * A cancelled request's handler is still running (its Promise is pending). With `stillRunningWarningMs`,
   * a handler still running that long after the abort is reported, once per route.
   */
  linger(scope: RequestScope): void {
    this.lingering.add(scope);
    const warnAfter = this.options.stillRunningWarningMs;
    if (warnAfter === false) return;
    const route = `${this.platform.method(scope.request)} ${this.platform.route(scope.request)}`;
    if (this.reportedRoutes.has(route)) return;
    setTimeout(() => {
      if (!this.lingering.has(scope) || this.reportedRoutes.has(route)) return;
      this.reportedRoutes.add(route);
      this.logger.warn(
        `${route} [${scope.id}] is still running ${warnAfter} ms after its signal aborted ` +
          `(${scope.reason?.kind}): the handler does not stop when its request is cancelled. Pass its ` +
          `AbortSignal (CancellationService.signal, @RequestSignal()) to what it awaits, or call ` +
          `checkpoint() in its loops. Reported once per route.`,
      );
    }, warnAfter).unref();
  }

  /** The handler of a cancelled request settled. */
  unlinger(scope: RequestScope): void {
    this.lingering.delete(scope);
  }

  /** The requests in flight, oldest first, and the cancelled ones whose handler still runs. */
  list(): InFlightRequest[] {
    const origin = performance.timeOrigin;
    const now = performance.now();
    const { platform } = this;
    const describe = (scope: RequestScope): InFlightRequest => {
      const remainingMs = scope.remainingMs;
      return {
        id: scope.id,
        method: platform.method(scope.request),
        route: platform.route(scope.request),
        startedAt: Math.round(origin + scope.startedAt),
        elapsedMs: Math.round(now - scope.startedAt),
        ...(remainingMs === undefined ? {} : { remainingMs: Math.round(remainingMs) }),
        ...(scope.reason === undefined ? {} : { cancelled: scope.reason.kind }),
      };
    };
    const requests = [...this.inFlight].map(describe);
    for (const scope of this.lingering) requests.push(describe(scope));
    return requests.sort((a, b) => a.startedAt - b.startedAt);
  }

  /**
   * Cancels the requests in flight with this id (`kind: 'manual'`): their clients get a 503. Ids from a
   * header may repeat; all of them are cancelled. Returns how many were.
   */
  cancelById(id: string, message: string): number {
    const matches = [...this.inFlight].filter((scope) => scope.reason === undefined && scope.id === id);
    for (const scope of matches) scope.cancel(new CancellationError('manual', message));
    return matches.length;
  }

  /** Starts counting the HTTP server's sockets, for the hard deadline (one listener per connection). */
  onApplicationBootstrap(): void {
    const server = this.adapterHost.httpAdapter?.getHttpServer() as Server | undefined;
    if (server === undefined || typeof server.on !== 'function') return;
    this.server = server;
    server.on('connection', (socket: TrackedSocket) => {
      this.sockets.set(socket, performance.now());
      socket.once('close', () => this.sockets.delete(socket));
    });
  }

  /**
   * Drains, then aborts what is still running: refuses new requests and aborts `drainingSignal`, gives
   * requests in flight `shutdownGracePeriodMs` to finish, then aborts `shutdownSignal` and cancels every
   * request still in flight. Arms the hard deadline first. Idempotent.
   */
  async beforeApplicationShutdown(signal?: string): Promise<void> {
    if (this.isDraining) return;
    const suffix = signal === undefined ? '' : ` (${signal})`;
    this.drainingController.abort(
      new CancellationError('shutdown', `The application is shutting down${suffix}`),
    );
    this.hardDeadline = setTimeout(() => this.forceClose(), this.options.shutdownTimeoutMs);
    this.hardDeadline.unref();
    const grace = this.options.shutdownGracePeriodMs;
    if (grace > 0) this.admitOpenRequests();
    const open = Math.max(this.inFlight.size, this.admittedOpen);
    if (grace > 0 && open > 0) {
      if (this.options.logCancellations) {
        this.logger.log(`Draining ${open} request(s) in flight for up to ${grace} ms`);
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, grace);
        this.onDrained = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.onDrained = undefined;
    }
    this.abortInFlight(suffix);
  }

  /** The HTTP server is closed: make sure everything was aborted, and disarm the hard deadline. */
  onApplicationShutdown(signal?: string): void {
    if (!this.isDraining) {
      const reason = new CancellationError(
        'shutdown',
        `The application is shutting down${signal ? ` (${signal})` : ''}`,
      );
      this.drainingController.abort(reason);
    }
    this.abortInFlight(signal === undefined ? '' : ` (${signal})`);
    clearTimeout(this.hardDeadline);
  }

  private abortInFlight(suffix: string): void {
    if (this.isShuttingDown) return;
    const reason = new CancellationError('shutdown', `The application is shutting down${suffix}`);
    this.shutdownController.abort(reason);
    const count = this.inFlight.size;
    // Cancelling removes the entry: deleting while iterating a Set is safe.
    for (const scope of this.inFlight) scope.cancel(reason);
    if (count > 0 && this.options.logCancellations) {
      this.logger.log(`Shutdown cancelled ${count} request${count === 1 ? '' : 's'} in flight`);
    }
  }

  /**
   * The hard deadline passed and the HTTP server still has open connections: a request that never reached
   * the interceptor (a slow upload, a guard that hangs), a response still being written, an idle keep-alive
   * socket. End them all so that `app.close()` resolves.
   */
  private forceClose(): void {
    const now = performance.now();
    let ended = 0;
    for (const [socket, connectedAt] of this.sockets) {
      const response = socket._httpMessage;
      if (response instanceof ServerResponse && !response.writableEnded) {
        const { req } = response;
        this.logger.warn(
          // The path without its query string, which may carry tokens.
          `Shutdown deadline (${this.options.shutdownTimeoutMs} ms) passed with ${req.method} ` +
            `${(req.url ?? '').split('?')[0]} ` +
            `still open (connection age ${Math.round(now - connectedAt)} ms): ` +
            (response.headersSent ? 'destroying the connection' : 'answering 503'),
        );
        ended++;
        if (!response.headersSent) {
          response.writeHead(503, {
            'Content-Type': 'application/json; charset=utf-8',
            'Retry-After': String(this.options.retryAfterSeconds),
            Connection: 'close',
          });
          response.end(
            JSON.stringify({
              message: 'The application is shutting down',
              error: 'Service Unavailable',
              statusCode: 503,
            }),
          );
          continue;
        }
      }
      socket.destroy();
    }
    this.sockets.clear();
    this.server?.closeIdleConnections?.();
    if (ended === 0 && this.options.logCancellations) {
      this.logger.log(
        `Shutdown deadline (${this.options.shutdownTimeoutMs} ms) passed: closed idle connections`,
      );
    }
  }
}
