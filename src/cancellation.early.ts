import { ArgumentsHost, Catch, Inject, Injectable, Logger } from '@nestjs/common';
import type { ExceptionFilter, NestMiddleware } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { requestStorage } from './cancellation.constants.js';
import type { ScopeState } from './cancellation.constants.js';
import { CancellationError, findCancellationError } from './cancellation.error.js';
import { CancellationLifecycle } from './cancellation.lifecycle.js';
import { watchUpload } from './cancellation.platform.js';
import { isGone, outcomeOf } from './cancellation.scope.js';

/**
 * The scope of an HTTP request before it reaches the interceptor: while middleware registered after
 * `CancellationModule`'s and the route's guards run. `CancellationService.signal` there aborts when the client
 * hangs up or the application shuts down (a time budget only starts at the interceptor, which knows the
 * route's `@RequestTimeout()`). It costs one small object per request: the AbortController and its two
 * listeners exist only once somebody reads the signal.
 * @internal
 */
export class EarlyScope implements ScopeState {
  readonly remainingMs = undefined;
  private controller: AbortController | undefined = undefined;
  private gone: CancellationError | undefined = undefined;

  constructor(
    private readonly response: ServerResponse,
    private readonly lifecycle: CancellationLifecycle,
  ) {}

  get reason(): CancellationError | undefined {
    if (this.controller?.signal.aborted) return this.controller.signal.reason as CancellationError;
    if (isGone(this.response)) return (this.gone ??= new CancellationError('client-disconnected'));
    return this.lifecycle.isShuttingDown ? this.lifecycle.shutdownReason() : undefined;
  }

  get signal(): AbortSignal {
    if (this.controller !== undefined) return this.controller.signal;
    const reason = this.reason;
    const controller = (this.controller = new AbortController());
    if (reason !== undefined) {
      controller.abort(reason);
      return controller.signal;
    }
    const { response, lifecycle } = this;
    const onShutdown = (): void => controller.abort(lifecycle.shutdownReason());
    const onClose = (): void => {
      lifecycle.shutdownSignal.removeEventListener('abort', onShutdown);
      if (!response.writableFinished) controller.abort(new CancellationError('client-disconnected'));
    };
    response.once('close', onClose);
    lifecycle.shutdownSignal.addEventListener('abort', onShutdown, { once: true });
    return controller.signal;
  }
}

/**
 * Express: runs the rest of the request (later middleware, guards, then the interceptor, which opens the
 * request's own scope) inside an `EarlyScope`.
 * @internal
 */
@Injectable()
export class CancellationMiddleware implements NestMiddleware {
  constructor(@Inject(CancellationLifecycle) private readonly lifecycle: CancellationLifecycle) {}

  use(_request: unknown, response: ServerResponse, next: () => void): void {
    requestStorage.run(new EarlyScope(response, this.lifecycle), next);
  }
}

/**
 * Fastify: the same from an `onRequest` hook, which runs before Fastify's and Nest's middleware and costs less
 * than a middleware through `@fastify/middie`. It also watches a request body's upload (`watchUpload`).
 * @internal
 */
export function earlyScopeHook(
  lifecycle: CancellationLifecycle,
): (
  request: { raw: IncomingMessage },
  reply: { raw: ServerResponse; hijack(): unknown },
  done: () => void,
) => void {
  return (request, reply, done) => {
    watchUpload(request.raw, reply);
    requestStorage.run(new EarlyScope(reply.raw, lifecycle), done);
  };
}

/**
 * Express's body parser (raw-body) failing because the client hung up while sending its body: an http-errors
 * 400 with `type: 'request.aborted'`. Nest 12 turns it into an HttpException 400, which its filter answers
 * quietly; Nest 11 passes it on as it is, and its filter logs it as an error and answers 500 to nobody.
 */
function isAbortedUpload(value: unknown): boolean {
  return (value as { type?: unknown } | null)?.type === 'request.aborted';
}

/**
 * Fastify with `asyncContext: false`: the `onRequest` hook only watches a request body's upload.
 * @internal
 */
export function uploadHook(
  request: { raw: IncomingMessage },
  reply: { hijack(): unknown },
  done: () => void,
): void {
  watchUpload(request.raw, reply);
  done();
}

/**
 * Matches, for `@Catch()`, any exception a cancellation caused (a `CancellationError`, an `AbortError` whose
 * cause is one), from either copy of this package, that is not an HTTP answer yet; and a body upload the client
 * abandoned.
 */
class CausedByCancellation {
  static [Symbol.hasInstance](value: unknown): boolean {
    // An HttpException (the 503/504/499 the interceptor answers a cancellation with, whose cause is the
    // CancellationError) is already an answer: Nest's own filter sends it.
    if (typeof (value as { getStatus?: unknown } | null)?.getStatus === 'function') return false;
    return isAbortedUpload(value) || findCancellationError(value) !== undefined;
  }
}

/**
 * Answers a cancellation that escaped before the interceptor (a guard that rethrows its signal's abort, or
 * calls `throwIfCancelled()`) as the interceptor would: 503 + `Retry-After` for shutdown, the timeout status,
 * nothing for a client that is gone; logged at `verbose`, never as an error or a 500. It only claims
 * exceptions caused by a cancellation (and Express's body parser failing on an upload its client abandoned,
 * which Nest 11 would log as an error); every other exception goes to the application's filters as before.
 * Outside HTTP (a gateway's or microservice's guard) the message just ends, as the interceptor ends it.
 * @internal
 */
@Catch(CausedByCancellation)
export class CancellationExceptionFilter implements ExceptionFilter {
  private readonly logger = new Logger('Cancellation');

  constructor(
    @Inject(CancellationLifecycle) private readonly lifecycle: CancellationLifecycle,
    @Inject(HttpAdapterHost) private readonly adapterHost: HttpAdapterHost,
  ) {}

  catch(exception: unknown, host: ArgumentsHost): void {
    // A client that hung up during its upload: nobody to answer and, as on Nest 12 and Fastify, nothing to log.
    if (isAbortedUpload(exception)) return;
    const reason = findCancellationError(exception) as CancellationError;
    const { lifecycle } = this;
    if (host.getType() !== 'http') {
      this.log(`${host.getType().toUpperCase()} message`, reason);
      return;
    }
    const http = host.switchToHttp();
    const request = http.getRequest<unknown>();
    const { platform } = lifecycle;
    this.log(`${platform.method(request)} ${platform.route(request)}`, reason);
    const raw = platform.rawResponse(http.getResponse());
    if (isGone(raw) || raw.headersSent) return;
    const outcome = outcomeOf(reason, raw, lifecycle.options);
    this.adapterHost.httpAdapter.reply(http.getResponse(), outcome.getResponse(), outcome.getStatus());
  }

  private log(what: string, reason: CancellationError): void {
    if (this.lifecycle.options.logCancellations) {
      this.logger.verbose(`${what} cancelled (${reason.kind}) before its handler ran`);
    }
  }
}
