import { randomUUID } from 'node:crypto';

/** A correlation id taken from a header: printable, no separators that would break a URL path or a log line. */
const CORRELATION_ID = /^[A-Za-z0-9._~:@+=-]{1,128}$/;

/**
 * A new id for a unit of work: made by the server and unique, so that the `cancel(id)` of an operator can only
 * ever reach the work it was read from.
 * @internal
 */
export function newWorkId(): string {
  return randomUUID();
}

/**
 * `value` when it is one well-formed correlation id (a header's or a gRPC metadata entry's), else `undefined`.
 * @internal
 */
export function correlationIdFrom(value: unknown): string | undefined {
  return typeof value === 'string' && CORRELATION_ID.test(value) ? value : undefined;
}

/**
 * The correlation id a request carries in `header`, when it is one well-formed value. Express's and
 * Fastify's requests both expose Node's header object.
 * @internal
 */
export function correlationIdOf(request: unknown, header: string | false): string | undefined {
  if (header === false) return undefined;
  return correlationIdFrom((request as { headers?: Record<string, unknown> }).headers?.[header]);
}
