import 'reflect-metadata';
import { Controller } from '@nestjs/common';
import { ClientProxyFactory, EventPattern, MessagePattern, Payload, Transport } from '@nestjs/microservices';
import type { ClientProxy, MicroserviceOptions } from '@nestjs/microservices';
import { NestFactory } from '@nestjs/core';
import { once } from 'node:events';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { firstValueFrom } from 'rxjs';
import { CancellationError, CancellationModule, CancellationService } from 'nestjs-cancellation';
import type { CancelledMessageError } from 'nestjs-cancellation';
import { ADAPTERS, createApp, LogCapture, rootModule, waitFor } from './utils/harness.js';
import type { AdapterName, TestApp } from './utils/harness.js';

interface Probe {
  started: boolean;
  signal: AbortSignal | undefined;
  finished: boolean;
}

const probes = new Map<string, Probe>();
function probe(tag: string): Probe {
  let found = probes.get(tag);
  if (found === undefined) {
    found = { started: false, signal: undefined, finished: false };
    probes.set(tag, found);
  }
  return found;
}

@Controller()
class WorkController {
  constructor(private readonly cancellation: CancellationService) {}

  /** Works for `ms` on a timer that honours the message's signal. */
  @MessagePattern('work')
  async work(@Payload() body: { tag: string; ms: number }): Promise<string> {
    const record = probe(body.tag);
    record.started = true;
    record.signal = this.cancellation.signal;
    await delay(body.ms, undefined, { signal: this.cancellation.signal });
    record.finished = true;
    return `done ${body.tag}`;
  }

  /** The same work for an event: nobody waits for an answer. */
  @EventPattern('work-event')
  async workEvent(@Payload() body: { tag: string; ms: number }): Promise<void> {
    await this.work(body);
  }
}

/** What the caller of a message cut by shutdown gets. */
const SHUTDOWN_REPLY: CancelledMessageError = {
  status: 'error',
  statusCode: 503,
  kind: 'shutdown',
  message: 'The application is shutting down',
  retryable: true,
  retryAfterSeconds: 1,
};

