import { Inject, Injectable, Logger } from '@nestjs/common';
import { ServerResponse } from 'node:http';
import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import { RESOLVED_OPTIONS } from '../module/cancellation.module-definition.js';
import type { ResolvedCancellationOptions } from '../module/cancellation.options.js';

/** A socket of the HTTP server, with the response it is writing (Node's own field). */
type TrackedSocket = Socket & { _httpMessage?: unknown };

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
  private server: Server | undefined;
  /** Responses that were open when the drain began. */
  private readonly admitted = new WeakSet<ServerResponse>();
  /** How many of those have not closed yet. */
  private admittedOpen = 0;
  /** Called each time one of those closes. */
  private onAdmittedClosed: (() => void) | undefined = undefined;
  private readonly logger = new Logger('Cancellation');

  constructor(@Inject(RESOLVED_OPTIONS) private readonly options: ResolvedCancellationOptions) {}

  /** Starts counting the server's sockets. */
  attach(server: Server): void {
    this.server = server;
    server.on('connection', (socket: TrackedSocket) => {
      this.sockets.set(socket, performance.now());
      socket.once('close', () => this.sockets.delete(socket));
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
   * The hard deadline passed and the HTTP server still has open connections: a request that never reached
   * the interceptor (a slow upload, a guard that hangs), a response still being written, an idle keep-alive
   * socket. End them all (503 where no header was sent yet) so that `app.close()` resolves.
   */
  forceClose(): void {
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
    this.server?.closeIdleConnections?.();
    if (ended === 0 && this.options.logCancellations) {
      this.logger.log(
        `Shutdown deadline (${this.options.shutdownTimeoutMs} ms) passed: closed idle connections`,
      );
    }
  }
}
