import { HttpStatus } from '@nestjs/common';
import type { CanActivate, ModuleMetadata, Type } from '@nestjs/common';
import type { RouteExclusion } from '../http/route-exclusion.js';

/**
 * Options of `CancellationModule.forRoot()` / `forRootAsync()`. Every field is optional; a value that does
 * not fit fails the application's start-up with an error that names the option and the value.
 */
export interface CancellationModuleOptions {
  /**
   * Time budget of every HTTP request, in milliseconds. When it runs out the request's signal aborts with
   * `kind: 'timeout'` and the client is answered with `timeoutStatus`. A route or a controller sets its own
   * with `@RequestTimeout(ms)`, or opts out with `@RequestTimeout(false)`.
   * @default false (no default budget)
   */
  timeoutMs?: number | false;

  /**
   * HTTP status answered when a request's time budget runs out (a 4xx or 5xx code).
   * @default 504 (Gateway Timeout)
   */
  timeoutStatus?: number;

  /**
   * Value of the `Retry-After` header, in seconds, sent with the 503 that answers a request cancelled by
   * shutdown: a load balancer or client retries on another instance after that long.
   * @default 1
   */
  retryAfterSeconds?: number;

  /**
   * How long requests in flight may go on finishing normally once shutdown begins, in milliseconds. During
   * this drain, requests that arrive are answered `503` + `Connection: close` + `Retry-After` at once, and
   * `CancellationService.drainingSignal` has aborted (stop taking new work). When it ends, whatever is still
   * running is aborted with `kind: 'shutdown'` and `shutdownSignal` aborts.
   * @default 0 (abort requests in flight as soon as shutdown begins)
   */
  shutdownGracePeriodMs?: number;

  /**
   * Hard deadline of shutdown, in milliseconds from its start: when it passes, every connection still open
   * is ended (a response whose headers are unsent gets a `503`, any other socket is destroyed, idle
   * keep-alive sockets are closed) so that `app.close()` resolves, and each request still open is logged
   * once with its method, URL and age. Must be longer than `shutdownGracePeriodMs`.
   * @default shutdownGracePeriodMs + 10_000
   */
  shutdownTimeoutMs?: number;

  /**
   * Name of a request header that carries the caller's remaining time budget in milliseconds (deadline
   * propagation, as gRPC does), e.g. `'x-request-timeout-ms'`. An inbound value can only shorten the
   * request's budget, never lengthen a server-side limit; a malformed, negative, fractional, huge or repeated
   * value is ignored. `CancellationService.fetch()` and `instrumentAxios()` send the remaining budget in the
   * same header. `false` disables it.
   * @default false
   */
  deadlineHeader?: string | false;

  /**
   * Log one line per cancelled request (method, route, kind, elapsed milliseconds) at the `verbose` level of
   * Nest's logger. A cancellation is never logged as an error.
   * @default true
   */
  logCancellations?: boolean;

  /**
   * Name of a request header (and gRPC metadata entry) whose value is kept as the request's `correlationId`
   * (in `inFlight()`, the cancellation events, `CancellationService.correlationId` and log lines), e.g. the id
   * a gateway or a tracing proxy assigned. A value that is not 1 to 128 characters of
   * `A-Z a-z 0-9 . _ ~ : @ + = -` (or a repeated header) is ignored. `false`: keep none. The request's `id`,
   * what `cancel(id)` takes, is always the server's own UUID: a client cannot choose it, and no two requests
   * share it. (In 0.1.0 this header's value was the id.)
   * @default 'x-request-id'
   */
  requestIdHeader?: string | false;

  /**
   * Development aid: a handler still running this many milliseconds after its request's signal aborted (it
   * ignores its signal, so the work goes on for nobody) is reported once per route with a `warn` line naming
   * the route. Only handlers that return a Promise (async methods) are watched: an Observable stops when it
   * is unsubscribed. Costs one timer per cancelled request, nothing otherwise. `false` turns it off.
   * @default false
   */
  stillRunningWarningMs?: number | false;

