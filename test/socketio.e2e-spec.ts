import 'reflect-metadata';
import { UseInterceptors } from '@nestjs/common';
import { IoAdapter } from '@nestjs/platform-socket.io';
import { ConnectedSocket, MessageBody, SubscribeMessage, WebSocketGateway } from '@nestjs/websockets';
import { setTimeout as delay } from 'node:timers/promises';
import type { Socket } from 'socket.io';
import { io } from 'socket.io-client';
import type { Socket as ClientSocket } from 'socket.io-client';
import {
  CancellationError,
  CancellationInterceptor,
  CancellationModule,
  CancellationService,
  RequestSignal,
} from 'nestjs-cancellation';
import { ADAPTERS, createApp, rootModule, waitFor } from './utils/harness.js';
import type { AdapterName, TestApp } from './utils/harness.js';

interface Probe {
  started: boolean;
  signal: AbortSignal | undefined;
  /** What `@RequestSignal()` resolved to in the same handler. */
  paramSignal: AbortSignal | undefined;
  finished: boolean;
  /** The server side of the connection. */
  client: Socket | undefined;
}

const probes = new Map<string, Probe>();
function probe(tag: string): Probe {
  let found = probes.get(tag);
  if (found === undefined) {
    found = { started: false, signal: undefined, paramSignal: undefined, finished: false, client: undefined };
    probes.set(tag, found);
  }
  return found;
}

/** No port: the socket.io server shares the HTTP server of the app, which listens on port 0. */
// Nest 11 runs no global interceptor on gateways; on Nest 12 this one leaves the message to the global one.
@WebSocketGateway()
@UseInterceptors(CancellationInterceptor)
class WorkGateway {
  constructor(private readonly cancellation: CancellationService) {}

  /** Works for `ms` on a timer that honours the message's signal, then acknowledges with the tag. */
  @SubscribeMessage('work')
  async work(
    @MessageBody() body: { tag: string; ms: number },
    @ConnectedSocket() client: Socket,
    @RequestSignal() paramSignal: AbortSignal,
  ): Promise<string> {
    const record = probe(body.tag);
    record.started = true;
    record.client = client;
    record.signal = this.cancellation.signal;
    record.paramSignal = paramSignal;
    await delay(body.ms, undefined, { signal: this.cancellation.signal });
    record.finished = true;
    return body.tag;
  }
}

/** A socket.io client connected to the gateway over WebSocket only (no long-polling handshake). */
async function connect(port: number): Promise<ClientSocket> {
  // No reconnection: a client the server drops (shutdown) must stay gone, not leave a retry timer behind.
  const socket = io(`http://127.0.0.1:${port}`, { transports: ['websocket'], reconnection: false });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('connect_error', reject);
  });
  return socket;
}

/** Sends a `work` message without asking for an acknowledgement (its client is meant to leave first). */
function send(socket: ClientSocket, tag: string, ms: number): void {
  socket.emit('work', { tag, ms });
}

/** Sends a `work` message and resolves with the gateway's acknowledgement. */
function call(socket: ClientSocket, tag: string, ms: number): Promise<unknown> {
  return socket.emitWithAck('work', { tag, ms });
}

function cancelledLines(testApp: TestApp): string[] {
  return testApp.logs
    .inContext('Cancellation')
    .map((line) => line.message)
    .filter((line) => /^WS work cancelled \(client-disconnected\)/.test(line));
}

function expectCancelled(tag: string, kind: CancellationError['kind']): void {
  const { signal, finished } = probe(tag);
  expect(signal!.reason).toBeInstanceOf(CancellationError);
  expect((signal!.reason as CancellationError).kind).toBe(kind);
  expect(finished).toBe(false);
}

