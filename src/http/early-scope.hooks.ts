import type { IncomingMessage, ServerResponse } from 'node:http';
import { scopeStorage } from '../core/async-context.js';
import type { CancellationRuntime } from '../module/cancellation-runtime.js';
import { EarlyScope } from './early-scope.js';
import { watchUpload } from './fastify-upload.js';

/**
 * The door: a request that arrives while the application drains is answered `503` + `Retry-After` +
 * `Connection: close` here, before routing, guards, pipes and body parsing of later middleware, as Fastify's
 * `return503OnClosing` does once its server closes. Its connection closes after this response.
 */
function refuse(response: ServerResponse, runtime: CancellationRuntime, http2: boolean): void {
  const body = JSON.stringify({
    statusCode: 503,
    message: runtime.signals.drainReason().message,
    error: 'Service Unavailable',
  });
  const headers: Record<string, string> = {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': String(Buffer.byteLength(body)),
    'Retry-After': String(runtime.options.retryAfterSeconds),
  };
  // HTTP/2 forbids the header: a stream is not a connection.
  if (!http2) headers.Connection = 'close';
  response.writeHead(503, headers).end(body);
}

/**
 * Express: refuses requests at the door while the application drains, and runs the rest of the request
 * (later middleware, guards, then the interceptor, which opens the request's own scope) inside an
 * `EarlyScope`. A route left out of cancellation (`exclude`, `@SkipCancellation()`) passes through untouched.
 * @internal
 */
export function expressDoor(
  runtime: CancellationRuntime,
  app: () => unknown,
): (request: IncomingMessage, response: ServerResponse, next: () => void) => void {
  const { exclusions, signals } = runtime;
  const early = runtime.options.asyncContext;
  return (request, response, next) => {
    if (exclusions.hasPatterns && exclusions.matchesPath(request)) return next();
    if (signals.isDraining && runtime.refuses(response)) {
      if (!exclusions.skipsExpressRoute(request, app)) return refuse(response, runtime, false);
      return next();
    }
    if (early) scopeStorage.run(new EarlyScope(response, signals), next);
    else next();
  };
}

/** The shape of the Fastify request and reply the hook uses. */
interface FastifyRequestLike {
  raw: IncomingMessage;
  routeOptions?: { config?: object };
}
type FastifyHook = (
  request: FastifyRequestLike,
  reply: { raw: ServerResponse; hijack(): unknown },
  done: () => void,
) => void;

/**
 * Fastify: the same from an `onRequest` hook, which runs once Fastify has routed the request and before
 * Fastify's and Nest's middleware (and costs less than a middleware through `@fastify/middie`). It also
 * watches a request body's upload (`watchUpload`).
 * @internal
 */
export function fastifyDoor(runtime: CancellationRuntime): FastifyHook {
  const { exclusions, signals } = runtime;
  const early = runtime.options.asyncContext;
  return (request, reply, done) => {
    const raw = request.raw;
    if (exclusions.hasPatterns && exclusions.matchesPath(raw)) return done();
    if (signals.isDraining && runtime.refuses(reply.raw)) {
      if (exclusions.skipsFastifyRoute(request)) return done();
      reply.hijack();
      return refuse(reply.raw, runtime, raw.httpVersionMajor === 2);
    }
    watchUpload(raw, reply);
    if (early) scopeStorage.run(new EarlyScope(reply.raw, signals), done);
    else done();
  };
}
