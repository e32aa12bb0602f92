import type { IncomingMessage } from 'node:http';

/** Where a request keeps its Fastify reply while its body is read, for the shared listener below. */
const REPLY = Symbol('nestjs-cancellation.reply');

type UploadingRequest = IncomingMessage & { [REPLY]?: { hijack(): unknown } };

/**
 * A client that hangs up while its request body is still being read: Node fails the request with
 * `Error: aborted` (ECONNRESET), Fastify's body reader passes it to Nest's error handler, which does not
 * recognise it and logs it at error level, although the client is gone and nothing went wrong on the server.
 * Nothing can be sent to that client: taking the reply out of Fastify's hands (`hijack()`) ends the request
 * there, as it ends quietly on Express (whose body parser turns the error into an HttpException 400). Once the
 * body is complete the request is the interceptor's business, and this does nothing. One listener shared by
 * every request: `this` is the request.
 */
function onUploadError(this: UploadingRequest, err: unknown): void {
  if (!this.complete && (err as { code?: unknown } | undefined)?.code === 'ECONNRESET') this[REPLY]?.hijack();
}

/**
 * Fastify: watches a request that carries a body, so that a client hanging up during its upload is not logged
 * as an error. Called from the `onRequest` hook that opens the early scope (one hook per request, not two).
 * @internal
 */
export function watchUpload(raw: UploadingRequest, reply: { hijack(): unknown }): void {
  if (
    !raw.complete &&
    (raw.headers['content-length'] !== undefined || raw.headers['transfer-encoding'] !== undefined)
  ) {
    raw[REPLY] = reply;
    raw.once('error', onUploadError);
  }
}