describe.each(ADAPTERS)('WebSocket gateway (socket.io) on %s', (adapter: AdapterName) => {
  let testApp: TestApp;
  const clients: ClientSocket[] = [];

  beforeEach(async () => {
    testApp = await createApp(
      adapter,
      rootModule({
        imports: [CancellationModule.forRoot({ shutdownTimeoutMs: 4000 })],
        providers: [WorkGateway],
      }),
      { configure: (app) => void app.useWebSocketAdapter(new IoAdapter(app)) },
    );
  });

  afterEach(async () => {
    for (const client of clients.splice(0)) client.disconnect();
    await testApp?.close();
  });

  async function client(): Promise<ClientSocket> {
    const socket = await connect(testApp.port);
    clients.push(socket);
    return socket;
  }

  function tagged(name: string): string {
    return `${adapter}-${name}-${Math.random().toString(36).slice(2)}`;
  }

  it("aborts a message's signal when its client disconnects, without error logs", async () => {
    const socket = await client();
    const tag = tagged('leave');
    send(socket, tag, 10_000);
    await waitFor(() => probe(tag).started, { message: 'the handler to start' });
    expect(probe(tag).paramSignal).toBe(probe(tag).signal);
    socket.disconnect();
    await waitFor(() => probe(tag).signal!.aborted, { message: 'the signal to abort' });
    expectCancelled(tag, 'client-disconnected');
    expect(cancelledLines(testApp)).toHaveLength(1);
    expect(testApp.logs.errors).toEqual([]);
  });

  it("cancels only the leaving client's work; the other's completes and is acknowledged", async () => {
    const leaving = await client();
    const staying = await client();
    const [a1, a2, b] = [tagged('a1'), tagged('a2'), tagged('b')];
    send(leaving, a1, 10_000);
    send(leaving, a2, 10_000);
    const ack = call(staying, b, 400);
    await waitFor(() => probe(a1).started && probe(a2).started && probe(b).started, {
      message: 'the handlers to start',
    });
    // The transport drops, as when a browser tab closes, rather than a polite namespace disconnect.
    leaving.io.engine.close();
    await waitFor(() => probe(a1).signal!.aborted && probe(a2).signal!.aborted, {
      message: "the leaving client's signals to abort",
    });
    expectCancelled(a1, 'client-disconnected');
    expectCancelled(a2, 'client-disconnected');
    expect(probe(b).signal!.aborted).toBe(false);
    await expect(ack).resolves.toBe(b);
    expect(probe(b).finished).toBe(true);
    expect(probe(b).signal!.aborted).toBe(false);
    expect(cancelledLines(testApp)).toHaveLength(2);
    expect(testApp.logs.errors).toEqual([]);
  });

  it('aborts the signal of every message in flight on shutdown, promptly and without error logs', async () => {
    const socket = await client();
    const tag = tagged('shutdown');
    send(socket, tag, 10_000);
    await waitFor(() => probe(tag).started, { message: 'the handler to start' });
    const disconnected = new Promise((resolve) => socket.once('disconnect', resolve));
    const closeMs = await testApp.close();
    expect(closeMs).toBeLessThan(2000);
    expectCancelled(tag, 'shutdown');
    await disconnected;
    expect(testApp.logs.errors).toEqual([]);
  });

  it('removes its listener from the connection once the messages are handled', async () => {
    const socket = await client();
    const first = tagged('quick0');
    await expect(call(socket, first, 1)).resolves.toBe(first);
    // What the gateway itself listens with, once it handles the client's messages.
    const connection = probe(first).client!;
    const baseline = connection.listenerCount('disconnect');
    const tags = [tagged('quick1'), tagged('quick2'), tagged('quick3')];
    const acks = tags.map((tag) => call(socket, tag, 50));
    await waitFor(() => tags.every((tag) => probe(tag).started), { message: 'the handlers to start' });
    // One listener for the three messages in flight, not one each.
    expect(connection.listenerCount('disconnect')).toBe(baseline + 1);
    await expect(Promise.all(acks)).resolves.toEqual(tags);
    expect(connection.listenerCount('disconnect')).toBe(baseline);
    const scoped = Object.getOwnPropertySymbols(connection).filter(
      (key) => key.description === 'nestjs-cancellation.message-scopes',
    );
    for (const key of scoped) expect((connection as unknown as Record<symbol, unknown>)[key]).toBeUndefined();
    expect(tags.every((tag) => !probe(tag).signal!.aborted)).toBe(true);
  });
});
