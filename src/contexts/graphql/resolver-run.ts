import type { CallHandler } from '@nestjs/common';
import type { Subscriber, Unsubscribable } from 'rxjs';
import type { CancellationError } from '../../core/cancellation-error.js';
import { HandlerScope } from '../../core/handler-scope.js';
import type { GraphQLRequestScope } from './graphql-request-scope.js';

/**
 * One resolver call of a GraphQL request: the observer of the resolver's stream and the teardown of the
 * interceptor's. It runs in its request's store and is cancelled with its request (its `reason` is the
 * request's). When the request is cancelled it fails at once with the reason, so that GraphQL can answer
 * without waiting for work that was told to stop; a resolver that returns a Promise stays watched until it
 * settles, so that the request's work is known to have ended.
 * @internal
 */
export class ResolverRun extends HandlerScope {
  private ended = false;

  constructor(
    private readonly scope: GraphQLRequestScope,
    private readonly handler: CallHandler,
    /** The resolver returns a Promise, which unsubscribing would not stop (an Observable it would). */
    private readonly watchesSettlement: boolean,
    /** The resolver call's execution context, the same for every interceptor of the call. */
    private readonly context: object,
  ) {
    super();
  }

  /** The request's reason: a resolver is cancelled with its request. */
  override get reason(): CancellationError | undefined {
    return this.scope.reason;
  }

  /** The request's remaining budget. */
  get remainingMs(): number | undefined {
    return this.scope.remainingMs;
  }

  start(subscriber: Subscriber<unknown>): Unsubscribable {
    const { scope } = this;
    if (scope.reason !== undefined) {
      this.ended = true;
      subscriber.error(scope.failure(scope.reason));
      return this;
    }
    this.subscriber = subscriber;
    scope.add(this);
    scope.starting = this.context;
    try {
      this.runHandler(this.handler, scope);
    } finally {
      scope.starting = undefined;
    }
    return this;
  }

  /** The request was cancelled: fail now. */
  cancel(reason: CancellationError): void {
    const subscriber = this.subscriber;
    this.subscriber = undefined;
    subscriber?.error(this.scope.failure(reason));
  }

  protected handlerValue(value: unknown): void {
    this.subscriber?.next(value);
  }

  protected handlerFailed(err: unknown): void {
    // Mapping may cancel the whole request (its budget is spent), which fails this run too.
    const failure = this.scope.failureOf(err);
    this.subscriber?.error(failure);
  }

  protected handlerCompleted(): void {
    this.subscriber?.complete();
  }

  /** Teardown of the interceptor's stream, whichever way it ends. */
  unsubscribe(): void {
    if (this.ended) return;
    this.subscriber = undefined;
    if (!this.releaseHandler(this.watchesSettlement)) this.end();
  }

  protected override watchEnded(): void {
    this.end();
  }

  private end(): void {
    this.ended = true;
    this.scope.resolverEnded(this);
  }
}
