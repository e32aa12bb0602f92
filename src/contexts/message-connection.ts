import { CancellationError } from '../core/cancellation-error.js';

/**
 * The connection a message came over, as far as cancellation needs it: a `ws` WebSocket (`'close'`,
 * `readyState`), a socket.io Socket (`'disconnect'`, `connected`) or a `net.Socket` of the TCP transport
 * (`'close'`, `destroyed`).
 * @internal
 */
export interface Connection {
  on(event: string, listener: () => void): unknown;
  removeListener(event: string, listener: () => void): unknown;
  readyState?: unknown;
  connected?: unknown;
  destroyed?: unknown;
}

/** What a connection's listener cancels: the messages of that connection being handled. */
interface Cancellable {
  cancel(reason: CancellationError): void;
}

/** Where a connection keeps the scopes of its messages being handled, for its one shared listener. */
const SCOPES = Symbol('nestjs-cancellation.message-scopes');

interface Watched {
  readonly scopes: Set<Cancellable>;
  readonly event: string;
  readonly listener: () => void;
}

type WatchedConnection = Connection & { [SCOPES]?: Watched };

/** `ws`' `WebSocket.CLOSING`: the socket is closing or closed. */
const WS_CLOSING = 2;

/** @internal */
export function isClosed(connection: Connection): boolean {
  if (typeof connection.readyState === 'number') return connection.readyState >= WS_CLOSING;
  if (typeof connection.connected === 'boolean') return !connection.connected;
  return connection.destroyed === true;
}

/**
 * Cancels `scope` when `connection` closes. The connection has one listener however many of its messages are
 * in flight, installed with the first and removed with the last (`unwatchConnection`).
 * @internal
 */
export function watchConnection(connection: WatchedConnection, scope: Cancellable): void {
  let watched = connection[SCOPES];
  if (watched === undefined) {
    const scopes = new Set<Cancellable>();
    const listener = (): void => {
      const reason = new CancellationError('client-disconnected');
      // Cancelling ends the stream, whose teardown removes the scope: deleting while iterating is safe.
      for (const each of scopes) each.cancel(reason);
    };
    // socket.io reports a client leaving as 'disconnect'; `ws` and `net` sockets as 'close'.
    const event = typeof connection.connected === 'boolean' ? 'disconnect' : 'close';
    connection.on(event, listener);
    watched = { scopes, event, listener };
    connection[SCOPES] = watched;
  }
  watched.scopes.add(scope);
}

/** Stops watching `connection` for `scope`; the last scope removes the listener. @internal */
export function unwatchConnection(connection: WatchedConnection, scope: Cancellable): void {
  const watched = connection[SCOPES];
  if (watched === undefined) return;
  watched.scopes.delete(scope);
  if (watched.scopes.size > 0) return;
  connection.removeListener(watched.event, watched.listener);
  connection[SCOPES] = undefined;
}
