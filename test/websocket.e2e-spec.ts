import 'reflect-metadata';
import { UseInterceptors } from '@nestjs/common';
import { WsAdapter } from '@nestjs/platform-ws';
import { ConnectedSocket, MessageBody, SubscribeMessage, WebSocketGateway } from '@nestjs/websockets';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import WebSocket from 'ws';
import {
  CancellationError,
  CancellationInterceptor,
  CancellationModule,
  CancellationService,
  RequestSignal,
} from 'nestjs-cancellation';
import { ADAPTERS, createApp, rootModule, waitFor } from './utils/harness.js';
import type { AdapterName, TestApp } from './utils/harness.js';

/** The major of the @nestjs/websockets that the suite runs on (Nest 11 in the compat/nest11 job, else 12). */
const WEBSOCKETS_MAJOR = Number(
  (
    JSON.parse(
      readFileSync(
        join(dirname(createRequire(import.meta.url).resolve('@nestjs/websockets')), 'package.json'),
        'utf8',
      ),
    ) as { version: string }
  ).version.split('.')[0],
);

interface Probe {
  started: boolean;
  signal: AbortSignal | undefined;
  /** What `@RequestSignal()` resolved to in the same handler. */
  paramSignal: AbortSignal | undefined;
  finished: boolean;
  /** The server side of the connection. */
  client: WebSocket | undefined;
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

/**
 * Nest 11 runs no global interceptor on gateways (Nest 12 does), so a gateway meant for both names the
 * interceptor itself. On Nest 12 it then runs twice per message, globally and here: the assertions on log lines
 * and listeners below show that the message still gets one scope.
 */
@WebSocketGateway({ path: '/ws' })
@UseInterceptors(CancellationInterceptor)
class WorkGateway {
  constructor(private readonly cancellation: CancellationService) {}

  /** Works for `ms` on a timer that honours the message's signal, then answers `done`. */
  @SubscribeMessage('work')
  async work(
    @MessageBody() body: { tag: string; ms: number },
    @ConnectedSocket() client: WebSocket,
    @RequestSignal() paramSignal: AbortSignal,
  ): Promise<{ event: string; data: string }> {
    const record = probe(body.tag);
    record.started = true;
    record.client = client;
    record.signal = this.cancellation.signal;
    record.paramSignal = paramSignal;
    await delay(body.ms, undefined, { signal: this.cancellation.signal });
    record.finished = true;
    return { event: 'done', data: body.tag };
  }
}

/** A gateway that counts on the global interceptor alone. */
@WebSocketGateway({ path: '/plain' })
class PlainGateway {
  constructor(private readonly cancellation: CancellationService) {}

  /** Answers whether the handler runs in a message's scope (outside one, `signal` is the shutdown signal). */
  @SubscribeMessage('scoped')
  scoped(): { event: string; data: boolean } {
    return { event: 'scoped', data: this.cancellation.signal !== this.cancellation.shutdownSignal };
  }
}

/** A `ws` client connected to a gateway, with the replies it received. */
async function connect(port: number, path = '/ws'): Promise<{ socket: WebSocket; replies: unknown[] }> {
  const socket = new WebSocket(`ws://127.0.0.1:${port}${path}`);
  const replies: unknown[] = [];
  socket.on('message', (data: Buffer) => replies.push(JSON.parse(data.toString('utf8'))));
  socket.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    socket.once('open', resolve);
    socket.once('error', reject);
  });
  return { socket, replies };
}

function send(socket: WebSocket, tag: string, ms: number): void {
  socket.send(JSON.stringify({ event: 'work', data: { tag, ms } }));
}

