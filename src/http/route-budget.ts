import type { ExecutionContext, Type } from '@nestjs/common';
import type { Reflector } from '@nestjs/core';
import { REQUEST_TIMEOUT_METADATA } from '../decorators/request-timeout.decorator.js';
import { SKIP_CANCELLATION_METADATA } from '../decorators/skip-cancellation.decorator.js';

/** What the interceptor knows of a handler, cached with the controller class it was resolved for. */
export interface RouteBudget {
  readonly controller: unknown;
  /** Its time budget. */
  readonly timeoutMs: number | false;
  /** It returns a Promise, whose settling after a cancellation is watched. */
  readonly returnsPromise: boolean;
  /** It is marked `@SkipCancellation()` (itself or its controller): it runs without a scope. */
  readonly skipped: boolean;
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
 * The budget of each handler: `@RequestTimeout()` of the handler, else of its controller, else the module's
 * `timeoutMs`; whether it returns a Promise; whether it is skipped. Resolved once per handler.
 * @internal
 */
export class RouteBudgets {
  private readonly budgets = new WeakMap<object, RouteBudget>();

  constructor(
    private readonly reflector: Reflector,
    private readonly defaultTimeoutMs: number | false,
  ) {}

  of(context: ExecutionContext): RouteBudget {
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
        timeoutMs: declared ?? this.defaultTimeoutMs,
        returnsPromise: returnsPromise(controller, handler),
        skipped:
          this.reflector.getAllAndOverride<boolean | undefined>(SKIP_CANCELLATION_METADATA, [
            handler,
            controller,
          ]) === true,
      };
      this.budgets.set(handler, budget);
    }
    return budget;
  }
}
