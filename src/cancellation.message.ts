import { Logger } from '@nestjs/common';
import type { CallHandler, ExecutionContext } from '@nestjs/common';
import { Observable } from 'rxjs';
import type { Observer, Subscriber, Subscription, Unsubscribable } from 'rxjs';
import { requestStorage } from './cancellation.constants.js';
import { CancellationError, findCancellationError } from './cancellation.error.js';
import type { CancellationLifecycle } from './cancellation.lifecycle.js';

/**
 * The connection a message came over, as far as cancellation needs it: a `ws` WebSocket (`'close'`,
 * `readyState`), a socket.io Socket (`'disconnect'`, `connected`) or a `net.Socket` of the TCP transport
 * (`'close'`, `destroyed`).
 */
interface Connection {
  on(event: string, listener: () => void): unknown;
  removeListener(event: string, listener: () => void): unknown;
  readyState?: unknown;
  connected?: unknown;
  destroyed?: unknown;
}

/** Where a connection keeps the scopes of its messages being handled, for its one shared listener. */
const SCOPES = Symbol('nestjs-cancellation.message-scopes');

interface Watched {
  /** The messages of this connection being handled. */
  readonly scopes: Set<MessageScope>;
  readonly event: string;
  readonly listener: () => void;
}

type WatchedConnection = Connection & { [SCOPES]?: Watched };

/** `ws`' `WebSocket.CLOSING`: the socket is closing or closed. */
const WS_CLOSING = 2;

/**
 * The state of one message being handled (a WebSocket gateway's `@SubscribeMessage()`, a microservice's
 * `@MessagePattern()` / `@EventPattern()`): the AsyncLocalStorage store `CancellationService` reads inside the
 * handler, whose signal aborts when the connection the message came over closes or the application shuts
 * down. The connection has one listener however many of its messages are in flight, removed with the last;
 * each scope also listens to the shutdown signal until its handler ends. One client's connection closing
 * cancels only that client's messages.
 *
 * A cancelled message ends its handler's stream without a reply and without an error: the client is gone, or
 * the application is shutting down and closes its connections. A verbose line logs it, as for HTTP requests.
 * @internal
 */
export class MessageScope implements Observer<unknown>, Unsubscribable {
  reason: CancellationError | undefined = undefined;
  readonly startedAt = performance.now();
  /** Messages have no time budget. */
  readonly remainingMs = undefined;

  private controller: AbortController | undefined = undefined;
  private subscriber: Subscriber<unknown> | undefined = undefined;
  private inner: Subscription | undefined = undefined;
  private released = false;
  /** The handler's stream completed or failed. */
  private handlerSettled = false;
  private readonly onShutdown = (): void => this.cancel(this.lifecycle.shutdownReason());

  constructor(
    /** The arguments Nest handles the message with, the same for every interceptor of its chain. */
    readonly message: readonly unknown[],
    private readonly connection: Connection | undefined,
    private readonly handler: CallHandler,
    private readonly lifecycle: CancellationLifecycle,
    /** `ws` or `rpc` and the message's pattern, for the log line. */
    private readonly label: string,
  ) {}

  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController();
      if (this.reason !== undefined) this.controller.abort(this.reason);
    }
    return this.controller.signal;
  }

  get isCancelled(): boolean {
    return this.reason !== undefined;
  }

  start(subscriber: Subscriber<unknown>): Unsubscribable {
    this.subscriber = subscriber;
    const { connection, lifecycle } = this;
    if (connection !== undefined && isClosed(connection)) {
      this.cancel(new CancellationError('client-disconnected'));
      return this;
    }
    if (lifecycle.isShuttingDown) {
      this.cancel(lifecycle.shutdownReason());
      return this;
    }
    if (connection !== undefined) watch(connection).scopes.add(this);
    lifecycle.shutdownSignal.addEventListener('abort', this.onShutdown, { once: true });
    requestStorage.run(this, MessageScope.subscribeHandler, this);
    return this;
  }

  private static subscribeHandler(scope: MessageScope): void {
    scope.inner = scope.handler.handle().subscribe(scope);
  }

  /** Aborts the signal and ends the handler's stream quietly (nobody is left to answer). */
  cancel(reason: CancellationError): void {
    if (this.reason !== undefined || this.released) return;
    this.reason = reason;
    this.controller?.abort(reason);
    if (this.lifecycle.options.logCancellations) {
      new Logger('Cancellation').verbose(
        `${this.label} cancelled (${reason.kind}) after ${Math.round(performance.now() - this.startedAt)} ms`,
      );
    }
    this.subscriber?.complete();
  }

  next(value: unknown): void {
    this.subscriber?.next(value);
  }

  /** A failure caused by the cancellation (the reason, or an `AbortError` whose cause it is) ends quietly. */
  error(err: unknown): void {
    this.handlerSettled = true;
    const reason = findCancellationError(err);
    if (reason !== undefined && this.reason !== undefined) {
      this.subscriber?.complete();
      return;
    }
    if (reason !== undefined) {
      this.cancel(reason);
      return;
    }
    this.subscriber?.error(err);
  }

  complete(): void {
    this.handlerSettled = true;
    this.subscriber?.complete();
  }

  /**
   * Teardown, whichever way the stream ends: removes this message's listeners. A stream torn down while the
   * handler still runs (the gateway stops listening to a client whose socket closed, before this scope's own
   * listener hears it) aborts the signal too, so that the work stops and not only the subscription.
   */
  unsubscribe(): void {
    if (this.released) return;
    if (!this.handlerSettled && this.reason === undefined) {
      const { connection } = this;
      this.cancel(
        connection !== undefined && isClosed(connection)
          ? new CancellationError('client-disconnected')
          : new CancellationError(
              'manual',
              'The message stream was unsubscribed before the handler finished',
            ),
      );
    }
    this.released = true;
    this.inner?.unsubscribe();
    this.inner = undefined;
    this.subscriber = undefined;
    this.lifecycle.shutdownSignal.removeEventListener('abort', this.onShutdown);
    const watched = (this.connection as WatchedConnection | undefined)?.[SCOPES];
    if (watched === undefined) return;
    watched.scopes.delete(this);
    if (watched.scopes.size === 0) unwatch(this.connection as WatchedConnection, watched);
  }
}

