import 'reflect-metadata';
import { Controller, Get, Inject, Query, Res, StreamableFile } from '@nestjs/common';
import { getEventListeners } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import { CancellationModule, CancellationService } from 'nestjs-cancellation';
import { InFlightRegistry } from '../src/registry/in-flight.registry.js';
import { ConnectionTracker } from '../src/shutdown/connection-tracker.js';
import { ADAPTERS, createApp, request, rootModule, startRequest, waitFor } from './utils/harness.js';
import type { AdapterName, TestApp } from './utils/harness.js';

/** Listener counts of one request's response and socket, taken inside its handler. */
interface Snapshot {
  readonly response: http.ServerResponse;
  readonly socket: Socket;
  readonly responseClose: number;
  readonly socketListeners: Record<string, number>;
}

function listenerCounts(emitter: NodeJS.EventEmitter): Record<string, number> {
  return Object.fromEntries(emitter.eventNames().map((name) => [String(name), emitter.listenerCount(name)]));
}

const snapshots = new Map<string, Snapshot>();
const slowStarted = new Set<string>();

/** Express hands over Node's response, Fastify its reply with Node's response under `raw`. */
function rawResponse(res: unknown): http.ServerResponse {
  return ((res as { raw?: http.ServerResponse }).raw ?? res) as http.ServerResponse;
}

/** Records the listener counts of the response and socket of the request `tag`, from inside its handler. */
function takeSnapshot(tag: string, res: unknown): string {
  const response = rawResponse(res);
  const socket = response.socket as Socket;
  snapshots.set(tag, {
    response,
    socket,
    responseClose: response.listenerCount('close'),
    socketListeners: listenerCounts(socket),
  });
  return 'ok';
}

@Controller('hygiene')
class HygieneController {
  constructor(@Inject(CancellationService) private readonly cancellation: CancellationService) {}

  @Get('probe')
  probe(@Query('tag') tag: string, @Res({ passthrough: true }) res: unknown): string {
    return takeSnapshot(tag, res);
  }

  /** A body the platform streams after the handler returns. */
  @Get('file')
  file(): StreamableFile {
    return new StreamableFile(Readable.from(['stream', 'ed']));
  }

  /** Reads its signal (so an AbortController exists) and waits until the client hangs up. */
  @Get('slow')
  async slow(@Query('tag') tag: string): Promise<string> {
    const { signal } = this.cancellation;
    slowStarted.add(tag);
    await delay(5000, 'late', { signal });
    return 'late';
  }
}

/** The same probe on an application without CancellationModule: the baseline. */
@Controller('hygiene')
class BareController {
  @Get('probe')
  probe(@Query('tag') tag: string, @Res({ passthrough: true }) res: unknown): string {
    return takeSnapshot(tag, res);
  }
}

/**
 * Records the `'close'` listeners that the library (code in `src/http/request-scope.ts` and
 * `src/http/response-watch.ts`) adds to and removes from `ServerResponse`s, by wrapping `on` and
 * `removeListener` of `ServerResponse.prototype`.
 */
class ResponseListenerSpy {
  readonly added: { response: http.ServerResponse; listener: unknown }[] = [];
  readonly removed: { response: http.ServerResponse; listener: unknown }[] = [];
  private readonly proto = http.ServerResponse.prototype as unknown as Record<string, unknown>;
  private readonly hadOwn = {
    on: Object.hasOwn(this.proto, 'on'),
    removeListener: Object.hasOwn(this.proto, 'removeListener'),
  };
  private readonly original = { on: this.proto.on, removeListener: this.proto.removeListener } as Record<
    'on' | 'removeListener',
    (
      this: http.ServerResponse,
      event: string | symbol,
      listener: (...args: unknown[]) => void,
    ) => http.ServerResponse
  >;

  install(): void {
    this.wrap('on', this.added);
    this.wrap('removeListener', this.removed);
  }

  restore(): void {
    for (const name of ['on', 'removeListener'] as const) {
      if (this.hadOwn[name]) this.proto[name] = this.original[name];
      else delete this.proto[name];
    }
  }

  private wrap(
    name: 'on' | 'removeListener',
    calls: { response: http.ServerResponse; listener: unknown }[],
  ): void {
    const original = this.original[name];
    this.proto[name] = function (
      this: http.ServerResponse,
      event: string | symbol,
      listener: (...args: unknown[]) => void,
    ) {
      if (event === 'close' && /request-scope|response-watch/.test(new Error().stack ?? ''))
        calls.push({ response: this, listener });
      return original.call(this, event, listener);
    };
  }
}

function withoutClose(counts: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(counts).filter(([name]) => name !== 'close'));
}

async function probeOn(t: TestApp, tag: string, agent: http.Agent): Promise<Snapshot> {
  const response = await request(t.port, `/hygiene/probe?tag=${tag}`, { agent });
  expect(response.status).toBe(200);
  return snapshots.get(tag) as Snapshot;
}

