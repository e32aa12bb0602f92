import type { ServerResponse } from 'node:http';
import { Observable, Subject } from 'rxjs';
import { CancellationError, findCancellationError } from '../../core/cancellation-error.js';
import { isTimeoutFailure } from '../../core/timeout-failure.js';
import { parseDeadlineHeader } from '../../http/deadline-header.js';
import { isGone } from '../../http/request-outcome.js';
import { RequestScope } from '../../http/request-scope.js';
import type { CancellationRuntime } from '../../module/cancellation-runtime.js';
import { MAX_TIMEOUT_MS } from '../../module/options.validation.js';
import { GraphQLCancellationError } from './graphql-cancellation.error.js';

/** A resolver running in a request: what the request's cancellation fails at once. */
interface RunningResolver {
  cancel(reason: CancellationError): void;
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
  private readonly running = new Set<RunningResolver>();
  private readonly work: Subject<never>;
  /** `performance.now()` at which the budget runs out; `Infinity` while there is none. */
  private deadline = Infinity;
  /** The budget that set the deadline, for the timeout's message. */
  private budgetMs = 0;
  private deadlineTimer: NodeJS.Timeout | undefined = undefined;
  /**
   * The execution context of the resolver call whose run is subscribing to its handler, during that
   * subscription: an interceptor applied a second time to the same call (globally and with
   * `@UseInterceptors()`) runs then, and passes through.
   */
  starting: object | undefined = undefined;

  private constructor(request: object, response: ServerResponse, runtime: CancellationRuntime) {
    const work = new Subject<never>();
    super(request, response, { handle: () => work }, runtime, false, true);
    this.work = work;
  }

  /** The scope of the request `response` answers: created, tracked and listened to by its first resolver. */
  static of(request: object, response: ServerResponse, runtime: CancellationRuntime): GraphQLRequestScope {
    let scope = requests.get(response);
    if (scope === undefined) {
      scope = new GraphQLRequestScope(request, response, runtime);
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
    // The request's work ends when its response has been sent.
    if (this.reason === undefined) this.listenToResponse();
    const header = this.runtime.options.deadlineHeader;
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

  /** A resolver of this request starts. */
  add(run: RunningResolver): void {
    this.running.add(run);
  }

  /**
   * A resolver's stream has ended (or, after a cancellation, its work has settled). The last one of a
   * cancelled request ends the request's work.
   */
  resolverEnded(run: RunningResolver): void {
    this.running.delete(run);
    if (this.reason !== undefined) {
      if (this.running.size === 0) this.work.complete();
    } else if (this.runtime.signals.isDraining && !this.response.headersSent) {
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
    if (reason === undefined && this.remainingMs === 0 && isTimeoutFailure(err)) {
      // The budget is spent and the timer has not fired yet: a downstream that was given the same deadline
      // gave up first. That ends the whole request. Any other failure stays what it is.
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
    return new GraphQLCancellationError(reason, this.runtime.options.timeoutStatus);
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
