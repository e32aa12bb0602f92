import type { CallHandler } from '@nestjs/common';
import type { Subscriber, Unsubscribable } from 'rxjs';
import { CancellationError, findCancellationError } from '../../core/cancellation-error.js';
import { isTimeoutFailure } from '../../core/timeout-failure.js';
import type { CancellationRuntime } from '../../module/cancellation-runtime.js';
import { correlationIdFrom, newWorkId } from '../../registry/request-id.js';
import { TrackedScope } from '../../registry/tracked-scope.js';
import { DEADLINE_SLACK_MS, deadlineOf, endReasonOf } from './grpc-call.js';
import type { GrpcServerCall } from './grpc-call.js';
import { GrpcCancellationStatus } from './grpc-status.js';

/** Where a call keeps its scope, for the shared `'cancelled'` listener and for `@RequestSignal()`. */
const SCOPE = Symbol('nestjs-cancellation.grpc-scope');

type ScopedCall = GrpcServerCall & { [SCOPE]?: GrpcCallScope };

/**
 * One gRPC call in flight (unary or streaming, `@GrpcMethod()`, `@GrpcStreamMethod()`, `@GrpcStreamCall()`):
 * the AsyncLocalStorage store `CancellationService` reads inside the handler, whose signal aborts when the
 * client cancels the call, when its deadline passes (the caller's `grpc-timeout`, or the handler's own
 * `@RequestTimeout()` / `timeoutMs` when shorter), when the application shuts down, and on `cancel(id)`.
 * It is registered in the in-flight registry, so `inFlight()` lists it and shutdown waits for it during the
 * grace period.
 *
 * A cancelled call is answered with a `GrpcCancellationStatus` (`DEADLINE_EXCEEDED`, `UNAVAILABLE` for
 * shutdown, `CANCELLED`), which the module's exception filter hands to the gRPC server; a call that already
 * ended (its client cancelled it, grpc-js enforced its deadline) is answered with nothing.
 *
 * grpc-js emits `'cancelled'` after every call, answered ones included: the scope stops listening as soon as
 * the handler's stream ends, before Nest answers the call, so a call that completes never sees its signal
 * abort.
 * @internal
 */
export class GrpcCallScope extends TrackedScope {
  /** What `inFlight()` and the log line show as the method. */
  readonly method = 'GRPC';
  /** `Date.now()` when the call's budget runs out; `undefined` when it has none. */
  private readonly deadline: number | undefined;
  /** The caller's deadline (`grpc-timeout`), in `Date.now()` milliseconds. */
  private readonly callerDeadline: number | undefined;
  private timer: NodeJS.Timeout | undefined = undefined;
  /** Listener, timer and registry entry are gone. */
  private released = false;
  private callId: string | undefined = undefined;

  constructor(
    /** The arguments Nest handles the call with, the same for every interceptor of its chain. */
    readonly message: readonly unknown[],
    private readonly call: GrpcServerCall,
    /** `@GrpcStreamCall()`: the handler answers the call itself, and Nest only waits for its stream. */
    private readonly passThrough: boolean,
    private readonly handler: CallHandler,
    runtime: CancellationRuntime,
    /** The handler's own budget (`@RequestTimeout()`, `timeoutMs`), or `false`. */
    ownBudgetMs: number | false,
    /** The handler returns a Promise: after a cancellation it is watched until it settles. */
    private readonly watchesSettlement: boolean,
  ) {
    super(runtime);
    const now = Date.now();
    this.callerDeadline = deadlineOf(call);
    const own = ownBudgetMs === false ? undefined : now + ownBudgetMs;
    this.deadline =
      own === undefined || this.callerDeadline === undefined
        ? (own ?? this.callerDeadline)
        : Math.min(own, this.callerDeadline);
  }

  /** The call's id: made by the server, unique (on first read). */
  get id(): string {
    return (this.callId ??= newWorkId());
  }

  /** The call's `requestIdHeader` metadata entry, when it is one well-formed value. */
  get correlationId(): string | undefined {
    const header = this.runtime.options.requestIdHeader;
    return header === false ? undefined : correlationIdFrom(this.call.metadata?.get(header)[0]);
  }

