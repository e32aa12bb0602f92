import type { INestApplication } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import type { ClientRequest, IncomingMessage, OutgoingHttpHeaders, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { CancellationKind } from '../core/cancellation-error.js';
import type { SettledEvent } from '../registry/cancellation-events.types.js';
import { RESOLVED_OPTIONS } from '../module/cancellation.module-definition.js';
import type { ResolvedCancellationOptions } from '../module/cancellation.options.js';
import { CancellationRegistry } from '../registry/cancellation-registry.service.js';

/** What `expectStopsOnHangUp()` sends, and how long it waits. */
export interface HangUpTestOptions {
  /** The request path (with its query string). */
  path: string;
  /** @default 'GET' */
  method?: string;
  /** Request headers. */
  headers?: OutgoingHttpHeaders;
  /** A request body, sent whole before the hang-up. */
  body?: string | Buffer;
  /** How long to let the handler run once it is in flight before hanging up, in milliseconds. @default 0 */
  hangUpAfterMs?: number;
  /** How long the handler may take to settle after the hang-up, in milliseconds. @default 1000 */
  settleWithinMs?: number;
  /** How long the request may take to reach the handler, in milliseconds. @default 5000 */
  startWithinMs?: number;
}

/** What `expectStopsOnHangUp()` observed. */
export interface HangUpTestResult {
  /** The request's id in the registry. */
  readonly id: string;
  /** Why the request was cancelled (`'client-disconnected'`, unless something else cancelled it first). */
  readonly kind: CancellationKind;
  /** Milliseconds from the abort to the handler settling. */
  readonly settledAfterMs: number;
}

/**
 * Tests that a route stops when its client goes away: sends the request over a real socket, waits until its
 * handler is running, hangs up, and resolves once the handler has settled; rejects, naming the route, when it
 * is still running `settleWithinMs` after the hang-up (the handler does not honour its signal), or when the
 * request finished before it could be hung up on. The application must import `CancellationModule`; it is
 * made to listen on a free loopback port if it does not listen yet.
 *
 * Only handlers that return a Promise can be caught still running: an Observable stops when unsubscribed.
 *
 * @example
 * ```ts
 * import { expectStopsOnHangUp } from 'nestjs-cancellation/testing';
 *
 * it('stops building the report when the client leaves', async () => {
 *   const { settledAfterMs } = await expectStopsOnHangUp(app, { path: '/reports/slow', settleWithinMs: 200 });
 *   expect(settledAfterMs).toBeLessThan(200);
 * });
 * ```
 */
export async function expectStopsOnHangUp(
  app: INestApplication,
  options: HangUpTestOptions,
): Promise<HangUpTestResult> {
  const { path, method = 'GET', hangUpAfterMs = 0, settleWithinMs = 1000, startWithinMs = 5000 } = options;
  const what = `${method} ${path}`;
  const registry = app.get(CancellationRegistry, { strict: false });
  const settings = app.get<symbol, ResolvedCancellationOptions>(RESOLVED_OPTIONS, { strict: false });
  const port = await listeningPort(app);
  const headerName = settings.requestIdHeader;
  const tag = `hang-up-test-${randomUUID()}`;
  const known = new Set(registry.inFlight().map((request) => request.id));
  const headers: OutgoingHttpHeaders = { ...options.headers };
  if (headerName !== false) headers[headerName] = tag;
  if (options.body !== undefined) headers['content-length'] = Buffer.byteLength(options.body);

  const settled = new Map<string, SettledEvent>();
  let onSettled: (() => void) | undefined;
  const stopListening = registry.onSettled((event) => {
    settled.set(event.id, event);
    onSettled?.();
  });
  let finished: string | undefined;
  const request: ClientRequest = httpRequest({ host: '127.0.0.1', port, method, path, headers });
  request.on('error', () => undefined);
  request.on('response', (response: IncomingMessage) => {
    response.resume();
    response.on('end', () => (finished = `answered ${response.statusCode}`));
  });
  request.end(options.body);
  try {
    const id = await until(startWithinMs, () => {
      if (finished !== undefined) throw new Error(`${what} ${finished} before it could be hung up on`);
      const entry = registry
        .inFlight()
        .find((candidate) =>
          headerName !== false
            ? candidate.correlationId === tag
            : !known.has(candidate.id) && candidate.method === method && candidate.cancelled === undefined,
        );
      return entry?.id;
    });
    if (id === undefined) throw new Error(`${what} did not reach its handler within ${startWithinMs} ms`);
    if (hangUpAfterMs > 0) await new Promise((resolve) => setTimeout(resolve, hangUpAfterMs));
    if (finished !== undefined) throw new Error(`${what} ${finished} before it could be hung up on`);
    request.destroy();
    const event = await new Promise<SettledEvent | undefined>((resolve) => {
      const timer = setTimeout(() => resolve(settled.get(id)), settleWithinMs);
      onSettled = () => {
        const found = settled.get(id);
        if (found === undefined) return;
        clearTimeout(timer);
        resolve(found);
      };
      onSettled();
    });
    if (event === undefined) {
      throw new Error(
        `${what} was still running ${settleWithinMs} ms after its client hung up: the handler does not stop ` +
          `when its signal aborts (pass CancellationService.signal or @RequestSignal() to what it awaits, ` +
          `call checkpoint() in its loops)`,
      );
    }
    return { id, kind: event.kind, settledAfterMs: event.settledAfterMs };
  } finally {
    stopListening();
    request.destroy();
  }
}

/** The port the application listens on, after making it listen when it does not yet. */
async function listeningPort(app: INestApplication): Promise<number> {
  let address = (app.getHttpServer() as Server).address();
  if (address === null) {
    await app.listen(0, '127.0.0.1');
    address = (app.getHttpServer() as Server).address();
  }
  if (address === null || typeof address === 'string') {
    throw new Error('nestjs-cancellation/testing: the application must listen on a TCP port');
  }
  return (address as AddressInfo).port;
}

/** Polls `probe` every few milliseconds until it returns a value, for at most `ms`. */
async function until<T>(ms: number, probe: () => T | undefined): Promise<T | undefined> {
  const deadline = performance.now() + ms;
  for (;;) {
    const value = probe();
    if (value !== undefined || performance.now() > deadline) return value;
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}
