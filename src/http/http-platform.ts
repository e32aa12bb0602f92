import type { IncomingMessage, ServerResponse } from 'node:http';

/**
 * What the interceptor needs from the HTTP platform: Express and Fastify differ only here. Everything else
 * works on Node's own `ServerResponse`, which both platforms put underneath.
 * @internal
 */
export interface HttpPlatform {
  /** Node's response under the platform's response object. */
  rawResponse(response: unknown): ServerResponse;
  /**
   * The route pattern that matched (e.g. `/users/:id`), for log lines and metric labels; the URL's path when
   * there is none (never its query string, which can carry anything: a GraphQL query, a token).
   */
  route(request: unknown): string;
  /** The request method, for log lines. */
  method(request: unknown): string;
}

/** The path of a request URL, without its query string. */
function pathOf(url: string): string {
  const query = url.indexOf('?');
  return query === -1 ? url : url.slice(0, query);
}

interface ExpressLikeRequest extends IncomingMessage {
  route?: { path?: unknown };
  baseUrl?: string;
  originalUrl?: string;
}

/** Express, and any platform whose request and response are Node's own objects. @internal */
export const expressPlatform: HttpPlatform = {
  rawResponse: (response) => response as ServerResponse,
  route(request) {
    const req = request as ExpressLikeRequest;
    const path = req.route?.path;
    return typeof path === 'string'
      ? `${req.baseUrl ?? ''}${path}`
      : pathOf(req.originalUrl ?? req.url ?? '');
  },
  method: (request) => (request as IncomingMessage).method ?? '',
};

interface FastifyLikeRequest {
  raw: IncomingMessage;
  method: string;
  url: string;
  routeOptions?: { url?: string };
}

/** Fastify: `reply.raw` and `request.raw` are Node's objects. @internal */
export const fastifyPlatform: HttpPlatform = {
  rawResponse: (response) => (response as { raw: ServerResponse }).raw,
  route(request) {
    const req = request as FastifyLikeRequest;
    return req.routeOptions?.url ?? pathOf(req.url);
  },
  method: (request) => (request as FastifyLikeRequest).method,
};

/**
 * The platform for an HTTP adapter type as Nest reports it (`httpAdapter.getType()`).
 * @internal
 */
export function platformFor(adapterType: string | undefined): HttpPlatform {
  return adapterType === 'fastify' ? fastifyPlatform : expressPlatform;
}
