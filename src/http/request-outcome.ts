import type { ServerResponse } from 'node:http';
import { CancellationError, findCancellationError } from '../core/cancellation-error.js';
import { isTimeoutFailure } from '../core/timeout-failure.js';
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

/**
 * The cancellation a handler's failure stands for, if any: the reason itself, or e.g. the `AbortError` of
 * `fetch` or `timers/promises` whose `cause` it is; a timeout failure (`isTimeoutFailure`) once the budget is
 * `spent`. Anything else (a `NotFoundException`, a bug) is answered as what it is: `undefined`.
 * @internal
 */
export function failureReason(
  err: unknown,
  response: ServerResponse,
  spent: boolean,
  timeoutMs: number | false,
): CancellationError | undefined {
  const reason = findCancellationError(err);
  if (reason?.kind === 'client-disconnected' && !isGone(response)) {
    // Another request's client left (work shared between requests, a coalesced cache fill): this client is
    // still connected, must get an answer, and its signal must not claim that it left.
    return new CancellationError('manual', 'Work this request depended on was cancelled', { cause: reason });
  }
  if (reason === undefined && spent && isTimeoutFailure(err)) {
    // The budget is spent and the timer has not fired yet: a downstream that was given the same deadline
    // gave up first.
    return new CancellationError('timeout', `The request ran out of time (${timeoutMs} ms)`, { cause: err });
  }
  return reason;
}
