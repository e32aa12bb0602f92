import type { ServerResponse } from 'node:http';
import type { CancellationError } from '../core/cancellation-error.js';
import type { ResolvedCancellationOptions } from '../module/cancellation.options.js';
import {
  ClientClosedRequestException,
  DeadlineExceededException,
  RequestCancelledException,
  ServiceShuttingDownException,
} from './outcome-exceptions.js';
import type { CancellationException } from './outcome-exceptions.js';

/**
 * What Nest's exception filters answer for a cancellation: shutdown 503 with `Retry-After` and
 * `Connection: close` (set on the response here, so that an application's filter that answers the exception
 * its own way keeps them), timeout `timeoutStatus`, client gone 499 (sent to nobody), manual 503.
 * @internal
 */
export function outcomeOf(
  reason: CancellationError,
  response: ServerResponse,
  options: ResolvedCancellationOptions,
): CancellationException {
  switch (reason.kind) {
    case 'shutdown':
      if (!response.headersSent) {
        response.setHeader('Retry-After', String(options.retryAfterSeconds));
        response.setHeader('Connection', 'close');
      }
      return new ServiceShuttingDownException(reason, options.retryAfterSeconds);
    case 'timeout':
      return new DeadlineExceededException(reason, options.timeoutStatus);
    case 'client-disconnected':
      return new ClientClosedRequestException(reason);
    case 'manual':
      return new RequestCancelledException(reason);
  }
}

/**
 * The client is gone: the response was closed before it was complete.
 * @internal
 */
export function isGone(response: ServerResponse): boolean {
  return response.destroyed && !response.writableFinished;
}
