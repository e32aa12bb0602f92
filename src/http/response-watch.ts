import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { CancellationError } from '../core/cancellation-error.js';

/** What the watch of a response tells the request scope that owns it. */
export interface WatchedRequest {
  readonly response: ServerResponse;
  readonly timeoutMs: number | false;
  cancel(reason: CancellationError): void;
  /** The response closed, finished or not. */
  responseClosed(): void;
}

/** Where a response, and the connection it is written to, keep the scope of the request in progress. */
const WATCHER = Symbol('nestjs-cancellation.request');
/** Set on a connection once it has its `'close'` listener, kept across its keep-alive requests. */
const WATCHED = Symbol('nestjs-cancellation.watched');

type WatchedResponse = ServerResponse & { [WATCHER]?: WatchedRequest };
type WatchedMessage = IncomingMessage & { [WATCHER]?: WatchedRequest };

/** What a request scope listens to besides its connection: bits of the number `watchResponse` returns. */
export const enum Listening {
  None = 0,
  /** The response's own `'close'`: a streamed body's end. */
  Response = 1,
  /** The request's `'close'`: a pipelined request waiting for its turn on the connection. */
  Request = 2,
}
type WatchedSocket = Socket & { [WATCHER]?: WatchedRequest; [WATCHED]?: true };

/**
 * Follows a response until its request scope lets go of it (`unwatchResponse`): a client that hangs up
 * cancels the request. The hang-up is heard on the connection, with one `'close'` listener per connection that
 * serves all its keep-alive requests, rather than one listener added to and removed from every response. A
 * pipelined request waiting for the ones before it (its response not on the connection yet, and Node emits
 * no `'close'` for such a response) is followed by its request's `'close'` instead. Returns what it listens
 * to besides the connection.
 * @internal
 */
export function watchResponse(request: WatchedRequest): Listening {
  const response = request.response as WatchedResponse;
  response[WATCHER] = request;
  const socket = response.socket as WatchedSocket | null;
  if (socket === null) {
    const message = response.req as WatchedMessage;
    message[WATCHER] = request;
    message.on('close', onQueuedRequestClose);
    return Listening.Request;
  }
  socket[WATCHER] = request;
  if (socket[WATCHED] !== true) {
    socket[WATCHED] = true;
    socket.once('close', onConnectionClose);
  }
  return Listening.None;
}

/** Listens to the response's own `'close'` too: a streamed body's end releases its scope. */
export function listenToResponse(request: WatchedRequest): void {
  request.response.on('close', onResponseClose);
}

/** The request scope lets go of its response and of what `watchResponse` listened to. */
export function unwatchResponse(request: WatchedRequest, socket: Socket | null, listening: Listening): void {
  const response = request.response as WatchedResponse;
  if (listening & Listening.Response) response.removeListener('close', onResponseClose);
  if (listening & Listening.Request) {
    const message = response.req as WatchedMessage;
    message.removeListener('close', onQueuedRequestClose);
    message[WATCHER] = undefined;
  }
  response[WATCHER] = undefined;
  const watched = socket as WatchedSocket | null;
  if (watched?.[WATCHER] === request) watched[WATCHER] = undefined;
}

/** The request scope following `response`, while its handler runs. */
export function watcherOf(response: unknown): WatchedRequest | undefined {
  const candidate = response as (WatchedResponse & { raw?: WatchedResponse }) | null | undefined;
  return candidate?.[WATCHER] ?? candidate?.raw?.[WATCHER];
}

/** One shared listener for every response that has one: `this` is the response. */
function onResponseClose(this: WatchedResponse): void {
  const request = this[WATCHER];
  if (request === undefined) return;
  if (!this.writableFinished) request.cancel(new CancellationError('client-disconnected'));
  request.responseClosed();
}

/**
 * One shared listener for every connection: `this` is the socket. Node marks the response in progress closed
 * (and emits its `'close'`) from a listener of the same event, added after this one: the cancellation waits
 * for it, so that the request is seen as gone when it is answered.
 */
function onConnectionClose(this: WatchedSocket): void {
  const request = this[WATCHER];
  if (request !== undefined) process.nextTick(connectionClosed, request);
}

/** The request of a pipelined response closed: it ends after its response, unless the client left. */
function onQueuedRequestClose(this: WatchedMessage): void {
  const request = this[WATCHER];
  if (request !== undefined) connectionClosed(request);
}

function connectionClosed(request: WatchedRequest): void {
  if (request.response.writableFinished) return;
  request.cancel(new CancellationError('client-disconnected'));
}

/** The deadline timer of a request with a budget. */
export function onDeadline(request: WatchedRequest): void {
  // A response that streams already (an `@Sse()` stream, whose headers go out before its first event, or one
  // the handler writes itself) is past its budget's reach; a disconnect or shutdown still ends it.
  if (request.response.headersSent) return;
  request.cancel(new CancellationError('timeout', `The request ran out of time (${request.timeoutMs} ms)`));
}
