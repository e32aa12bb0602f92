import { Inject, Injectable, Logger } from '@nestjs/common';
import { ServerResponse } from 'node:http';
import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import { Server as TlsServer } from 'node:tls';
import { RESOLVED_OPTIONS } from '../module/cancellation.module-definition.js';
import type { ResolvedCancellationOptions } from '../module/cancellation.options.js';

/**
 * A socket of the HTTP server, with the response it is writing (Node's own field); on HTTPS the TLS socket,
 * whose `_parent` is the TCP socket under it.
 */
type TrackedSocket = Socket & { _httpMessage?: unknown; _parent?: Socket };

/**
 * How long a connection may stay silent after it connected, once the listener is closed, before the shutdown
 * closes it (see `closeSilentConnections`).
 */
const FIRST_REQUEST_MS = 1_000;

/**
 * The HTTP server's connections, one listener each: which requests arrived before the drain began (they get
 * the grace period wherever they are: past the interceptor, in a guard, still uploading) and what the hard
 * deadline ends when something still holds the server open.
 * @internal
 */
@Injectable()
export class ConnectionTracker {
  /** Open sockets of the HTTP server and when each connected. */
  private readonly sockets = new Map<TrackedSocket, number>();
  /**
   * HTTPS: TCP connections whose TLS handshake has not completed (nothing else would end them), and when each
   * connected.
   */
  private readonly handshaking = new Map<Socket, number>();
  private server: Server | undefined;
  private accepted = 0;
  /** Responses that were open when the drain began. */
  private readonly admitted = new WeakSet<ServerResponse>();
  /** How many of those have not closed yet. */
  private admittedOpen = 0;
  /** Called each time one of those closes. */
  private onAdmittedClosed: (() => void) | undefined = undefined;
  /** The next look for connections that stayed silent too long. */
  private silentCheck: NodeJS.Timeout | undefined = undefined;
  private readonly logger = new Logger('Cancellation');

  constructor(@Inject(RESOLVED_OPTIONS) private readonly options: ResolvedCancellationOptions) {}

  /** How many connections the server has accepted so far. */
  get acceptedCount(): number {
    return this.accepted;
  }

  /** Starts counting the server's sockets. */
  attach(server: Server): void {
    refuseHttp2(server);
    this.server = server;
    const track = (socket: TrackedSocket): void => {
      this.sockets.set(socket, performance.now());
      socket.once('close', () => this.sockets.delete(socket));
    };
    if (!(server instanceof TlsServer)) {
      server.on('connection', (socket: TrackedSocket) => {
        this.accepted++;
        track(socket);
      });
      return;
    }
    // On HTTPS, 'connection' gives the TCP socket; the response in progress lives on the TLS socket above it.
    server.on('connection', (socket: Socket) => {
      this.accepted++;
      this.handshaking.set(socket, performance.now());
      socket.once('close', () => this.handshaking.delete(socket));
    });
    server.on('secureConnection', (socket: TrackedSocket) => {
      if (socket._parent !== undefined) this.handshaking.delete(socket._parent);
      track(socket);
    });
  }

  /** Whether the request `response` answers arrived before the drain began. */
  isAdmitted(response: ServerResponse): boolean {
    return this.admitted.has(response);
  }

  /** How many requests that arrived before the drain are still open. */
  get openAdmitted(): number {
    return this.admittedOpen;
  }

  /**
   * Remembers the responses open as the drain begins and counts them down as they close, calling `onClosed`
   * each time one does.
   */
  admitOpenRequests(onClosed: () => void): void {
    this.onAdmittedClosed = onClosed;
    for (const socket of this.sockets.keys()) {
      const response = socket._httpMessage;
      if (!(response instanceof ServerResponse) || response.writableEnded || this.admitted.has(response))
        continue;
      this.admitted.add(response);
      this.admittedOpen++;
      response.once('close', () => {
        this.admittedOpen--;
        this.onAdmittedClosed?.();
      });
    }
  }

  /** Stops reporting admitted responses closing. */
  stopWatchingAdmitted(): void {
    this.onAdmittedClosed = undefined;
  }

