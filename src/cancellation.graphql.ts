import { IntrinsicException } from '@nestjs/common';
import type { CallHandler, ExecutionContext } from '@nestjs/common';
import { STATUS_CODES, ServerResponse } from 'node:http';
import { Observable, Subject } from 'rxjs';
import type { Observer, Subscriber, Subscription, Unsubscribable } from 'rxjs';
import { requestStorage } from './cancellation.constants.js';
import { parseDeadlineHeader } from './cancellation.deadline.js';
import { CancellationError, findCancellationError } from './cancellation.error.js';
import type { CancellationKind } from './cancellation.error.js';
import type { CancellationLifecycle } from './cancellation.lifecycle.js';
import { MAX_TIMEOUT_MS } from './cancellation.options.js';
import { RequestScope, isGone } from './cancellation.scope.js';

/**
 * What a resolver of a cancelled GraphQL request fails with. GraphQL lists it in the response's `errors`, with
 * `extensions.code` naming the HTTP status a REST route would have answered (`SERVICE_UNAVAILABLE` for
 * shutdown, e.g. `GATEWAY_TIMEOUT` for a timeout) and `extensions.kind` the `CancellationKind`. Its `cause` is
 * the `CancellationError`, so `isCancellationError()` recognises it (in a `formatError`, say).
 *
 * An `IntrinsicException`, because Nest's exception handler logs every other error a resolver throws at error
 * level, and a cancellation is not a failure of the server.
 * @internal
 */
export class GraphQLCancellationError extends IntrinsicException {
  /** Why the request was cancelled. */
  readonly kind: CancellationKind;
  /** Copied into the GraphQL error's `extensions` (graphql-js takes them from the error it wraps). */
  readonly extensions: { readonly code: string; readonly kind: CancellationKind };

  constructor(reason: CancellationError, timeoutStatus: number) {
    super(reason.message, { cause: reason });
    this.kind = reason.kind;
    this.extensions = { code: codeOf(reason.kind, timeoutStatus), kind: reason.kind };
  }

  override get name(): string {
    return 'GraphQLCancellationError';
  }
}

/** The HTTP status a REST route answers for a cancellation of this kind, as a GraphQL error code. */
function codeOf(kind: CancellationKind, timeoutStatus: number): string {
  switch (kind) {
    case 'timeout':
      return (STATUS_CODES[timeoutStatus] ?? 'Timeout').toUpperCase().replace(/[^A-Z0-9]+/g, '_');
    case 'client-disconnected':
      return 'CLIENT_CLOSED_REQUEST';
    case 'shutdown':
    case 'manual':
      return 'SERVICE_UNAVAILABLE';
  }
}

/**
 * The GraphQL request each response answers, found again by every resolver after the first. An entry outlives
 * the scope's release on purpose: a resolver that starts after its request was cancelled (a field resolver, a
 * later mutation) still finds the reason. It goes with the response.
 */
const requests = new WeakMap<ServerResponse, GraphQLRequestScope>();

/**
 * One GraphQL operation over HTTP, shared by all its resolvers (root fields, and field resolvers when
 * `fieldResolverEnhancers` includes `'interceptors'`): one AbortSignal, one `'close'` listener on the
 * response, one entry in the registry of requests in flight, one deadline.
 *
 * It is a `RequestScope` (so that `CancellationService` and `requestId` speak of it as of any HTTP request)
 * whose "handler" is the request's work as a whole: a stream that ends when the response closes or, once the
 * request is cancelled, when its last running resolver has settled (how long the work went on after the abort
 * is then reported, as for a Promise handler). Each resolver runs as a `ResolverRun` inside it.
 *
 * The deadline is the earliest of the resolvers' budgets (`@RequestTimeout()` on the resolver or its class,
 * else the module's `timeoutMs`), each counted from when that resolver started, and of the caller's
 * `deadlineHeader`: a resolver can shorten the request's budget, never lengthen it.
 * @internal
 */
export class GraphQLRequestScope extends RequestScope {
  /** The resolvers of this request whose stream is open (or, after a cancellation, still running). */
  private readonly running = new Set<ResolverRun>();
  private readonly work: Subject<never>;
  /** `performance.now()` at which the budget runs out; `Infinity` while there is none. */
  private deadline = Infinity;
  /** The budget that set the deadline, for the timeout's message. */
  private budgetMs = 0;
  private deadlineTimer: NodeJS.Timeout | undefined = undefined;

  private constructor(
    request: object,
    response: ServerResponse,
    private readonly application: CancellationLifecycle,
  ) {
    const work = new Subject<never>();
    super(request, response, { handle: () => work }, application, false, true);
    this.work = work;
  }

