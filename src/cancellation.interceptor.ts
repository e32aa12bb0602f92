import { Inject, Injectable } from '@nestjs/common';
import type { CallHandler, ExecutionContext, NestInterceptor } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { Observable } from 'rxjs';
import { REQUEST_TIMEOUT_METADATA } from './cancellation.constants.js';
import { CancellationLifecycle } from './cancellation.lifecycle.js';
import { RequestScope } from './cancellation.scope.js';

/** A handler's time budget, cached with the controller class it was resolved for. */
interface Budget {
  readonly controller: unknown;
  readonly timeoutMs: number | false;
}

/**
 * The global interceptor `CancellationModule` registers. For every HTTP request it runs the handler inside a
 * `RequestScope` (the AsyncLocalStorage store `CancellationService` reads) and ends the handler's stream on
 * the first of: the client disconnecting, the application shutting down, the request's deadline. Other
 * execution contexts (microservices, WebSockets, GraphQL) pass through untouched.
 *
 * Per request it creates the scope and one Observable; the AbortController only when somebody reads the
 * signal, the deadline timer only for a route with a budget.
 */
@Injectable()
export class CancellationInterceptor implements NestInterceptor {
  private readonly budgets = new WeakMap<object, Budget>();

  constructor(
    @Inject(CancellationLifecycle) private readonly lifecycle: CancellationLifecycle,
    @Inject(Reflector) private readonly reflector: Reflector,
  ) {}

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    if (context.getType() !== 'http') return next.handle();
    const { lifecycle } = this;
    const scope = new RequestScope(
      context.getArgByIndex(0),
      lifecycle.platform.rawResponse(context.getArgByIndex(1)),
      next,
      lifecycle,
      this.timeoutOf(context),
    );
    return new Observable((subscriber) => scope.start(subscriber));
  }

  /** `@RequestTimeout()` of the handler, else of its controller, else the module's `timeoutMs`. */
  private timeoutOf(context: ExecutionContext): number | false {
    const handler = context.getHandler();
    const controller = context.getClass();
    let budget = this.budgets.get(handler);
    if (budget === undefined || budget.controller !== controller) {
      const declared = this.reflector.getAllAndOverride<number | false | undefined>(
        REQUEST_TIMEOUT_METADATA,
        [handler, controller],
      );
      budget = { controller, timeoutMs: declared ?? this.lifecycle.options.timeoutMs };
      this.budgets.set(handler, budget);
    }
    return budget.timeoutMs;
  }
}
