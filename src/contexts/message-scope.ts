import { Logger } from '@nestjs/common';
import type { CallHandler } from '@nestjs/common';
import type { Subscriber, Unsubscribable } from 'rxjs';
import { CancellationError, findCancellationError } from '../core/cancellation-error.js';
import { HandlerScope } from '../core/handler-scope.js';
import type { CancellationRuntime } from '../module/cancellation-runtime.js';
import { isClosed, unwatchConnection, watchConnection } from './message-connection.js';
import { cancelledMessageError, MessageCut } from './message-reply.js';
import type { Connection } from './message-connection.js';

/**
 * The state of one message being handled (a WebSocket gateway's `@SubscribeMessage()`, a microservice's
 * `@MessagePattern()` / `@EventPattern()`): the AsyncLocalStorage store `CancellationService` reads inside the
 * handler, whose signal aborts when the connection the message came over closes or the application shuts
 * down. Each scope listens to the shutdown signal until its handler ends. One client's connection closing
 * cancels only that client's messages.
 *
 * A cancelled message ends its handler's stream without a reply and without an error when its client is gone.
 * A microservice message whose caller waits for an answer (`@MessagePattern()`) and is cut by shutdown (or an
 * operator) while the connection is open fails instead, with a `CancelledMessageError` the caller can act on
 * (retry elsewhere). A verbose line logs it, as for HTTP requests.
 * @internal
 */
export class MessageScope extends HandlerScope {
  /** Messages have no time budget. */
  readonly remainingMs = undefined;

  private released = false;
  private readonly onShutdown = (): void => this.cancel(this.runtime.signals.shutdownReason());

  constructor(
    /** The arguments Nest handles the message with, the same for every interceptor of its chain. */
    readonly message: readonly unknown[],
    private readonly connection: Connection | undefined,
    private readonly handler: CallHandler,
    private readonly runtime: CancellationRuntime,
    /** `ws` or `rpc` and the message's pattern, for the log line. */
    private readonly label: string,
    /** The handler answers its caller (a microservice's `@MessagePattern()`), who waits for a reply. */
    private readonly answers = false,
  ) {
    super();
  }

  start(subscriber: Subscriber<unknown>): Unsubscribable {
    this.subscriber = subscriber;
    const { connection, runtime } = this;
    if (connection !== undefined && isClosed(connection)) {
      this.cancel(new CancellationError('client-disconnected'));
      return this;
    }
    if (runtime.signals.isShuttingDown) {
      this.cancel(runtime.signals.shutdownReason());
      return this;
    }
    if (connection !== undefined) watchConnection(connection, this);
    runtime.signals.shutdownSignal.addEventListener('abort', this.onShutdown, { once: true });
    this.runHandler(this.handler, this);
    return this;
  }

  /** Aborts the signal and ends the handler's stream quietly (nobody is left to answer). */
  cancel(reason: CancellationError): void {
    if (this.reason !== undefined || this.released) return;
    this.abortWith(reason);
    if (this.runtime.options.logCancellations) {
      new Logger('Cancellation').verbose(
        `${this.label} cancelled (${reason.kind}) after ${Math.round(this.elapsedMs)} ms`,
      );
    }
    const { connection } = this;
    const reply =
      this.answers && (connection === undefined || !isClosed(connection))
        ? cancelledMessageError(reason, this.runtime.options.retryAfterSeconds)
        : undefined;
    if (reply === undefined) this.subscriber?.complete();
    else this.subscriber?.error(new MessageCut(reply, reason));
  }

  protected handlerValue(value: unknown): void {
    this.subscriber?.next(value);
  }

  /** A failure caused by the cancellation (the reason, or an `AbortError` whose cause it is) ends quietly. */
  protected handlerFailed(err: unknown): void {
    const reason = findCancellationError(err);
    if (reason !== undefined && this.reason !== undefined) {
      // Answered already, by cancel().
      this.subscriber?.complete();
      return;
    }
    if (reason !== undefined) {
      this.cancel(reason);
      return;
    }
    this.subscriber?.error(err);
  }

  protected handlerCompleted(): void {
    this.subscriber?.complete();
  }

  /**
   * Teardown, whichever way the stream ends: removes this message's listeners. A stream torn down while the
   * handler still runs (the gateway stops listening to a client whose socket closed, before this scope's own
   * listener hears it) aborts the signal too, so that the work stops and not only the subscription.
   */
  unsubscribe(): void {
    if (this.released) return;
    const { connection } = this;
    if (!this.handlerSettled && this.reason === undefined) {
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
    this.releaseHandler(false);
    this.subscriber = undefined;
    this.runtime.signals.shutdownSignal.removeEventListener('abort', this.onShutdown);
    if (connection !== undefined) unwatchConnection(connection, this);
  }
}
