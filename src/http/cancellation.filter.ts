import { ArgumentsHost, Catch, Inject, Logger } from '@nestjs/common';
import type { ExceptionFilter, ExecutionContext } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import type { ApplicationConfig } from '@nestjs/core';
import { EMPTY, throwError } from 'rxjs';
import type { Observable } from 'rxjs';
import { GraphQLCancellationError } from '../contexts/graphql/graphql-cancellation.error.js';
import { grpcCallOf } from '../contexts/grpc/grpc-call.js';
import { GrpcCancellationStatus, isGrpcCancellationStatus } from '../contexts/grpc/grpc-status.js';
import { answersCaller, cancelledMessageError, MessageCut } from '../contexts/message-reply.js';
import { findCancellationError } from '../core/cancellation-error.js';
import type { CancellationError } from '../core/cancellation-error.js';
import { CancellationRuntime } from '../module/cancellation-runtime.js';
import { isGone, outcomeOf } from './request-outcome.js';

/**
 * Express's body parser (raw-body) failing because the client hung up while sending its body: an http-errors
 * 400 with `type: 'request.aborted'`. Nest 12 turns it into an HttpException 400, which its filter answers
 * quietly; Nest 11 passes it on as it is, and its filter logs it as an error and answers 500 to nobody.
 */
function isAbortedUpload(value: unknown): boolean {
  return (value as { type?: unknown } | null)?.type === 'request.aborted';
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
 * Outside HTTP (a gateway's or microservice's guard) the message ends as the interceptor ends it: a
 * microservice message whose caller waits for an answer, cut by shutdown, with a `CancelledMessageError` the
 * caller can retry elsewhere; any other with an empty stream, which Nest's RPC exception handler takes as the
 * answer (given nothing, it would log the exception as an error). A gRPC call fails with its status (`GrpcCancellationStatus`: a
 * call left unanswered would hang until its deadline), and the status a gRPC call's scope fails with passes
 * through as it is. A GraphQL resolver's guard fails the resolver with the error the
 * interceptor would (its `extensions.code` the status a route would get).
 * @internal
 */
@Catch(CausedByCancellation)
export class CancellationExceptionFilter implements ExceptionFilter {
  private readonly logger = new Logger('Cancellation');

  constructor(
    @Inject(CancellationRuntime) private readonly runtime: CancellationRuntime,
    @Inject(HttpAdapterHost) private readonly adapterHost: HttpAdapterHost,
  ) {}

  catch(exception: unknown, host: ArgumentsHost): Observable<never> | Error | undefined {
    // A client that hung up during its upload: nobody to answer and, as on Nest 12 and Fastify, nothing to log.
    if (isAbortedUpload(exception)) return undefined;
    const reason = findCancellationError(exception) as CancellationError;
    const { runtime } = this;
    const type = host.getType<string>();
    if (type === 'graphql') {
      // What the resolver fails with (GraphQL reports an Error a resolver returns), as the interceptor fails it.
      this.log('GraphQL resolver', reason);
      return new GraphQLCancellationError(reason, runtime.options.timeoutStatus);
    }
    if (type !== 'http') {
      // The answer of a gRPC call's scope, which reported the cancellation already.
      if (isGrpcCancellationStatus(exception)) return throwError(() => exception);
      // A message the interceptor's scope cut, which it logged already: its caller's answer.
      if (exception instanceof MessageCut) return throwError(() => exception.reply);
      const grpc = type === 'rpc' ? grpcCallOf(host.getArgs()) : undefined;
      this.log(grpc === undefined ? `${type.toUpperCase()} message` : 'gRPC call', reason);
      if (grpc !== undefined) return throwError(() => new GrpcCancellationStatus(reason));
      if (type !== 'rpc') return undefined;
      // Nest's RPC exception handler passes no handler: an event's stream failing is dropped quietly anyway.
      const handler: unknown = (host as Partial<ExecutionContext>).getHandler?.();
      const reply =
        typeof handler !== 'function' || answersCaller(handler)
          ? cancelledMessageError(reason, runtime.options.retryAfterSeconds)
          : undefined;
      return reply === undefined ? EMPTY : throwError(() => reply);
    }
    const http = host.switchToHttp();
    const request = http.getRequest<unknown>();
    const { platform } = runtime;
    this.log(`${platform.method(request)} ${platform.route(request)}`, reason);
    const raw = platform.rawResponse(http.getResponse());
    if (isGone(raw) || raw.headersSent) return undefined;
    const outcome = outcomeOf(reason, raw, runtime.options);
    this.adapterHost.httpAdapter.reply(http.getResponse(), outcome.getResponse(), outcome.getStatus());
    return undefined;
  }

  private log(what: string, reason: CancellationError): void {
    if (this.runtime.options.logCancellations) {
      this.logger.verbose(`${what} cancelled (${reason.kind}) before its handler ran`);
    }
  }
}

/**
 * Makes the module's filter the first global filter Nest tries. Nest tries the filters an application gives
 * `app.useGlobalFilters()` before those of `APP_FILTER` providers (the last one registered first), so that an
 * application's catch-all filter would see a guard's cancellation before this one and answer it 500. Called
 * when the module configures its middleware: after the application registered its own global filters (before
 * `listen()` or `init()`), before Nest builds each route's filters. A filter bound to a controller or a handler
 * with `@UseFilters()` is still tried first, as Nest always does.
 * @internal
 */
export function tryFirst(config: ApplicationConfig): void {
  const filters = config.getGlobalFilters();
  const filter = filters.find((candidate) => candidate instanceof CancellationExceptionFilter);
  // Registered once more, at the end: the first match wins, so the earlier entry is never reached.
  if (filter !== undefined && filters.at(-1) !== filter) config.useGlobalFilters(filter);
}
