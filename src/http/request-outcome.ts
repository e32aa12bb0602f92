import { HttpException, ServiceUnavailableException } from '@nestjs/common';
import { STATUS_CODES } from 'node:http';
import type { ServerResponse } from 'node:http';
import type { CancellationError } from '../core/cancellation-error.js';
import type { ResolvedCancellationOptions } from '../module/cancellation.options.js';

/**
 * The status nginx made the convention for a request whose client closed the connection. Nothing can be
 * sent to that client: the status only tells exception filters and logs what happened.
 */
const CLIENT_CLOSED_REQUEST = 499;

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