  /** `package.Service/Method`. */
  get route(): string {
    return this.call.getPath?.().replace(/^\//, '') ?? 'grpc';
  }

  /** Milliseconds left until the call's deadline (0 once passed); `undefined` when it has none. */
  get remainingMs(): number | undefined {
    return this.deadline === undefined ? undefined : Math.max(0, this.deadline - Date.now());
  }

  /**
   * Runs the handler inside this scope, unless the call is already lost (it ended, its deadline passed) or
   * shutdown has begun (answered `UNAVAILABLE`: new work is refused while the work in flight drains). Called
   * once, when Nest subscribes to the interceptor's stream.
   */
  start(subscriber: Subscriber<unknown>): Unsubscribable {
    this.subscriber = subscriber;
    const call = this.call as ScopedCall;
    const { runtime } = this;
    if (call.cancelled) {
      this.cancel(endReasonOf(this.callerDeadline));
      return this;
    }
    if (runtime.signals.isDraining) {
      this.cancel(runtime.signals.drainReason());
      return this;
    }
    const remaining = this.remainingMs;
    if (remaining === 0) {
      this.cancel(new CancellationError('timeout', 'The call arrived with no time budget left'));
      return this;
    }
    runtime.registry.track(this);
    call[SCOPE] = this;
    call.on('cancelled', onCallCancelled);
    if (remaining !== undefined) {
      this.timer = setTimeout(onDeadline, remaining, this);
      this.timer.unref();
    }
    this.runHandler(this.handler, runtime.options.asyncContext ? this : undefined);
    return this;
  }

  /**
   * Cancels the call: aborts its signal with `reason`, stops listening to the handler's stream and answers
   * the call with the status that fits the reason (nothing when the call has ended). Does nothing once the
   * call was cancelled or has ended.
   */
  cancel(reason: CancellationError): void {
    if (this.reason !== undefined || this.released) return;
    this.abort(reason);
    this.answer(reason);
  }

  /** The call ended before its handler did (grpc-js's `'cancelled'`). */
  callEnded(): void {
    this.cancel(endReasonOf(this.callerDeadline));
  }

  /**
   * Ends the interceptor's stream for a cancellation. Nest answers a `@GrpcMethod()` / `@GrpcStreamMethod()`
   * call from the stream, so it fails with the status; a `@GrpcStreamCall()` handler answers its call itself
   * and Nest awaits the stream's last value, so that call is answered here and the stream ends with a value.
   */
  private answer(reason: CancellationError): void {
    const subscriber = this.subscriber;
    if (subscriber === undefined) return;
    const ended = this.call.cancelled;
    if (this.passThrough) {
      if (!ended) this.respondDirectly(new GrpcCancellationStatus(reason));
      subscriber.next(undefined);
      subscriber.complete();
      return;
    }
    if (ended) subscriber.complete();
    else subscriber.error(new GrpcCancellationStatus(reason));
  }

  /** A client stream's callback (the handler's second argument), else the call's `'error'` (duplex). */
  private respondDirectly(status: GrpcCancellationStatus): void {
    const callback = this.message[1];
    if (typeof callback === 'function') (callback as (error: unknown) => void)(status);
    else this.call.emit?.('error', status);
  }

  protected handlerValue(value: unknown): void {
    this.emitted = true;
    this.subscriber?.next(value);
  }

  /**
   * A failure caused by a cancellation (the reason, an `AbortError` whose cause it is, an outgoing call that
   * gave up with it) ends like the cancellation; so does a timeout failure (a downstream's
   * `DEADLINE_EXCEEDED`) once the budget is spent, or all but spent. Anything else goes to Nest's exception
   * filters as it is.
   */
  protected handlerFailed(err: unknown): void {
    let reason = findCancellationError(err);
    if (reason?.kind === 'client-disconnected' && !this.call.cancelled) {
      // Another caller left (work shared between calls): this one is still waiting for its answer.
      reason = new CancellationError('manual', 'Work this call depended on was cancelled', { cause: reason });
    }
    const remaining = this.remainingMs;
    if (
      reason === undefined &&
      remaining !== undefined &&
      remaining < DEADLINE_SLACK_MS &&
      isTimeoutFailure(err)
    ) {
      reason = new CancellationError('timeout', "The call's deadline passed", { cause: err });
    }
    if (reason !== undefined) this.cancel(reason);
    else this.subscriber?.error(err);
  }

  protected handlerCompleted(): void {
    this.subscriber?.complete();
  }

  /**
   * Teardown of the interceptor's stream, whichever way it ends: removes the listener, the timer and the
   * registry entry. Nest tears a streaming call's stream down when the call ends ('cancelled'), before this
   * scope's own listener hears it; a handler still running then is cancelled too, so that the work stops and
   * not only the subscription.
   */
  unsubscribe(): void {
    if (this.released) return;
    if (!this.handlerSettled && this.reason === undefined) {
      this.abort(
        this.call.cancelled
          ? endReasonOf(this.callerDeadline)
          : new CancellationError('manual', "The call's stream was unsubscribed before the handler finished"),
      );
    }
    this.released = true;
    this.subscriber = undefined;
    this.releaseTracked(this.watchesSettlement);
    const call = this.call as ScopedCall;
    call.removeListener('cancelled', onCallCancelled);
    call[SCOPE] = undefined;
    clearTimeout(this.timer);
    this.runtime.registry.untrack(this);
  }
}

/**
 * The scope of a gRPC call while its handler runs: how `@RequestSignal()` finds it without the
 * AsyncLocalStorage store (`asyncContext: false`), and how an interceptor applied a second time knows that
 * the call runs already.
 * @internal
 */
export function scopeOfGrpcCall(call: GrpcServerCall): GrpcCallScope | undefined {
  return (call as ScopedCall)[SCOPE];
}

/** One shared listener for every call: `this` is the call. */
function onCallCancelled(this: ScopedCall): void {
  this[SCOPE]?.callEnded();
}

function onDeadline(scope: GrpcCallScope): void {
  scope.cancel(new CancellationError('timeout', "The call's deadline passed"));
}
