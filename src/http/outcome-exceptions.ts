import { HttpException } from '@nestjs/common';
import { STATUS_CODES } from 'node:http';
import type { CancellationError, CancellationKind } from '../core/cancellation-error.js';

/**
 * The status nginx made the convention for a request whose client closed the connection. Nothing can be
 * sent to that client: the status only tells exception filters and logs what happened.
 */
const CLIENT_CLOSED_REQUEST = 499;

/** The body Nest's own HTTP exceptions have: `{ statusCode, message, error }`. */
function bodyOf(status: number, reason: CancellationError, error?: string): Record<string, unknown> {
  return { statusCode: status, message: reason.message, error: error ?? STATUS_CODES[status] ?? 'Error' };
}

/**
 * What a cancelled HTTP request is answered with: the base of the four outcome exceptions below, so that an
 * exception filter can `@Catch(CancellationException)` every cancellation, or one subclass for one kind. The
 * interceptor fails the route's stream with one of them (and so does a handler's rethrown abort), and they
 * reach the application's exception filters like any `HttpException`; Nest's own filter answers each with its
 * status and body, and logs none of them.
 *
 * @example
 * ```ts
 * @Catch(CancellationException)
 * export class CancellationFilter implements ExceptionFilter {
 *   catch(exception: CancellationException, host: ArgumentsHost): void {
 *     metrics.increment(`cancelled.${exception.kind}`);
 *     host.switchToHttp().getResponse<Response>().status(exception.getStatus()).json(exception.getResponse());
 *   }
 * }
 * ```
 */
export abstract class CancellationException extends HttpException {
  /** Why the request was cancelled: the `reason` its signal aborted with (also the exception's `cause`). */
  readonly reason: CancellationError;

  /**
   * @param reason the cancellation it answers
   * @param status the HTTP status
   * @param error the body's `error` field; by default the status's name
   */
  protected constructor(reason: CancellationError, status: number, error?: string) {
    super(bodyOf(status, reason, error), status, { cause: reason });
    this.reason = reason;
  }

  /** The reason's kind: `'client-disconnected'`, `'shutdown'`, `'timeout'` or `'manual'`. */
  get kind(): CancellationKind {
    return this.reason.kind;
  }
}

/**
 * The client closed the connection before its response was sent (`kind: 'client-disconnected'`): status 499,
 * nginx's "Client Closed Request". Nothing can reach that client; the status tells exception filters and logs
 * what happened.
 */
export class ClientClosedRequestException extends CancellationException {
  /** @param reason the `client-disconnected` cancellation */
  constructor(reason: CancellationError) {
    super(reason, CLIENT_CLOSED_REQUEST, 'Client Closed Request');
  }
}

/**
 * The application is shutting down (`kind: 'shutdown'`): 503. The response already carries `Retry-After`
 * (`retryAfterSeconds`) and `Connection: close` when the exception reaches the filters, so that a filter
 * answering it its own way keeps them.
 */
export class ServiceShuttingDownException extends CancellationException {
  /**
   * @param reason the `shutdown` cancellation
   * @param retryAfterSeconds what the `Retry-After` header says
   */
  constructor(
    reason: CancellationError,
    /** The `Retry-After` the response carries, in seconds. */
    readonly retryAfterSeconds: number,
  ) {
    super(reason, 503);
  }
}

/**
 * The request's time budget ran out (`kind: 'timeout'`): `@RequestTimeout()`, `timeoutMs`, or a shorter budget
 * the caller propagated. Its status is the module's `timeoutStatus` (504 unless configured otherwise).
 */
export class DeadlineExceededException extends CancellationException {
  /**
   * @param reason the `timeout` cancellation
   * @param status the module's `timeoutStatus`
   */
  constructor(reason: CancellationError, status: number) {
    super(reason, status, STATUS_CODES[status] ?? 'Timeout');
  }
}

/**
 * The request was cancelled on purpose (`kind: 'manual'`): by an operator (`CancellationRegistry.cancel()`,
 * the admin controller), or because work it depended on was cancelled. 503, with the reason's message.
 */
export class RequestCancelledException extends CancellationException {
  /** @param reason the `manual` cancellation */
  constructor(reason: CancellationError) {
    super(reason, 503);
  }
}