  /**
   * Record OpenTelemetry metrics through `@opentelemetry/api` (an optional peer dependency, which must then be
   * installed): cancellations by kind and route, the time from abort to the handler settling, requests in
   * flight and handlers still running after their abort. With no OpenTelemetry SDK registered the API records
   * nothing and costs next to nothing.
   * @default false
   */
  metrics?: boolean;

  /**
   * Run each HTTP request (its guards, interceptors after this one, pipes and handler) inside the
   * AsyncLocalStorage store that `CancellationService`, `checkpoint()` and guards read the request's signal from.
   * `false` trades those for speed on Node 20 and 22, where AsyncLocalStorage turns on promise hooks that every
   * promise of the process then pays (Node 24's AsyncContextFrame makes them cheap): only `@RequestSignal()`
   * gets the request's signal (the interceptor hands it over without the store), while
   * `CancellationService.signal`, `remainingMs`, `requestId` and `throwIfCancelled()` answer as outside a
   * request (the application's signal), and `checkpoint()` needs its signal passed. Disconnects, deadlines,
   * shutdown, the registry, events and metrics work as before. WebSocket, microservice and GraphQL contexts
   * keep their store.
   * @default true
   */
  asyncContext?: boolean;

  /**
   * Routes left out of cancellation, by path (as `@SkipCancellation()` does by decorator): no request scope,
   * no time budget, and no refusal while the application drains, for health checks, readiness probes and
   * metrics scrapes. Each entry is a path pattern or a `{ path, method }` (see {@link RouteExclusion}),
   * matched against the path the client requests, global prefix included: `['health', '/api/metrics/*',
   * { path: 'ready', method: RequestMethod.GET }]`. Patterns are checked at start-up.
   * @default [] (no route excluded)
   */
  exclude?: (string | RouteExclusion)[];
}

/**
 * What the optional admin controller needs: a guard (required) and where to mount it.
 */
export interface CancellationAdminOptions {
  /**
   * The guard that decides who may list and cancel requests: a guard class (instantiated by Nest in
   * `CancellationModule`'s context, so its dependencies must come from global modules or `imports`) or an
   * instance. Required: the controller refuses to start without one.
   */
  guard: Type<CanActivate> | CanActivate;
  /**
   * The controller's path (after the application's global prefix).
   * @default 'cancellation'
   */
  path?: string;
  /** Modules the guard's dependencies come from, added to `CancellationModule`'s imports. */
  imports?: ModuleMetadata['imports'];
}

/**
 * Options of the module definition itself (the "extras" of `forRoot()` / `forRootAsync()`): they shape which
 * controllers exist, so they are static even with `forRootAsync()`.
 */
export interface CancellationModuleExtras {
  /**
   * Mounts an admin controller, off by default: `GET /<path>/requests` lists the requests in flight and
   * `POST /<path>/requests/:id/cancel` (JSON body `{ "message"?: string }`) cancels one with `kind: 'manual'`
   * (503 to its client). It needs a `guard`; without one the application does not start.
   * @default undefined (no controller)
   */
  admin?: CancellationAdminOptions;
}

/**
 * Options with every default filled in.
 * @internal
 */
export type ResolvedCancellationOptions = Required<CancellationModuleOptions>;

/** What `shutdownTimeoutMs` adds to the grace period when it is not set. @internal */
export const DEFAULT_SHUTDOWN_TIMEOUT_MARGIN_MS = 10_000;

/** @internal */
export const DEFAULT_OPTIONS: ResolvedCancellationOptions = {
  timeoutMs: false,
  timeoutStatus: HttpStatus.GATEWAY_TIMEOUT,
  retryAfterSeconds: 1,
  shutdownGracePeriodMs: 0,
  shutdownTimeoutMs: DEFAULT_SHUTDOWN_TIMEOUT_MARGIN_MS,
  deadlineHeader: false,
  logCancellations: true,
  requestIdHeader: 'x-request-id',
  stillRunningWarningMs: false,
  metrics: false,
  asyncContext: true,
  exclude: [],
};