  /** The scope of the request `response` answers: created, tracked and listened to by its first resolver. */
  static of(
    request: object,
    response: ServerResponse,
    lifecycle: CancellationLifecycle,
  ): GraphQLRequestScope {
    let scope = requests.get(response);
    if (scope === undefined) {
      scope = new GraphQLRequestScope(request, response, lifecycle);
      requests.set(response, scope);
      scope.begin();
    }
    return scope;
  }

  /**
   * Starts the request-level stream (checks that the client is still there and that the application takes
   * requests, tracks the request, listens to the response), then applies the caller's propagated budget.
   */
  private begin(): void {
    new Observable<never>((subscriber) => this.start(subscriber)).subscribe({
      error: () => this.cancelRunning(),
    });
    const header = this.application.options.deadlineHeader;
    const value =
      header === false
        ? undefined
        : (this.request as { headers?: Record<string, unknown> }).headers?.[header];
    const propagated = parseDeadlineHeader(value as string | string[] | undefined, MAX_TIMEOUT_MS);
    if (propagated !== undefined) this.shorten(propagated);
  }

  /** Milliseconds left of the request's budget (0 once spent); `undefined` when it has none. */
  override get remainingMs(): number | undefined {
    return this.deadline === Infinity ? undefined : Math.max(0, this.deadline - performance.now());
  }

  /** Brings the deadline forward to `ms` from now, unless it is already earlier. */
  shorten(ms: number): void {
    if (this.reason !== undefined) return;
    if (ms === 0) {
      this.cancel(new CancellationError('timeout', 'The request arrived with no time budget left'));
      return;
    }
    const deadline = performance.now() + ms;
    if (deadline >= this.deadline) return;
    this.deadline = deadline;
    this.budgetMs = ms;
    clearTimeout(this.deadlineTimer);
    this.deadlineTimer = setTimeout(onDeadline, ms, this);
    this.deadlineTimer.unref();
  }

  /** Runs a resolver in this request. */
  run(run: ResolverRun): void {
    this.running.add(run);
    requestStorage.run(this, ResolverRun.subscribe, run);
  }

  /**
   * A resolver's stream has ended (or, after a cancellation, its work has settled). The last one of a
   * cancelled request ends the request's work.
   */
  resolverEnded(run: ResolverRun): void {
    this.running.delete(run);
    if (this.reason !== undefined) {
      if (this.running.size === 0) this.work.complete();
    } else if (this.application.isDraining && !this.response.headersSent) {
      // As for a REST response during the drain: its keep-alive connection closes with it.
      this.response.setHeader('Connection', 'close');
    }
  }

  /**
   * What a resolver that failed with `err` fails with: a cancellation (this request's, or one its work ran
   * into) becomes a `GraphQLCancellationError`; anything else stays as it is.
   */
  failureOf(err: unknown): unknown {
    let reason = findCancellationError(err);
    if (reason === undefined && this.remainingMs === 0) {
      // The budget is spent and the timer has not fired yet: whatever failed now (typically a downstream
      // that was given the same deadline) failed because time ran out. That ends the whole request.
      this.cancel(new CancellationError('timeout', this.timeoutMessage(), { cause: err }));
      reason = this.reason;
    }
    if (reason === undefined) return err;
    if (this.reason !== undefined) {
      reason = this.reason;
    } else if (reason.kind === 'client-disconnected' && !isGone(this.response)) {
      // Work shared with another request whose client left: this client is still here, and its error must
      // not claim that it left. Only this resolver fails; its siblings go on.
      reason = new CancellationError('manual', 'Work this request depended on was cancelled', {
        cause: reason,
      });
    }
    return this.failure(reason);
  }

  /** The error a resolver of this request fails with for `reason`. */
  failure(reason: CancellationError): GraphQLCancellationError {
    return new GraphQLCancellationError(reason, this.application.options.timeoutStatus);
  }

  /**
   * The response closed: once it is sent, the request's work is done (releasing the scope); a client that
   * left has cancelled it already, and the work then ends with its last resolver.
   */
  override responseClosed(): void {
    super.responseClosed();
    clearTimeout(this.deadlineTimer);
    if (this.reason === undefined) this.work.complete();
  }

  /** The request was cancelled: every resolver still running fails with the reason at once. */
  private cancelRunning(): void {
    clearTimeout(this.deadlineTimer);
    const reason = this.reason as CancellationError;
    // Cancelling a run may remove it from the set: deleting while iterating a Set is safe.
    for (const run of this.running) run.cancel(reason);
    if (this.running.size === 0) this.work.complete();
  }