function isClosed(connection: Connection): boolean {
  if (typeof connection.readyState === 'number') return connection.readyState >= WS_CLOSING;
  if (typeof connection.connected === 'boolean') return !connection.connected;
  return connection.destroyed === true;
}

/** The connection's shared listener, installed with its first message in flight. */
function watch(connection: WatchedConnection): Watched {
  let watched = connection[SCOPES];
  if (watched === undefined) {
    const scopes = new Set<MessageScope>();
    const listener = (): void => {
      const reason = new CancellationError('client-disconnected');
      // Cancelling ends the stream, whose teardown removes the scope: deleting while iterating is safe.
      for (const scope of scopes) scope.cancel(reason);
    };
    // socket.io reports a client leaving as 'disconnect'; `ws` and `net` sockets as 'close'.
    const event = typeof connection.connected === 'boolean' ? 'disconnect' : 'close';
    connection.on(event, listener);
    watched = { scopes, event, listener };
    connection[SCOPES] = watched;
  }
  return watched;
}

function unwatch(connection: WatchedConnection, watched: Watched): void {
  connection.removeListener(watched.event, watched.listener);
  connection[SCOPES] = undefined;
}

/** The connection of a WebSocket message (the gateway's client), or of a TCP microservice message. */
function connectionOf(context: ExecutionContext, type: string): Connection | undefined {
  const candidate =
    type === 'ws'
      ? context.getArgByIndex<unknown>(0)
      : (context
          .getArgByIndex<{ getSocketRef?: () => { netSocket?: unknown } } | undefined>(1)
          ?.getSocketRef?.()?.netSocket ?? undefined);
  const connection = candidate as Partial<Connection> | undefined;
  return typeof connection?.on === 'function' && typeof connection.removeListener === 'function'
    ? (connection as Connection)
    : undefined;
}

function patternOf(context: ExecutionContext, type: string): string {
  // A gateway's pattern is on its arguments host; a microservice's on the transport's context (TcpContext...).
  const host: unknown = type === 'ws' ? context.switchToWs() : context.getArgByIndex(1);
  const pattern: unknown = (host as { getPattern?: () => unknown } | undefined)?.getPattern?.();
  return typeof pattern === 'string' ? pattern : (JSON.stringify(pattern) ?? 'message');
}

/**
 * The interceptor's path for a WebSocket message (`ws`) or a microservice message (`rpc`): runs the handler in
 * a `MessageScope`. Other context types (custom ones) pass through.
 * @internal
 */
export function interceptMessage(
  context: ExecutionContext,
  next: CallHandler,
  lifecycle: CancellationLifecycle,
): Observable<unknown> {
  const type = context.getType<string>();
  if (type !== 'ws' && type !== 'rpc') return next.handle();
  const message = context.getArgs();
  // Nest 11 runs no global interceptor on gateways, so they take `@UseInterceptors(CancellationInterceptor)`;
  // on Nest 12 that one runs inside the global one's scope for the same message, and leaves the message to it.
  // Compared by shape, not `instanceof`: the scope may come from the package's other build (ESM or CommonJS).
  if ((requestStorage.getStore() as { message?: unknown } | undefined)?.message === message) {
    return next.handle();
  }
  const scope = new MessageScope(
    message,
    connectionOf(context, type),
    next,
    lifecycle,
    `${type.toUpperCase()} ${patternOf(context, type)}`,
  );
  return new Observable((subscriber) => scope.start(subscriber));
}
