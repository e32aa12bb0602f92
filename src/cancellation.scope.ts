import { HttpException, ServiceUnavailableException } from '@nestjs/common';
import type { CallHandler } from '@nestjs/common';
import { STATUS_CODES } from 'node:http';
import type { ServerResponse } from 'node:http';
import type { Observer, Subscriber, Subscription, Unsubscribable } from 'rxjs';
import { requestStorage } from './cancellation.constants.js';
import { CancellationError, findCancellationError } from './cancellation.error.js';
import type { CancellationLifecycle } from './cancellation.lifecycle.js';
import type { ResolvedCancellationOptions } from './cancellation.options.js';

/**
 * The status nginx made the convention for a request whose client closed the connection. Nothing can be
 * sent to that client: the status only tells exception filters and logs what happened.
 */
const CLIENT_CLOSED_REQUEST = 499;

/** Where a response keeps the scope of the request it answers, for the shared `'close'` listener. */
const SCOPE = Symbol('nestjs-cancellation.scope');

type ScopedResponse = ServerResponse & { [SCOPE]?: RequestScope };

/** The source of a streamed response body: what must be destroyed when the response cannot be finished. */
interface StreamSource {
  destroy(error?: Error): unknown;
}

/**
 * The state of one HTTP request in flight: its cancellation reason, its AbortSignal (created only when
 * somebody asks for it: most handlers never do), and the subscription to the route handler's stream.
 *
 * It is also the AsyncLocalStorage store of the request, the observer of the handler's stream and the
 * teardown of the interceptor's stream: one object per request, so that the per-request cost stays at one
 * allocation, one `'close'` listener and one entry in the application's in-flight registry.
 * @internal
 */
export class RequestScope implements Observer<unknown>, Unsubscribable {
  /** Why the request was cancelled; `undefined` while it is not. */
  reason: CancellationError | undefined = undefined;
  /** `performance.now()` when the interceptor took the request. */
  readonly startedAt = performance.now();
  /** `performance.now()` when it was cancelled. */
  abortedAt = 0;

  private controller: AbortController | undefined = undefined;
  private subscriber: Subscriber<unknown> | undefined = undefined;
  private inner: Subscription | undefined = undefined;
  private timer: NodeJS.Timeout | undefined = undefined;
  /** The handler's stream completed or failed. */
  private handlerSettled = false;
  /** Listener, timer and registry entry are gone. */
  private released = false;
  /** The stream the handler returned (a `StreamableFile`'s, a Readable), when it returned one. */
  private source: StreamSource | undefined = undefined;
  /**
   * The handler completed with a stream that the platform is now sending: the scope stays registered (shutdown
   * ends the response and destroys the source) until the response closes.
   */
  private sending = false;
  /** The handler's stream emitted a value (a Promise handler's result, an Observable's first value). */
  private emitted = false;
  /**
   * The request was answered (cancelled) while its handler's Promise is still pending: the subscription to it
   * is kept, only to learn when the handler settles, and whatever it emits is dropped.
   */
  private watching = false;
  /** The settling of the cancelled handler was reported. */
  private settleReported = false;
  private requestId: string | undefined = undefined;

  constructor(
    /** The platform's request object (Express `Request`, Fastify `FastifyRequest`). */
    readonly request: unknown,
    /** Node's response under the platform's one. */
    readonly response: ServerResponse,
    private readonly handler: CallHandler,
    private readonly lifecycle: CancellationLifecycle,
    /** The request's time budget in milliseconds (0: already spent), or `false` for none. */
    readonly timeoutMs: number | false,
    /**
     * The handler returns a Promise (an async method): after a cancellation its subscription is kept until
     * the Promise settles, to measure how long the work went on. An Observable is unsubscribed at once.
     */
    private readonly watchesSettlement: boolean,
  ) {}

  /** The request's id: from the `requestIdHeader` when valid, else generated (on first read). */
  get id(): string {
    return (this.requestId ??= this.lifecycle.requestIdOf(this.request));
  }

