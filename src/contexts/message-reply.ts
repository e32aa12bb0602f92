import type { CancellationError, CancellationKind } from '../core/cancellation-error.js';

/**
 * What the caller of a microservice message (`ClientProxy.send()`) receives as the error when the message was
 * cut by shutdown, or cancelled on purpose, while its connection was still open: the reason's kind, and
 * whether the call may be tried again elsewhere (another instance), instead of an empty answer that makes
 * `firstValueFrom()` reject with RxJS's `EmptyError`. A plain object, as Nest's transports send an RPC error.
 *
 * @example
 * ```ts
 * try {
 *   return await firstValueFrom(client.send('report', query));
 * } catch (err) {
 *   if ((err as CancelledMessageError).retryable) return retryOnAnotherInstance(query);
 *   throw err;
 * }
 * ```
 */
export interface CancelledMessageError {
  /** `'error'`, as in every error Nest's RPC exception filter sends. */
  readonly status: 'error';
  /** 503, as an HTTP request cut by shutdown is answered. */
  readonly statusCode: 503;
  /** Why the message was cut: `'shutdown'` (or `'manual'`, an operator's cancel). */
  readonly kind: CancellationKind;
  /** The reason's message, e.g. `The application is shutting down (SIGTERM)`. */
  readonly message: string;
  /** The handler's work was stopped, not done: the call may be retried (on another instance). */
  readonly retryable: true;
  /** How long to wait before retrying, in seconds (the module's `retryAfterSeconds`). */
  readonly retryAfterSeconds: number;
}

/** Nest's metadata key of a microservice handler's kind (`PATTERN_HANDLER_METADATA`): 1 message, 2 event. */
const HANDLER_KIND = 'microservices:handler_type';

/**
 * Whether a microservice handler answers its caller (`@MessagePattern()`), unlike an `@EventPattern()` one.
 * @internal
 */
export function answersCaller(handler: object): boolean {
  return Reflect.getMetadata?.(HANDLER_KIND, handler) === 1;
}

/**
 * The error a message cut by `reason` answers its caller with, or `undefined` when the reason leaves nobody to
 * answer (the caller left).
 * @internal
 */
export function cancelledMessageError(
  reason: CancellationError,
  retryAfterSeconds: number,
): CancelledMessageError | undefined {
  if (reason.kind !== 'shutdown' && reason.kind !== 'manual') return undefined;
  return {
    status: 'error',
    statusCode: 503,
    kind: reason.kind,
    message: reason.message,
    retryable: true,
    retryAfterSeconds,
  };
}

/**
 * What a message scope fails its handler's stream with when it cuts a message whose caller waits for an
 * answer: the exception filter of the module turns it into the caller's `CancelledMessageError`.
 * @internal
 */
export class MessageCut extends Error {
  constructor(
    readonly reply: CancelledMessageError,
    reason: CancellationError,
  ) {
    super(reason.message, { cause: reason });
    this.name = 'MessageCut';
  }
}
