import type { CallHandler, ExecutionContext } from '@nestjs/common';
import { Observable } from 'rxjs';
import { scopeStorage } from '../core/async-context.js';
import type { RouteBudgets } from '../http/route-budget.js';
import type { CancellationRuntime } from '../module/cancellation-runtime.js';
import { grpcCallOf } from './grpc/grpc-call.js';
import { GrpcCallScope, scopeOfGrpcCall } from './grpc/grpc-call-scope.js';
import type { Connection } from './message-connection.js';
import { answersCaller } from './message-reply.js';
import { MessageScope } from './message-scope.js';

/** The connection of a WebSocket message (the gateway's client), or of a TCP microservice message. */
function connectionOf(context: ExecutionContext, type: string): Connection | undefined {
  const candidate =
    type === 'ws'
      ? context.getArgByIndex<unknown>(0)
      : (context
          .getArgByIndex<{ getSocketRef?: () => { netSocket?: unknown } } | undefined>(1)
          ?.getSocketRef?.()?.netSocket ?? undefined);
  const connection = candidate as Partial<Connection> | undefined;
  return typeof connection?.on === 'function' && typeof connection.removeListener === 'function'
    ? (connection as Connection)
    : undefined;
}

function patternOf(context: ExecutionContext, type: string): string {
  // A gateway's pattern is on its arguments host; a microservice's on the transport's context (TcpContext...).
  const host: unknown = type === 'ws' ? context.switchToWs() : context.getArgByIndex(1);
  const pattern: unknown = (host as { getPattern?: () => unknown } | undefined)?.getPattern?.();
  return typeof pattern === 'string' ? pattern : (JSON.stringify(pattern) ?? 'message');
}

/**
 * The interceptor's path for a WebSocket message (`ws`) or a microservice message (`rpc`): runs the handler in
 * a `MessageScope`, or a gRPC call's in a `GrpcCallScope` (which has a budget: the caller's deadline, or the
 * handler's own from `budgets` when shorter). Other context types (custom ones) pass through.
 * @internal
 */
export function interceptMessage(
  context: ExecutionContext,
  next: CallHandler,
  runtime: CancellationRuntime,
  budgets: RouteBudgets,
): Observable<unknown> {
  const type = context.getType<string>();
  if (type !== 'ws' && type !== 'rpc') return next.handle();
  const message = context.getArgs();
  // Nest 11 runs no global interceptor on gateways, so they take `@UseInterceptors(CancellationInterceptor)`;
  // on Nest 12 that one runs inside the global one's scope for the same message, and leaves the message to it.
  // Compared by shape, not `instanceof`: the scope may come from the package's other build (ESM or CommonJS).
  if ((scopeStorage.getStore() as { message?: unknown } | undefined)?.message === message) {
    return next.handle();
  }
  const grpc = type === 'rpc' ? grpcCallOf(message) : undefined;
  if (grpc !== undefined) {
    // Without the store (`asyncContext: false`) the call itself says whether a scope runs it already.
    if (scopeOfGrpcCall(grpc.call) !== undefined) return next.handle();
    const { timeoutMs, returnsPromise } = budgets.of(context);
    const call = new GrpcCallScope(
      message,
      grpc.call,
      grpc.passThrough,
      next,
      runtime,
      timeoutMs,
      returnsPromise,
    );
    return new Observable((subscriber) => call.start(subscriber));
  }
  const scope = new MessageScope(
    message,
    connectionOf(context, type),
    next,
    runtime,
    `${type.toUpperCase()} ${patternOf(context, type)}`,
    type === 'rpc' && answersCaller(context.getHandler()),
  );
  return new Observable((subscriber) => scope.start(subscriber));
}
