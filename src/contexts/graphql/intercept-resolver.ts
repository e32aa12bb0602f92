import type { CallHandler, ExecutionContext } from '@nestjs/common';
import { ServerResponse } from 'node:http';
import { Observable } from 'rxjs';
import type { CancellationRuntime } from '../../module/cancellation-runtime.js';
import { GraphQLRequestScope } from './graphql-request-scope.js';
import { ResolverRun } from './resolver-run.js';

/**
 * The HTTP request and response of a GraphQL context: its `req`, which Nest's Apollo driver puts there by
 * default (and adds to a context the application builds itself), and Express's `req.res`. A context without
 * them (a subscription over WebSocket, a platform whose request does not lead to its response) has none.
 */
function httpOf(gqlContext: unknown): { request: object; response: ServerResponse } | undefined {
  const request = (gqlContext as { req?: unknown } | null | undefined)?.req;
  if (typeof request !== 'object' || request === null) return undefined;
  const response = (request as { res?: unknown }).res;
  return response instanceof ServerResponse ? { request, response } : undefined;
}

/**
 * The interceptor's path for a GraphQL resolver (`graphql` context, arguments `[root, args, context, info]`):
 * runs it in the scope of the HTTP request that carries the operation. A resolver whose context leads to no
 * HTTP response passes through, and so does a call the interceptor already runs (applied twice).
 * @internal
 */
export function interceptResolver(
  context: ExecutionContext,
  next: CallHandler,
  runtime: CancellationRuntime,
  timeoutMs: number | false,
  returnsPromise: boolean,
): Observable<unknown> {
  const http = httpOf(context.getArgByIndex(2));
  if (http === undefined) return next.handle();
  const scope = GraphQLRequestScope.of(http.request, http.response, runtime);
  // Applied twice to this call: the outer interceptor's run is subscribing to this one, and runs the call.
  if (scope.starting === context) return next.handle();
  if (timeoutMs !== false) scope.shorten(timeoutMs);
  const run = new ResolverRun(scope, next, returnsPromise, context);
  return new Observable((subscriber) => run.start(subscriber));
}
