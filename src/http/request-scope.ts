import type { CallHandler } from '@nestjs/common';
import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Subscriber, Unsubscribable } from 'rxjs';
import { CancellationError } from '../core/cancellation-error.js';
import type { CancellationRuntime } from '../module/cancellation-runtime.js';
import { correlationIdOf, newWorkId } from '../registry/request-id.js';
import { TrackedScope } from '../registry/tracked-scope.js';
import { failureReason, isGone, outcomeOf } from './request-outcome.js';
import {
  Listening,
  listenToResponse,
  onDeadline,
  unwatchResponse,
  watchResponse,
  watcherOf,
} from './response-watch.js';
import type { WatchedRequest } from './response-watch.js';
import { streamSource } from './stream-source.js';
import type { StreamSource } from './stream-source.js';

/**
 * One HTTP request in flight: its cancellation reason, its AbortSignal, the subscription to the route
 * handler's stream, and what ends it: the response closing early, the deadline, shutdown, `cancel(id)`.
 *
 * It is also the AsyncLocalStorage store of the request, the observer of the handler's stream and the
 * teardown of the interceptor's stream: one object per request and one entry in the application's in-flight
 * registry; a client's hang-up is heard by one listener per connection (see `watchResponse`).
 * @internal
 */
export class RequestScope extends TrackedScope implements WatchedRequest {
  private timer: NodeJS.Timeout | undefined = undefined;
  /** Listener, timer and registry entry are gone. */
  private released = false;
  /** The stream the handler returned (a `StreamableFile`'s, a Readable), when it returned one. */
  private source: StreamSource | undefined = undefined;
  /**
   * The handler completed with a stream that the platform is now sending: the scope stays registered (shutdown
   * ends the response and destroys the source) until the response closes.
   */
  private sending = false;
  private requestId: string | undefined = undefined;
  /** The connection the response is written to (when the handler starts), and whether the response has a
   * `'close'` listener of its own (see `watchResponse`). */
  private socket: Socket | null = null;
  private listening = Listening.None;

  constructor(
    /** The platform's request object (Express `Request`, Fastify `FastifyRequest`). */
    readonly request: unknown,
    /** Node's response under the platform's one. */
    readonly response: ServerResponse,
    private readonly handler: CallHandler,
    runtime: CancellationRuntime,
    /** The request's time budget in milliseconds (0: already spent), or `false` for none. */
    readonly timeoutMs: number | false,
    /**
     * The handler returns a Promise (an async method): after a cancellation its subscription is kept until
     * the Promise settles, to measure how long the work went on. An Observable is unsubscribed at once.
     */
    private readonly watchesSettlement: boolean,
  ) {
    super(runtime);
  }

  /** The request's id: made by the server, unique (on first read). */
  get id(): string {
    return (this.requestId ??= newWorkId());
  }

  /** The request's `requestIdHeader` value, when it carried a well-formed one. */
  get correlationId(): string | undefined {
    return correlationIdOf(this.request, this.runtime.options.requestIdHeader);
  }

  /** The request method. */
  get method(): string {
    return this.runtime.platform.method(this.request);
  }

  /** The route pattern that matched, else the URL's path. */
  get route(): string {
    return this.runtime.platform.route(this.request);
  }

  /** Milliseconds left of the budget (0 once spent); `undefined` without one, or once the response streams. */
  get remainingMs(): number | undefined {
    return this.timeoutMs === false || this.response.headersSent
      ? undefined
      : Math.max(0, this.startedAt + this.timeoutMs - performance.now());
  }

  /**
   * Runs the route handler inside this scope, unless the request is already lost (the client left during
   * guards, or shutdown began). Called once, when Nest subscribes to the interceptor's stream.
   */
  start(subscriber: Subscriber<unknown>): Unsubscribable {
    this.subscriber = subscriber;
    const { response, runtime } = this;
    const lost = isGone(response)
      ? new CancellationError('client-disconnected')
      : runtime.refuses(response)
        ? runtime.signals.drainReason()
        : this.timeoutMs === 0 // the caller's propagated budget is already spent
          ? new CancellationError('timeout', 'The request arrived with no time budget left')
          : undefined;
    if (lost !== undefined) {
      this.cancel(lost);
      return this;
    }
    runtime.registry.track(this);
    this.socket = response.socket;
    this.listening = watchResponse(this);
    if (this.timeoutMs !== false) {
      this.timer = setTimeout(onDeadline, this.timeoutMs, this);
      this.timer.unref();
    }
    this.runHandler(this.handler, runtime.options.asyncContext ? this : undefined);
    return this;
  }