  /** The request's AbortSignal; aborted with a `CancellationError` when the request is cancelled. */
  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController();
      if (this.reason !== undefined) this.controller.abort(this.reason);
    }
    return this.controller.signal;
  }

  /** Whether the request was cancelled. Reading it creates nothing. */
  get isCancelled(): boolean {
    return this.reason !== undefined;
  }

  /** Milliseconds since the interceptor took the request. */
  get elapsedMs(): number {
    return performance.now() - this.startedAt;
  }

  /** Milliseconds left of the request's time budget (0 once spent); `undefined` when it has none. */
  get remainingMs(): number | undefined {
    return this.timeoutMs === false
      ? undefined
      : Math.max(0, this.startedAt + this.timeoutMs - performance.now());
  }

  /**
   * Runs the route handler inside this scope, unless the request is already lost (the client left during
   * guards, or shutdown began). Called once, when Nest subscribes to the interceptor's stream.
   */
  start(subscriber: Subscriber<unknown>): Unsubscribable {
    this.subscriber = subscriber;
    const response = this.response as ScopedResponse;
    if (isGone(response)) {
      this.cancel(new CancellationError('client-disconnected'));
      return this;
    }
    if (this.lifecycle.refuses(this.response)) {
      this.cancel(this.lifecycle.drainReason());
      return this;
    }
    if (this.timeoutMs === 0) {
      // The caller's propagated budget is already spent.
      this.cancel(new CancellationError('timeout', 'The request arrived with no time budget left'));
      return this;
    }
    this.lifecycle.track(this);
    response[SCOPE] = this;
    response.on('close', onResponseClose);
    if (this.timeoutMs !== false) {
      this.timer = setTimeout(onDeadline, this.timeoutMs, this);
      this.timer.unref();
    }
    if (this.lifecycle.options.asyncContext) requestStorage.run(this, RequestScope.subscribeHandler, this);
    else RequestScope.subscribeHandler(this);
    return this;
  }

  /** Runs inside the store, so that the handler and everything it awaits or schedules see this scope. */
  private static subscribeHandler(scope: RequestScope): void {
    scope.inner = scope.handler.handle().subscribe(scope);
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
    this.subscriber?.error(outcomeOf(reason, this.response, this.lifecycle.options));
  }

  /** Records the reason, aborts the signal (if anybody asked for it) and reports the cancellation. */
  private abort(reason: CancellationError): void {
    this.reason = reason;
    this.abortedAt = performance.now();
    this.controller?.abort(reason);
    this.lifecycle.reportCancelled(this, reason);
  }

  /** The handler's stream emitted: pass it on, noting a stream the platform will send as the body. */
  next(value: unknown): void {
    if (this.watching) {
      // The handler resolved after its request was answered. A stream it returned would never be sent:
      // destroy it, so that its file handle or cursor does not stay open.
      if (typeof value === 'object' && value !== null) streamSource(value)?.destroy();
      this.settleWatched();
      return;
    }
    this.emitted = true;
    if (typeof value === 'object' && value !== null) this.source = streamSource(value);
    this.subscriber?.next(value);
  }

  /**
   * The handler's stream failed. A failure caused by a cancellation (the reason itself, or e.g. the
   * `AbortError` of `fetch` or `timers/promises` whose `cause` it is) ends like the cancellation does, never
   * as a 500.
   */
  error(err: unknown): void {
    if (this.watching) {
      this.settleWatched();
      return;
    }
    this.handlerSettled = true;
    let reason = findCancellationError(err);
    if (reason?.kind === 'client-disconnected' && !isGone(this.response)) {
      // Another request's client left (work shared between requests, a coalesced cache fill): this client is
      // still connected, must get an answer, and its signal must not claim that it left.
      reason = new CancellationError('manual', 'Work this request depended on was cancelled', {
        cause: reason,
      });
    }
    if (reason === undefined && this.remainingMs === 0) {
      // The budget is spent and the timer has not fired yet: whatever failed now (typically a downstream
      // that was given the same deadline and gave up first) failed because time ran out.
      reason = new CancellationError('timeout', `The request ran out of time (${this.timeoutMs} ms)`, {
        cause: err,
      });
    }
    if (reason !== undefined) {
      this.cancel(reason);
      return;
    }
    this.closeConnectionIfDraining();
    this.subscriber?.error(err);
  }

  /** The handler's stream completed. */
  complete(): void {
    if (this.watching) {
      this.settleWatched();
      return;
    }
    this.handlerSettled = true;
    if (this.source !== undefined && !this.response.destroyed) {
      // The body is sent after this stream completes: keep watching the response until it closes. The time
      // budget was for producing the answer; a download that outlasts it is not cut short.
      this.sending = true;
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.closeConnectionIfDraining();
    this.subscriber?.complete();
  }

  /** While the application drains, a response (a result or an error alike) closes its keep-alive connection. */
  private closeConnectionIfDraining(): void {
    if (this.lifecycle.isDraining && !this.response.headersSent)
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
    if (
      this.reason !== undefined &&
      !this.handlerSettled &&
      !this.emitted &&
      this.watchesSettlement &&
      this.inner !== undefined
    ) {
      // The handler's Promise is still pending: unsubscribing would not stop it (only its signal can), and
      // would hide when it ends. Keep listening, to report when it settles.
      this.watching = true;
      this.lifecycle.linger(this);
    } else {
      this.inner?.unsubscribe();
      this.inner = undefined;
      if (!keep) this.settle();
    }
    if (!keep) this.detach();
  }

  /** The cancelled handler's Promise settled (or resolved to something that must not run): stop watching. */
  private settleWatched(): void {
    this.watching = false;
    const inner = this.inner;
    this.inner = undefined;
    inner?.unsubscribe();
    this.lifecycle.unlinger(this);
    this.settle();
  }

  /** Reports, once, that the handler of a cancelled request has settled. */
  private settle(): void {
    if (this.reason === undefined || this.settleReported) return;
    this.settleReported = true;
    this.lifecycle.reportSettled(this, this.reason, performance.now() - this.abortedAt);
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
    const response = this.response as ScopedResponse;
    response.removeListener('close', onResponseClose);
    response[SCOPE] = undefined;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.lifecycle.untrack(this);
  }
}

