import { Inject, Injectable, Logger } from '@nestjs/common';
import type { CallHandler, ExecutionContext, NestInterceptor } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import type { IncomingMessage } from 'node:http';
import { Observable } from 'rxjs';
import { interceptResolver } from '../contexts/graphql/intercept-resolver.js';
import { interceptMessage } from '../contexts/intercept-message.js';
import { scopeStorage } from '../core/async-context.js';
import { parseDeadlineHeader } from '../http/deadline-header.js';
import { RequestScope, scopeOfResponse } from '../http/request-scope.js';
import { RouteBudgets } from '../http/route-budget.js';
import { CancellationRuntime } from './cancellation-runtime.js';
import { MAX_TIMEOUT_MS } from './options.validation.js';

/**
 * The global interceptor `CancellationModule` registers. For every HTTP request it runs the handler inside a
 * request scope (the AsyncLocalStorage store `CancellationService` reads) and ends the handler's stream on
 * the first of: the client disconnecting, the application shutting down, the request's deadline. A WebSocket
 * gateway's message or a microservice's message runs in a message scope instead (its connection closing,
 * shutdown), a gRPC call in a call scope (its client cancelling it, its deadline, shutdown); a GraphQL resolver runs in the scope of the HTTP request that carries its operation, shared by
 * all the resolvers of that request; other execution contexts pass through untouched.
 *
 * Per request it creates the scope and one Observable; the AbortController only when somebody reads the
 * signal, the deadline timer only for a route with a budget. Applied twice to the same handler (globally and
 * with `@UseInterceptors()`), the inner one passes through.
 */
@Injectable()
export class CancellationInterceptor implements NestInterceptor {
  private readonly budgets: RouteBudgets;
  private readonly logger = new Logger('Cancellation');

  constructor(
    @Inject(CancellationRuntime) private readonly runtime: CancellationRuntime,
    @Inject(Reflector) reflector: Reflector,
  ) {
    this.budgets = new RouteBudgets(reflector, runtime.options.timeoutMs);
  }

  /**
   * Runs the handler in its request's scope: HTTP requests, GraphQL resolvers, WebSocket and microservice
   * messages each get theirs (see the class's description). A route left out of cancellation
   * (`@SkipCancellation()`, the `exclude` option) runs without one.
   */
  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    const type = context.getType<string>();
    const { runtime } = this;
    if (type === 'graphql') {
      const { timeoutMs, returnsPromise } = this.budgets.of(context);
      return interceptResolver(context, next, runtime, timeoutMs, returnsPromise);
    }
    if (type !== 'http') return interceptMessage(context, next, runtime, this.budgets);
    const response = runtime.platform.rawResponse(context.getArgByIndex(1));
    // Applied twice (`@UseInterceptors(CancellationInterceptor)` under the global one): the outer one runs the
    // request already, and a second scope would report every cancellation twice.
    if (scopeOfResponse(response) !== undefined) return next.handle();
    const request = context.getArgByIndex<IncomingMessage>(0);
    const budget = this.budgets.of(context);
    // Left out of cancellation (`@SkipCancellation()`, `exclude`): the handler runs outside any scope.
    if (budget.skipped || runtime.exclusions.matchesPath(request))
      return scopeStorage.exit(() => next.handle());
    let timeoutMs = budget.timeoutMs;
    const header = runtime.options.deadlineHeader;
    if (header !== false) timeoutMs = this.shortenedByCaller(request, header, timeoutMs);
    const scope = new RequestScope(request, response, next, runtime, timeoutMs, budget.returnsPromise);
    return new Observable((subscriber) => scope.start(subscriber));
  }

  /**
   * The budget the caller propagated, when it is shorter than the server's own: a header can never lengthen
   * a server-side limit. Express's and Fastify's requests both expose Node's header object.
   */
  private shortenedByCaller(
    request: IncomingMessage,
    header: string,
    timeoutMs: number | false,
  ): number | false {
    const value = request.headers[header];
    if (value === undefined) return timeoutMs;
    const propagated = parseDeadlineHeader(value, MAX_TIMEOUT_MS);
    if (propagated === undefined) {
      this.logger.debug(`Ignored a malformed ${header} header: ${JSON.stringify(value).slice(0, 64)}`);
      return timeoutMs;
    }
    return timeoutMs === false ? propagated : Math.min(timeoutMs, propagated);
  }
}
