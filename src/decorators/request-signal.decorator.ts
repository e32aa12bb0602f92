import { createParamDecorator } from '@nestjs/common';
import type { ExecutionContext } from '@nestjs/common';
import { scopeStorage } from '../core/async-context.js';
import { scopeOfResponse } from '../http/request-scope.js';

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
      scopeStorage.getStore() ??
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