/**
 * The scope of the request a platform response (Express's, or Fastify's reply, whose `raw` is Node's) answers,
 * while its handler runs: how `@RequestSignal()` finds it without the AsyncLocalStorage store
 * (`asyncContext: false`).
 * @internal
 */
export function scopeOfResponse(response: unknown): RequestScope | undefined {
  const candidate = response as (ScopedResponse & { raw?: ScopedResponse }) | null | undefined;
  return candidate?.[SCOPE] ?? candidate?.raw?.[SCOPE];
}

/**
 * What Nest's exception filters answer for a cancellation: shutdown 503 with `Retry-After` and
 * `Connection: close`, timeout `timeoutStatus`, client gone 499 (sent to nobody), manual 503.
 * @internal
 */
export function outcomeOf(
  reason: CancellationError,
  response: ServerResponse,
  options: ResolvedCancellationOptions,
): HttpException {
  switch (reason.kind) {
    case 'shutdown':
      if (!response.headersSent) {
        response.setHeader('Retry-After', String(options.retryAfterSeconds));
        response.setHeader('Connection', 'close');
      }
      return new ServiceUnavailableException(reason.message, { cause: reason });
    case 'timeout':
      return new HttpException(
        {
          statusCode: options.timeoutStatus,
          message: reason.message,
          error: STATUS_CODES[options.timeoutStatus] ?? 'Timeout',
        },
        options.timeoutStatus,
        { cause: reason },
      );
    case 'client-disconnected':
      return new HttpException(
        { statusCode: CLIENT_CLOSED_REQUEST, message: reason.message, error: 'Client Closed Request' },
        CLIENT_CLOSED_REQUEST,
        { cause: reason },
      );
    case 'manual':
      return new ServiceUnavailableException(reason.message, { cause: reason });
  }
}

/**
 * The client is gone: the response was closed before it was complete.
 * @internal
 */
export function isGone(response: ServerResponse): boolean {
  return response.destroyed && !response.writableFinished;
}

/** One shared listener for every response: `this` is the response. */
function onResponseClose(this: ScopedResponse): void {
  const scope = this[SCOPE];
  if (scope === undefined) return;
  if (!this.writableFinished) scope.cancel(new CancellationError('client-disconnected'));
  scope.responseClosed();
}

/**
 * The stream a handler's result sends as the body: a `StreamableFile`'s (recognised by its shape, not by
 * `instanceof`, which two copies of `@nestjs/common` would defeat), or a Readable (Fastify sends those).
 */
function streamSource(value: object): StreamSource | undefined {
  const candidate = value as { getStream?: unknown; pipe?: unknown; destroy?: unknown };
  if (typeof candidate.getStream === 'function') {
    const stream = (candidate.getStream as () => Partial<StreamSource> | undefined).call(value);
    return typeof stream?.destroy === 'function' ? (stream as StreamSource) : undefined;
  }
  return typeof candidate.pipe === 'function' && typeof candidate.destroy === 'function'
    ? (value as StreamSource)
    : undefined;
}

function onDeadline(scope: RequestScope): void {
  scope.cancel(new CancellationError('timeout', `The request ran out of time (${scope.timeoutMs} ms)`));
}
