import { randomUUID } from 'node:crypto';

/** A request id taken from a header: printable, no separators that would break a URL path or a log line. */
const REQUEST_ID = /^[A-Za-z0-9._~:@+=-]{1,128}$/;

/**
 * `value` when it is one well-formed request id (a header's or a gRPC metadata entry's), else a new UUID.
 * @internal
 */
export function requestIdFrom(value: unknown): string {
  return typeof value === 'string' && REQUEST_ID.test(value) ? value : randomUUID();
}

/**
 * The id of a request: the `header`'s value when it is one well-formed value, else a new UUID. Express's and
 * Fastify's requests both expose Node's header object.
 * @internal
 */
export function requestIdOf(request: unknown, header: string | false): string {
  if (header === false) return randomUUID();
  return requestIdFrom((request as { headers?: Record<string, unknown> }).headers?.[header]);
}