describe.each(ADAPTERS)('listener hygiene (%s)', (adapter: AdapterName) => {
  let t: TestApp;
  let bare: TestApp;
  let agent: http.Agent;
  let seq = 0;
  const tag = (what: string) => `${adapter}-${what}-${++seq}`;

  beforeAll(async () => {
    t = await createApp(
      adapter,
      rootModule({ imports: [CancellationModule.forRoot()], controllers: [HygieneController] }),
    );
    bare = await createApp(adapter, rootModule({ controllers: [BareController] }));
  });

  beforeEach(() => {
    agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  });

  afterEach(() => agent.destroy());

  afterAll(async () => {
    await t.close();
    await bare.close();
    expect(t.logs.errors).toEqual([]);
  });

  it('does not leak listeners between two requests on one keep-alive connection', async () => {
    const bareFirst = await probeOn(bare, tag('bare'), agent);
    agent.destroy();
    agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

    const first = await probeOn(t, tag('first'), agent);
    const second = await probeOn(t, tag('second'), agent);
    expect(second.socket).toBe(first.socket);
    expect(second.response).not.toBe(first.response);

    // While a handler runs: no listener more than bare Nest on the response. On the socket at most two more
    // 'close' listeners, per connection (the registry of open sockets, and the hang-up watch of the requests
    // it carries), kept across its keep-alive requests.
    expect(first.responseClose).toBe(bareFirst.responseClose);
    expect(withoutClose(first.socketListeners)).toEqual(withoutClose(bareFirst.socketListeners));
    expect(first.socketListeners.close - bareFirst.socketListeners.close).toBeLessThanOrEqual(2);
    // The second request on the connection inherits nothing from the first.
    expect(second.responseClose).toBe(first.responseClose);
    expect(second.socketListeners).toEqual(first.socketListeners);

    // Once answered, the responses hold no more listeners than bare Nest leaves behind.
    await waitFor(() => second.response.writableFinished);
    expect(first.response.listenerCount('close')).toBe(bareFirst.response.listenerCount('close'));
    expect(second.response.listenerCount('close')).toBe(bareFirst.response.listenerCount('close'));
    expect(t.app.get(InFlightRegistry).size).toBe(0);
  });

  it('is back to baseline after 300 sequential requests, some aborted, and removes every listener it added', async () => {
    const registry = t.app.get(InFlightRegistry);
    const { shutdownSignal } = t.app.get(CancellationService);
    const spy = new ResponseListenerSpy();
    spy.install();
    let baseline: Snapshot | undefined;
    let last: Snapshot | undefined;
    let aborted = 0;
    try {
      for (let i = 0; i < 300; i++) {
        if (i % 10 === 5) {
          const id = tag('slow');
          const client = startRequest(t.port, `/hygiene/slow?tag=${id}`);
          await waitFor(() => slowStarted.has(id), { message: `slow request ${i} to start` });
          expect(registry.size).toBe(1);
          client.abort();
          await client.settled();
          aborted++;
        } else {
          last = await probeOn(t, tag('probe'), agent);
          baseline ??= last;
          expect(last.responseClose).toBe(baseline.responseClose);
        }
      }
      await waitFor(() => registry.size === 0, { message: 'the registry to drain' });
    } finally {
      spy.restore();
    }
    expect(aborted).toBe(30);

    // Every request on the one keep-alive socket saw the same listeners on it as the first one did.
    expect(last?.socket).toBe(baseline?.socket);
    expect(listenerCounts(last?.socket as Socket)).toEqual(listenerCounts(baseline?.socket as Socket));
    expect(last?.socketListeners).toEqual(baseline?.socketListeners);
    // No per-request listener on the application's shutdown signal.
    expect(getEventListeners(shutdownSignal, 'abort')).toHaveLength(0);
    // The registry of open sockets (for the shutdown deadline) let go of the 30 closed ones:
    // only the keep-alive connection is left.
    const sockets = (t.app.get(ConnectionTracker) as unknown as { sockets: Map<Socket, number> }).sockets;
    await waitFor(() => sockets.size === 1, {
      message: `the socket registry to shrink (size ${sockets.size})`,
    });
    expect([...sockets.keys()]).toEqual([last?.socket]);

    // No listener on any response: hang-ups are heard on the connections.
    expect(spy.added).toEqual([]);
    expect(spy.removed).toEqual([]);
  });

  it('gives a streamed body one listener on its response, removed when the response closes', async () => {
    const spy = new ResponseListenerSpy();
    spy.install();
    try {
      const response = await request(t.port, '/hygiene/file', { agent });
      expect(response.status).toBe(200);
      expect(response.body).toBe('streamed');
      await waitFor(() => spy.removed.length === 1, { message: 'the listener to go' });
    } finally {
      spy.restore();
    }
    expect(spy.added).toHaveLength(1);
    expect(spy.removed[0]).toEqual(spy.added[0]);
    expect(spy.added[0].response.listeners('close')).not.toContain(spy.added[0].listener);
    expect(t.app.get(InFlightRegistry).size).toBe(0);
  });

  it('hears a hang-up on a pipelined request that waits for the one before it', async () => {
    const first = tag('pipelined-a');
    const second = tag('pipelined-b');
    const socket = net.connect(t.port, '127.0.0.1');
    socket.on('error', () => {});
    socket.write(
      `GET /hygiene/slow?tag=${first} HTTP/1.1\r\nHost: x\r\n\r\n` +
        `GET /hygiene/slow?tag=${second} HTTP/1.1\r\nHost: x\r\n\r\n`,
    );
    const registry = t.app.get(InFlightRegistry);
    await waitFor(() => slowStarted.has(first) && slowStarted.has(second), {
      message: 'both handlers to run',
    });
    expect(registry.size).toBe(2);
    socket.destroy();
    await waitFor(() => registry.size === 0, { message: 'both requests to be cancelled' });
  });
});