/** A TCP port that was free a moment ago (the TCP transport reports no port it bound to 0). */
async function freePort(): Promise<number> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe.each(ADAPTERS)('TCP microservice (hybrid application) on %s', (adapter: AdapterName) => {
  let testApp: TestApp;
  let port: number;
  const clients: ClientProxy[] = [];

  function client(): ClientProxy {
    const proxy = ClientProxyFactory.create({
      transport: Transport.TCP,
      options: { host: '127.0.0.1', port },
    });
    clients.push(proxy);
    return proxy;
  }

  beforeEach(async () => {
    port = await freePort();
    testApp = await createApp(
      adapter,
      rootModule({
        imports: [CancellationModule.forRoot({ shutdownTimeoutMs: 4000 })],
        controllers: [WorkController],
      }),
      {
        configure: async (app) => {
          // A hybrid application's microservice runs the module's global interceptors (APP_INTERCEPTOR, so
          // CancellationModule's) only with `inheritAppConfig`.
          app.connectMicroservice(
            { transport: Transport.TCP, options: { host: '127.0.0.1', port } },
            { inheritAppConfig: true },
          );
          await app.startAllMicroservices();
        },
      },
    );
  });

  afterEach(async () => {
    for (const proxy of clients.splice(0)) await proxy.close();
    await testApp?.close();
  });

  function tagged(name: string): string {
    return `${adapter}-${name}-${Math.random().toString(36).slice(2)}`;
  }

  it('answers a message whose handler finishes, with its signal never aborted', async () => {
    const tag = tagged('quick');
    expect(await firstValueFrom(client().send('work', { tag, ms: 10 }))).toBe(`done ${tag}`);
    expect(probe(tag).signal!.aborted).toBe(false);
    expect(testApp.logs.errors).toEqual([]);
  });

  it("aborts a message's signal when the caller's connection closes, and only that caller's", async () => {
    const leaving = client();
    const staying = client();
    const [a, b] = [tagged('leaving'), tagged('staying')];
    leaving.send('work', { tag: a, ms: 10_000 }).subscribe({ error: () => undefined });
    const answer = firstValueFrom(staying.send('work', { tag: b, ms: 400 }));
    await waitFor(() => probe(a).started && probe(b).started, { message: 'the handlers to start' });
    await leaving.close();
    await waitFor(() => probe(a).signal!.aborted, { message: "the leaving caller's signal to abort" });
    expect(probe(a).signal!.reason).toBeInstanceOf(CancellationError);
    expect((probe(a).signal!.reason as CancellationError).kind).toBe('client-disconnected');
    expect(probe(b).signal!.aborted).toBe(false);
    expect(await answer).toBe(`done ${b}`);
    expect(probe(a).finished).toBe(false);
    const verbose = testApp.logs.inContext('Cancellation').map((line) => line.message);
    expect(verbose.some((line) => /^RPC work cancelled \(client-disconnected\)/.test(line))).toBe(true);
    expect(testApp.logs.errors).toEqual([]);
  });

  it('aborts the signal of every message in flight on shutdown, promptly and without error logs', async () => {
    const tag = tagged('shutdown');
    const eventTag = tagged('shutdown-event');
    const caller = client();
    const answer = firstValueFrom(caller.send('work', { tag, ms: 10_000 })).then(
      (value: unknown) => ({ value }),
      (error: unknown) => ({ error }),
    );
    await firstValueFrom(caller.emit('work-event', { tag: eventTag, ms: 10_000 }));
    await waitFor(() => probe(tag).started && probe(eventTag).started, { message: 'the handlers to start' });
    const closeMs = await testApp.close();
    expect(closeMs).toBeLessThan(2000);
    for (const cut of [tag, eventTag]) {
      expect((probe(cut).signal!.reason as CancellationError).kind).toBe('shutdown');
      expect(probe(cut).finished).toBe(false);
    }
    // The caller learns why, and that it may retry elsewhere: not an empty answer (RxJS's EmptyError).
    expect(await answer).toEqual({ error: SHUTDOWN_REPLY });
    expect(testApp.logs.errors).toEqual([]);
    const verbose = testApp.logs.inContext('Cancellation').map((line) => line.message);
    expect(verbose.filter((line) => /^RPC work(-event)? cancelled \(shutdown\)/.test(line))).toHaveLength(2);
  });
});

describe('TCP microservice (standalone application)', () => {
  it('aborts the signal of a message in flight when the microservice closes', async () => {
    const port = await freePort();
    const logs = new LogCapture();
    const app = await NestFactory.createMicroservice<MicroserviceOptions>(
      rootModule({ imports: [CancellationModule.forRoot()], controllers: [WorkController] }),
      { transport: Transport.TCP, options: { host: '127.0.0.1', port }, logger: logs },
    );
    await app.listen();
    const proxy = ClientProxyFactory.create({
      transport: Transport.TCP,
      options: { host: '127.0.0.1', port },
    });
    const tag = `standalone-${Math.random().toString(36).slice(2)}`;
    try {
      const answer = firstValueFrom(proxy.send('work', { tag, ms: 10_000 })).catch((error: unknown) => error);
      await waitFor(() => probe(tag).started, { message: 'the handler to start' });
      const started = performance.now();
      await app.close();
      expect(performance.now() - started).toBeLessThan(2000);
      // A standalone microservice's close() closes its transport before any shutdown hook runs: the caller
      // learns only that the connection closed. (Under enableShutdownHooks() a signal runs the hooks first.)
      expect(await answer).toMatchObject({ message: 'Connection closed' });
      expect(probe(tag).signal!.aborted).toBe(true);
      expect((probe(tag).signal!.reason as CancellationError).kind).toBe('shutdown');
      expect(probe(tag).finished).toBe(false);
      expect(logs.errors).toEqual([]);
    } finally {
      await proxy.close();
      await app.close();
    }
  });
});
