import { createParamDecorator } from '@nestjs/common';
import type { ExecutionContext } from '@nestjs/common';
import { grpcCallOf } from '../contexts/grpc/grpc-call.js';
import { scopeOfGrpcCall } from '../contexts/grpc/grpc-call-scope.js';
import { scopeStorage } from '../core/async-context.js';
import type { ScopeState } from '../core/async-context.js';
import { scopeOfResponse } from '../http/request-scope.js';

/** The scope of an HTTP request or a gRPC call found without the store (`asyncContext: false`). */
function scopeOfContext(context: ExecutionContext): ScopeState | undefined {
  const type = context.getType();
  if (type === 'http') return scopeOfResponse(context.switchToHttp().getResponse());
  const grpc = type === 'rpc' ? grpcCallOf(context.getArgs()) : undefined;
  return grpc === undefined ? undefined : scopeOfGrpcCall(grpc.call);
}

/**
 * Route handler parameter decorator: the request's AbortSignal, which aborts with a `CancellationError`
 * when the client disconnects, the application shuts down or the request's deadline passes. In a gRPC
 * method, the call's.
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
    const scope = scopeStorage.getStore() ?? scopeOfContext(context);
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
