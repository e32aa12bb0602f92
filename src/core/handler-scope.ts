import type { CallHandler } from '@nestjs/common';
import type { Observer, Subscriber, Subscription, Unsubscribable } from 'rxjs';
import { scopeStorage } from './async-context.js';
import type { ScopeState } from './async-context.js';
import { Scope } from './scope.js';

/**
 * A scope that runs a handler's stream (a route handler, a message handler, a resolver, a job): it is the
 * observer of that stream and the teardown of the interceptor's, so that running a handler costs no object
 * besides the scope itself. Subclasses say what a value, a failure and a completion mean for their kind of
 * work; this class owns the subscription and, once the work is cancelled, the watch on a handler's Promise
 * that is still pending (unsubscribing would not stop it, only its signal can, and would hide when it ends).
 * @internal
 */
export abstract class HandlerScope extends Scope implements Observer<unknown>, Unsubscribable {
  /** The interceptor's subscriber, while the interceptor's stream is open. */
  protected subscriber: Subscriber<unknown> | undefined = undefined;
  /** The handler's stream completed or failed. */
  protected handlerSettled = false;
  private inner: Subscription | undefined = undefined;
  /** Cancelled while the handler's Promise is pending: kept subscribed only to learn when it settles. */
  private watching = false;

  /**
   * Subscribes to the handler's stream, inside `store` when given, so that the handler and everything it
   * awaits or schedules see it.
   */
  protected runHandler(handler: CallHandler, store: ScopeState | undefined): void {
    if (store === undefined) HandlerScope.subscribe(this, handler);
    else scopeStorage.run(store, HandlerScope.subscribe, this, handler);
  }

  private static subscribe(scope: HandlerScope, handler: CallHandler): void {
    scope.inner = handler.handle().subscribe(scope);
  }

  /** The handler's stream emitted. */
  next(value: unknown): void {
    if (this.watching) {
      this.droppedAfterCancel(value);
      this.endWatch();
      return;
    }
    this.handlerValue(value);
  }

  /** The handler's stream failed. */
  error(err: unknown): void {
    if (this.watching) {
      this.endWatch();
      return;
    }
    this.handlerSettled = true;
    this.handlerFailed(err);
  }

  /** The handler's stream completed. */
  complete(): void {
    if (this.watching) {
      this.endWatch();
      return;
    }
    this.handlerSettled = true;
    this.handlerCompleted();
  }

  /** Teardown of the interceptor's stream. */
  abstract unsubscribe(): void;

  /**
   * Stops listening to the handler's stream, or, when the work was cancelled and `pending` says the handler
   * is a Promise that has not settled, keeps listening only to learn when it does (then `watchEnded()`).
   * Returns whether it keeps watching.
   */
  protected releaseHandler(pending: boolean): boolean {
    if (pending && this.reason !== undefined && !this.handlerSettled && this.inner !== undefined) {
      this.watching = true;
      return true;
    }
    this.stopHandler();
    return false;
  }

  /** Unsubscribes from the handler's stream. */
  protected stopHandler(): void {
    const inner = this.inner;
    this.inner = undefined;
    inner?.unsubscribe();
  }

  private endWatch(): void {
    this.watching = false;
    this.stopHandler();
    this.watchEnded();
  }

  /** What the handler emitted, while the interceptor's stream is open. */
  protected abstract handlerValue(value: unknown): void;
  /** The handler failed, while the interceptor's stream is open. */
  protected abstract handlerFailed(err: unknown): void;
  /** The handler completed, while the interceptor's stream is open. */
  protected abstract handlerCompleted(): void;
  /** A value the cancelled handler produced after all, which nobody will take. */
  protected droppedAfterCancel(_value: unknown): void {}
  /** The watched handler settled. */
  protected watchEnded(): void {}
}
