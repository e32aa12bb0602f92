import { Inject, Injectable, Logger } from '@nestjs/common';
import type { CallHandler, ExecutionContext, NestInterceptor, Type } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import type { IncomingMessage } from 'node:http';
import { Observable } from 'rxjs';
import { REQUEST_TIMEOUT_METADATA } from './cancellation.constants.js';
import { parseDeadlineHeader } from './cancellation.deadline.js';
import { interceptResolver } from './cancellation.graphql.js';
import { CancellationLifecycle } from './cancellation.lifecycle.js';
import { interceptMessage } from './cancellation.message.js';
import { MAX_TIMEOUT_MS } from './cancellation.options.js';
import { RequestScope } from './cancellation.scope.js';

/** What the interceptor knows of a handler, cached with the controller class it was resolved for. */
interface Budget {
  readonly controller: unknown;
  /** Its time budget. */
  readonly timeoutMs: number | false;
  /** It returns a Promise, whose settling after a cancellation is watched. */
  readonly returnsPromise: boolean;
}

/** The constructor of native async functions. */
const AsyncFunction = Object.getPrototypeOf(async () => undefined).constructor as unknown;

/**
 * Whether a route handler returns a Promise: its declared return type (TypeScript's `design:returntype`
 * metadata, which `emitDecoratorMetadata` writes), else whether it is an async function. A handler that returns
 * an Observable, or that cannot be told, is unsubscribed when cancelled (which stops an Observable) instead of
 * watched.
 */
function returnsPromise(controller: Type, handler: { readonly name: string }): boolean {
  const getMetadata = (
    Reflect as { getMetadata?: (key: string, target: object, property: string) => unknown }
  ).getMetadata;
  const declared = getMetadata?.('design:returntype', controller.prototype as object, handler.name);
  if (typeof declared === 'function' && declared !== Object) return declared === Promise;
  return handler.constructor === AsyncFunction;
}

/**
 * The global interceptor `CancellationModule` registers. For every HTTP request it runs the handler inside a
 * `RequestScope` (the AsyncLocalStorage store `CancellationService` reads) and ends the handler's stream on
 * the first of: the client disconnecting, the application shutting down, the request's deadline. A WebSocket
 * gateway's message or a microservice's message runs in a `MessageScope` instead (its connection closing,
 * shutdown); a GraphQL resolver runs in the scope of the HTTP request that carries its operation, shared by
 * all the resolvers of that request (`GraphQLRequestScope`); other execution contexts pass through untouched.
 *
 * Per request it creates the scope and one Observable; the AbortController only when somebody reads the
 * signal, the deadline timer only for a route with a budget.
 */
@Injectable()
export class CancellationInterceptor implements NestInterceptor {
  private readonly budgets = new WeakMap<object, Budget>();
  private readonly logger = new Logger('Cancellation');

  constructor(
    @Inject(CancellationLifecycle) private readonly lifecycle: CancellationLifecycle,
    @Inject(Reflector) private readonly reflector: Reflector,
  ) {}

  /**
   * Runs the handler in its request's scope: HTTP requests, GraphQL resolvers, WebSocket and microservice
   * messages each get theirs (see the class's description).
   */
  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    const type = context.getType<string>();
    if (type === 'graphql') {
      const { timeoutMs, returnsPromise } = this.budgetOf(context);
      return interceptResolver(context, next, this.lifecycle, timeoutMs, returnsPromise);
    }
    if (type !== 'http') return interceptMessage(context, next, this.lifecycle);
    const { lifecycle } = this;
    const request = context.getArgByIndex<IncomingMessage>(0);
    const budget = this.budgetOf(context);
    let timeoutMs = budget.timeoutMs;
    const header = lifecycle.options.deadlineHeader;
    if (header !== false) timeoutMs = this.shortenedByCaller(request, header, timeoutMs);
    const scope = new RequestScope(
      request,
      lifecycle.platform.rawResponse(context.getArgByIndex(1)),
      next,
      lifecycle,
      timeoutMs,
      budget.returnsPromise,
    );
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

  /**
   * The handler's budget: `@RequestTimeout()` of the handler, else of its controller, else the module's
   * `timeoutMs`; and whether it returns a Promise.
   */
  private budgetOf(context: ExecutionContext): Budget {
    const handler = context.getHandler();
    const controller = context.getClass();
    let budget = this.budgets.get(handler);
    if (budget === undefined || budget.controller !== controller) {
      const declared = this.reflector.getAllAndOverride<number | false | undefined>(
        REQUEST_TIMEOUT_METADATA,
        [handler, controller],
      );
      budget = {
        controller,
        timeoutMs: declared ?? this.lifecycle.options.timeoutMs,
        returnsPromise: returnsPromise(controller, handler),
      };
      this.budgets.set(handler, budget);
    }
    return budget;
  }
}