  /** Why the request timed out, naming the budget that set its deadline. */
  timeoutMessage(): string {
    return `The request ran out of time (${this.budgetMs} ms)`;
  }
}

function onDeadline(scope: GraphQLRequestScope): void {
  scope.cancel(new CancellationError('timeout', scope.timeoutMessage()));
}

/**
 * One resolver call of a GraphQL request: the observer of the resolver's stream and the teardown of the
 * interceptor's. When the request is cancelled it fails at once with the reason, so that GraphQL can answer
 * without waiting for work that was told to stop; a resolver that returns a Promise stays watched until it
 * settles, so that the request's work is known to have ended.
 * @internal
 */
export class ResolverRun implements Observer<unknown>, Unsubscribable {
  private subscriber: Subscriber<unknown> | undefined = undefined;
  private inner: Subscription | undefined = undefined;
  /** The resolver's stream completed or failed. */
  private settled = false;
  /** Its request was cancelled while its Promise was pending: whatever it emits now only ends the watch. */
  private watching = false;
  private ended = false;

  constructor(
    private readonly scope: GraphQLRequestScope,
    private readonly handler: CallHandler,
    /** The resolver returns a Promise, which unsubscribing would not stop (an Observable it would). */
    private readonly watchesSettlement: boolean,
  ) {}

  start(subscriber: Subscriber<unknown>): Unsubscribable {
    const { scope } = this;
    if (scope.reason !== undefined) {
      this.ended = true;
      subscriber.error(scope.failure(scope.reason));
      return this;
    }
    this.subscriber = subscriber;
    scope.run(this);
    return this;
  }

  /** Runs inside the request's store, so that the resolver and everything it awaits see the request. */
  static subscribe(run: ResolverRun): void {
    run.inner = run.handler.handle().subscribe(run);
  }

  /** The request was cancelled: fail now. */
  cancel(reason: CancellationError): void {
    const subscriber = this.subscriber;
    this.subscriber = undefined;
    subscriber?.error(this.scope.failure(reason));
  }

  next(value: unknown): void {
    if (this.watching) {
      this.stopWatching();
      return;
    }
    this.subscriber?.next(value);
  }

  error(err: unknown): void {
    if (this.watching) {
      this.stopWatching();
      return;
    }
    this.settled = true;
    // Mapping may cancel the whole request (its budget is spent), which fails this run too.
    const failure = this.scope.failureOf(err);
    this.subscriber?.error(failure);
  }

  complete(): void {
    if (this.watching) {
      this.stopWatching();
      return;
    }
    this.settled = true;
    this.subscriber?.complete();
  }

  /** Teardown of the interceptor's stream, whichever way it ends. */
  unsubscribe(): void {
    if (this.ended) return;
    this.subscriber = undefined;
    if (
      this.scope.reason !== undefined &&
      !this.settled &&
      this.watchesSettlement &&
      this.inner !== undefined
    ) {
      this.watching = true;
      return;
    }
    this.end();
  }

  private stopWatching(): void {
    this.watching = false;
    this.end();
  }

  private end(): void {
    this.ended = true;
    this.inner?.unsubscribe();
    this.inner = undefined;
    this.scope.resolverEnded(this);
  }
}

/**
 * The HTTP request and response of a GraphQL context: its `req`, which Nest's Apollo driver puts there by
 * default (and adds to a context the application builds itself), and Express's `req.res`. A context without
 * them (a subscription over WebSocket, a platform whose request does not lead to its response) has none.
 */
function httpOf(gqlContext: unknown): { request: object; response: ServerResponse } | undefined {
  const request = (gqlContext as { req?: unknown } | null | undefined)?.req;
  if (typeof request !== 'object' || request === null) return undefined;
  const response = (request as { res?: unknown }).res;
  return response instanceof ServerResponse ? { request, response } : undefined;
}

/**
 * The interceptor's path for a GraphQL resolver (`graphql` context, arguments `[root, args, context, info]`):
 * runs it in the scope of the HTTP request that carries the operation. A resolver whose context leads to no
 * HTTP response passes through.
 * @internal
 */
export function interceptResolver(
  context: ExecutionContext,
  next: CallHandler,
  lifecycle: CancellationLifecycle,
  timeoutMs: number | false,
  returnsPromise: boolean,
): Observable<unknown> {
  const http = httpOf(context.getArgByIndex(2));
  if (http === undefined) return next.handle();
  const scope = GraphQLRequestScope.of(http.request, http.response, lifecycle);
  if (timeoutMs !== false) scope.shorten(timeoutMs);
  const run = new ResolverRun(scope, next, returnsPromise);
  return new Observable((subscriber) => run.start(subscriber));
}