describe.each(ADAPTERS)('WebSocket gateway (platform-ws) on %s', (adapter: AdapterName) => {
  let testApp: TestApp;

  beforeEach(async () => {
    testApp = await createApp(
      adapter,
      rootModule({
        imports: [CancellationModule.forRoot({ shutdownTimeoutMs: 4000 })],
        providers: [WorkGateway, PlainGateway],
      }),
      { configure: (app) => void app.useWebSocketAdapter(new WsAdapter(app)) },
    );
  });

  afterEach(async () => {
    await testApp?.close();
  });

  function tagged(name: string): string {
    return `${adapter}-${name}-${Math.random().toString(36).slice(2)}`;
  }

  it("aborts a message's signal when its client disconnects, and only that client's", async () => {
    const leaving = await connect(testApp.port);
    const staying = await connect(testApp.port);
    const [a1, a2, b] = [tagged('a1'), tagged('a2'), tagged('b')];
    send(leaving.socket, a1, 10_000);
    send(leaving.socket, a2, 10_000);
    send(staying.socket, b, 400);
    await waitFor(() => probe(a1).started && probe(a2).started && probe(b).started, {
      message: 'the handlers to start',
    });
    expect(probe(a1).paramSignal).toBe(probe(a1).signal);
    leaving.socket.terminate();
    await waitFor(() => probe(a1).signal!.aborted && probe(a2).signal!.aborted, {
      message: "the leaving client's signals to abort",
    });
    for (const tag of [a1, a2]) {
      expect(probe(tag).signal!.reason).toBeInstanceOf(CancellationError);
      expect((probe(tag).signal!.reason as CancellationError).kind).toBe('client-disconnected');
      expect(probe(tag).finished).toBe(false);
    }
    expect(probe(b).signal!.aborted).toBe(false);
    await waitFor(() => staying.replies.length > 0, { message: 'the staying client to get its reply' });
    expect(staying.replies).toEqual([{ event: 'done', data: b }]);
    expect(probe(b).signal!.aborted).toBe(false);
    const verbose = testApp.logs.inContext('Cancellation').map((line) => line.message);
    expect(verbose.filter((line) => /^WS work cancelled \(client-disconnected\)/.test(line))).toHaveLength(2);
    expect(testApp.logs.errors).toEqual([]);
    staying.socket.close();
  });

  it('removes its listener from the connection once the messages are handled', async () => {
    const { socket, replies } = await connect(testApp.port);
    const first = tagged('quick0');
    send(socket, first, 1);
    await waitFor(() => replies.length === 1, { message: 'the first reply' });
    // What the gateway itself listens with, once it handles the client's messages.
    const client = probe(first).client!;
    const baseline = client.listenerCount('close');
    const tags = [tagged('quick1'), tagged('quick2'), tagged('quick3')];
    for (const tag of tags) send(socket, tag, 50);
    await waitFor(() => probe(tags[2]!).started, { message: 'the handlers to start' });
    // One listener for the three messages in flight, not one each.
    expect(client.listenerCount('close')).toBe(baseline + 1);
    await waitFor(() => replies.length === 4, { message: 'four replies' });
    expect(client.listenerCount('close')).toBe(baseline);
    const scoped = Object.getOwnPropertySymbols(client).filter(
      (key) => key.description === 'nestjs-cancellation.message-scopes',
    );
    for (const key of scoped) expect((client as unknown as Record<symbol, unknown>)[key]).toBeUndefined();
    expect(tags.every((tag) => !probe(tag).signal!.aborted)).toBe(true);
    socket.close();
  });

  it(`${WEBSOCKETS_MAJOR >= 12 ? 'covers' : 'cannot cover'} a gateway without @UseInterceptors(CancellationInterceptor) on Nest ${WEBSOCKETS_MAJOR}`, async () => {
    const { socket, replies } = await connect(testApp.port, '/plain');
    socket.send(JSON.stringify({ event: 'scoped', data: {} }));
    await waitFor(() => replies.length > 0, { message: 'the reply' });
    // Where Nest runs no global interceptor on gateways (11), the handler runs outside any message's scope.
    expect(replies).toEqual([{ event: 'scoped', data: WEBSOCKETS_MAJOR >= 12 }]);
    expect(testApp.logs.errors).toEqual([]);
    socket.close();
  });

  it('aborts the signal of every message in flight on shutdown, promptly and without error logs', async () => {
    const { socket } = await connect(testApp.port);
    const tag = tagged('shutdown');
    send(socket, tag, 10_000);
    await waitFor(() => probe(tag).started, { message: 'the handler to start' });
    const closed = new Promise((resolve) => socket.once('close', resolve));
    const closeMs = await testApp.close();
    expect(closeMs).toBeLessThan(2000);
    expect((probe(tag).signal!.reason as CancellationError).kind).toBe('shutdown');
    expect(probe(tag).finished).toBe(false);
    await closed;
    expect(testApp.logs.errors).toEqual([]);
  });
});