  /**
   * Cancels the request: aborts its signal with `reason`, stops listening to the handler's stream (the work
   * itself stops where it honours the signal) and ends the interceptor's stream with the response that fits
   * the reason. Does nothing once the request was cancelled or has ended.
   */
  cancel(reason: CancellationError): void {
    if (this.reason !== undefined || this.released) return;
    this.abort(reason);
    if (this.sending) {
      // The headers are out: no status can tell the client. Cutting the connection shows it the body is
      // incomplete (ending the response would pass a truncated download off as a whole one), and the source
      // is destroyed so that no file handle or cursor stays open. The response's 'close' releases the scope.
      this.source?.destroy();
      this.response.destroy();
      this.settle();
      return;
    }
    this.subscriber?.error(outcomeOf(reason, this.response, this.runtime.options));
  }

  /** The handler's stream emitted: pass it on, noting a stream the platform will send as the body. */
  protected handlerValue(value: unknown): void {
    this.emitted = true;
    this.source = streamSource(value);
    this.subscriber?.next(value);
  }

  /**
   * The handler resolved after its request was answered. A stream it returned would never be sent: destroy
   * it, so that its file handle or cursor does not stay open.
   */
  protected override droppedAfterCancel(value: unknown): void {
    streamSource(value)?.destroy();
  }

  /**
   * The handler's stream failed. A failure caused by a cancellation (the reason itself, or e.g. the
   * `AbortError` of `fetch` or `timers/promises` whose `cause` it is) ends like the cancellation does, never
   * as a 500; so does a timeout failure (`isTimeoutFailure`) once the budget is spent.
   */
  protected handlerFailed(err: unknown): void {
    const reason = failureReason(err, this.response, this.remainingMs === 0, this.timeoutMs);
    if (reason !== undefined) {
      this.cancel(reason);
      return;
    }
    this.closeConnectionIfDraining();
    this.subscriber?.error(err);
  }

  /** The handler's stream completed. */
  protected handlerCompleted(): void {
    if (this.source !== undefined && !this.response.destroyed) {
      // The body is sent after this stream completes: keep watching the response until it closes. The time
      // budget was for producing the answer; a download that outlasts it is not cut short.
      this.sending = true;
      this.listenToResponse();
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.closeConnectionIfDraining();
    this.subscriber?.complete();
  }

  /** Listens to the response's own `'close'` as well: for a scope released when its response is sent. */
  protected listenToResponse(): void {
    if (!(this.listening & Listening.Response)) listenToResponse(this);
    this.listening |= Listening.Response;
  }

  /** While the application drains, a response (a result or an error alike) closes its keep-alive connection. */
  private closeConnectionIfDraining(): void {
    if (this.runtime.signals.isDraining && !this.response.headersSent)
      this.response.setHeader('Connection', 'close');
  }

  /**
   * Teardown of the interceptor's stream, whichever way it ends: removes the listener, the timer and the
   * registry entry. A stream torn down from outside while the handler still runs (Nest stopping an
   * Observable for a client that left, an outer interceptor's `timeout()`) aborts the signal as well, so
   * that the work stops too and not only the subscription.
   */
  unsubscribe(): void {
    if (this.released) return;
    if (!this.handlerSettled && this.reason === undefined) {
      this.abort(
        isGone(this.response)
          ? new CancellationError('client-disconnected')
          : new CancellationError(
              'manual',
              'The response stream was unsubscribed before the handler finished',
            ),
      );
    }
    // A scope kept for a streamed body is released when the response closes.
    const keep = this.sending;
    if (!keep) this.released = true;
    this.subscriber = undefined;
    this.releaseTracked(this.watchesSettlement, !keep);
    if (!keep) this.detach();
  }

  /** The response closed, finished or not: a scope kept for a streamed body is done. */
  responseClosed(): void {
    if (!this.sending || this.released) return;
    this.released = true;
    this.detach();
  }

  /** Removes the listener, the timer and the registry entry. */
  private detach(): void {
    this.source = undefined;
    unwatchResponse(this, this.socket, this.listening);
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.runtime.registry.untrack(this);
  }
}

/**
 * The scope of the request a platform response (Express's, or Fastify's reply, whose `raw` is Node's) answers,
 * while its handler runs: how `@RequestSignal()` finds it without the AsyncLocalStorage store
 * (`asyncContext: false`), and how an interceptor applied a second time knows that the request runs already.
 * @internal
 */
export function scopeOfResponse(response: unknown): RequestScope | undefined {
  return watcherOf(response) as RequestScope | undefined;
}