  /**
   * From now on (the listener is closed), closes each connection that has not sent a byte of a request
   * `FIRST_REQUEST_MS` after it connected (or at `deadline`): one accepted just before the listener closed, or
   * still in its TLS handshake. Until then a request arriving on it meets the door's 503 rather than a closed
   * connection; a connection that never sends one (a preconnect) would otherwise hold Nest's close of the HTTP
   * server, which waits for it, until the hard deadline. Go's `Shutdown` gives such a connection 5 s.
   */
  closeSilentConnections(deadline: number): void {
    clearTimeout(this.silentCheck);
    const now = performance.now();
    let next = Infinity;
    const waiting = [...this.sockets].filter(([socket]) => isSilent(socket)).concat([...this.handshaking]);
    for (const [socket, connectedAt] of waiting) {
      const due = Math.min(connectedAt + FIRST_REQUEST_MS, deadline);
      if (due <= now) socket.destroy();
      else next = Math.min(next, due);
    }
    if (next === Infinity) return;
    this.silentCheck = setTimeout(() => this.closeSilentConnections(deadline), next - now);
    this.silentCheck.unref();
  }

  /**
   * The hard deadline passed and the HTTP server still has open connections: a request that never reached
   * the interceptor (a slow upload, a guard that hangs), a response still being written, an idle keep-alive
   * socket. End them all (503 where no header was sent yet) so that `app.close()` resolves.
   */
  forceClose(): void {
    clearTimeout(this.silentCheck);
    const now = performance.now();
    let ended = 0;
    for (const [socket, connectedAt] of this.sockets) {
      const response = socket._httpMessage;
      if (response instanceof ServerResponse && !response.writableEnded) {
        const { req } = response;
        this.logger.warn(
          // The path without its query string, which may carry tokens.
          `Shutdown deadline (${this.options.shutdownTimeoutMs} ms) passed with ${req.method} ` +
            `${(req.url ?? '').split('?')[0]} ` +
            `still open (connection age ${Math.round(now - connectedAt)} ms): ` +
            (response.headersSent ? 'destroying the connection' : 'answering 503'),
        );
        ended++;
        if (!response.headersSent) {
          response.writeHead(503, {
            'Content-Type': 'application/json; charset=utf-8',
            'Retry-After': String(this.options.retryAfterSeconds),
            Connection: 'close',
          });
          response.end(
            JSON.stringify({
              message: 'The application is shutting down',
              error: 'Service Unavailable',
              statusCode: 503,
            }),
          );
          continue;
        }
      }
      socket.destroy();
    }
    this.sockets.clear();
    for (const socket of this.handshaking.keys()) socket.destroy();
    this.handshaking.clear();
    this.server?.closeIdleConnections?.();
    if (ended === 0 && this.options.logCancellations) {
      this.logger.log(
        `Shutdown deadline (${this.options.shutdownTimeoutMs} ms) passed: closed idle connections`,
      );
    }
  }
}

/**
 * Whether a connection has not sent a byte yet (`bytesRead` counts what the request parser received; on HTTPS,
 * decrypted bytes).
 */
function isSilent(socket: Socket): boolean {
  return socket.bytesRead === 0 && !socket.destroyed;
}

/**
 * HTTP/2 is refused at start-up rather than half served: its compatibility API reports neither a client's
 * stream reset as a hang-up nor its sessions to the shutdown (which then waits for every client's session),
 * and forbids the `Connection: close` a shutdown answers with.
 */
function refuseHttp2(server: Server): void {
  // Only HTTP/2 servers (`http2.createServer()`, `createSecureServer()`) have `updateSettings()`.
  if (typeof (server as { updateSettings?: unknown }).updateSettings !== 'function') return;
  throw new Error(
    'nestjs-cancellation does not support HTTP/2 (e.g. new FastifyAdapter({ http2: true })): client hang-ups ' +
      'and shutdown cannot be followed per HTTP/2 stream, so requests would not be cancelled as promised. ' +
      'Serve HTTP/1.1 (HTTPS is supported) and terminate HTTP/2 at a proxy or load balancer in front.',
  );
}
