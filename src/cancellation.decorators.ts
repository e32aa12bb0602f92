import { SetMetadata, createParamDecorator } from '@nestjs/common';
import type { ExecutionContext } from '@nestjs/common';
import { REQUEST_TIMEOUT_METADATA, requestStorage } from './cancellation.constants.js';
import { validateTimeout } from './cancellation.options.js';
import { scopeOfResponse } from './cancellation.scope.js';

/**
 * Route handler parameter decorator: the request's AbortSignal, which aborts with a `CancellationError`
 * when the client disconnects, the application shuts down or the request's deadline passes.
 *
 * @example
 * ```ts
 * @Get('report')
 * report(@RequestSignal() signal: AbortSignal) {
 *   return fetch(REPORT_URL, { signal }).then((res) => res.json());
 * }
 * ```
 */
export const RequestSignal = createParamDecorator(
  (_data: unknown, context: ExecutionContext): AbortSignal => {
    const scope =
      requestStorage.getStore() ??
      (context.getType() === 'http' ? scopeOfResponse(context.switchToHttp().getResponse()) : undefined);
    if (scope === undefined) {
      throw new Error(
        '@RequestSignal() found no request scope: import CancellationModule.forRoot() in the root module. ' +
          'On Nest 11, which runs no global interceptor on WebSocket gateways, also put ' +
          '@UseInterceptors(CancellationInterceptor) on the gateway',
      );
    }
    return scope.signal;
  },
);

/**
 * Sets the time budget of a route, or of every route of a controller (the handler's own wins). When it runs
 * out, the request's signal aborts with `kind: 'timeout'` and the client is answered with the module's
 * `timeoutStatus` (504 by default). `@RequestTimeout(false)` opts a route out of the module's `timeoutMs`.
 *
 * A value that is not `false` or a whole number of milliseconds from 1 to 2^31-1 throws when the class is
 * defined, naming the controller and method.
 *
 * @example
 * ```ts
 * @Get('export')
 * @RequestTimeout(30_000)
 * export(@RequestSignal() signal: AbortSignal) { ... }
 * ```
 */
export function RequestTimeout(ms: number | false): ClassDecorator & MethodDecorator {
  return (target: object, key?: string | symbol, descriptor?: PropertyDescriptor) => {
    const owner = (typeof target === 'function' ? target : target.constructor) as { name?: string };
    const where =
      key === undefined
        ? `@RequestTimeout() on ${owner.name ?? 'a class'}`
        : `@RequestTimeout() on ${owner.name ?? 'a class'}.${String(key)}`;
    const timeoutMs = validateTimeout(where, ms);
    if (descriptor !== undefined && key !== undefined) {
      SetMetadata(REQUEST_TIMEOUT_METADATA, timeoutMs)(target, key, descriptor);
    } else {
      SetMetadata(REQUEST_TIMEOUT_METADATA, timeoutMs)(target as () => void);
    }
  };
}
