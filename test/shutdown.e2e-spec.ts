import 'reflect-metadata';
import { Controller, Get, Global, Inject, Injectable, Module, Query } from '@nestjs/common';
import type { BeforeApplicationShutdown } from '@nestjs/common';
import http from 'node:http';
import { setTimeout as delay } from 'node:timers/promises';
import {
  CancellationError,
  CancellationModule,
  CancellationService,
  RequestSignal,
} from 'nestjs-cancellation';
import { ApplicationSignals } from '../src/shutdown/application-signals.js';
import { CancellationShutdown } from '../src/shutdown/shutdown.service.js';
import { ADAPTERS, createApp, request, rootModule, sleep, startRequest, waitFor } from './utils/harness.js';
import type { AdapterName, RequestHandle, TestApp } from './utils/harness.js';

interface Probe {
  started: boolean;
  error: unknown;
  finished: boolean;
}

const probes = new Map<string, Probe>();
function probe(tag: string): Probe {
  let found = probes.get(tag);
  if (found === undefined) {
    found = { started: false, error: undefined, finished: false };
    probes.set(tag, found);
  }
  return found;
}

@Controller('shutdown')
class ShutdownController {
  /** Waits 10 s on a timer that honours the request's signal. */
  @Get('wait')
  async wait(@Query('tag') tag: string, @RequestSignal() signal: AbortSignal): Promise<string> {
    const record = probe(tag);
    record.started = true;
    try {
      await delay(10_000, undefined, { signal });
    } catch (err) {
      record.error = err;
      throw err;
    }
    record.finished = true;
    return 'finished';
  }

  /** Ignores its signal: only the subscription can be stopped, not the work. */
  @Get('stubborn')
  async stubborn(@Query('tag') tag: string): Promise<string> {
    const record = probe(tag);
    record.started = true;
    await delay(1500, undefined, { ref: false });
    record.finished = true;
    return 'finished';
  }

  @Get('quick')
  quick(): string {
    return 'quick';
  }
}

/**
 * A drain period in `beforeApplicationShutdown`, as @nestjs/terminus' graceful-shutdown timeout has: the
 * server keeps accepting connections for a while after shutdown began. Global and imported before
 * CancellationModule, so that its hook runs after CancellationModule's (Nest runs the shutdown hooks of
 * modules in reverse order); the test checks that it did.
 */
const drain = { hookStarted: false, shutdownAlreadyBegun: false };

@Injectable()
class DrainDelay implements BeforeApplicationShutdown {
  constructor(@Inject(CancellationService) private readonly cancellation: CancellationService) {}

  async beforeApplicationShutdown(): Promise<void> {
    drain.shutdownAlreadyBegun = this.cancellation.shutdownSignal.aborted;
    drain.hookStarted = true;
    await sleep(400);
  }
}

@Global()
@Module({ providers: [DrainDelay] })
class DrainModule {}

function kindOf(reason: unknown): string | undefined {
  return reason instanceof CancellationError ? reason.kind : undefined;
}

async function start(adapter: AdapterName, withDrain = false): Promise<TestApp> {
  return createApp(
    adapter,
    rootModule({
      imports: [...(withDrain ? [DrainModule] : []), CancellationModule.forRoot()],
      controllers: [ShutdownController],
    }),
  );
}

describe.each(ADAPTERS)('shutdown (%s)', (adapter) => {
  let t: TestApp;
  let seq = 0;
  const tag = () => `${adapter}-${++seq}`;

  afterEach(async () => {
    await t.close();
    expect(t.logs.errors).toEqual([]);
    expect(t.logs.lines.filter((line) => line.text.includes('EmptyError'))).toEqual([]);
  });

  it('answers 10 requests in flight with 503, Retry-After and Connection: close, and close() is prompt', async () => {
    t = await start(adapter);
    const tags = Array.from({ length: 10 }, tag);
    const clients = tags.map((id) => startRequest(t.port, `/shutdown/wait?tag=${id}`));
    await waitFor(() => tags.every((id) => probe(id).started), { message: 'all 10 handlers to start' });

    const closeMs = await t.close();
    expect(closeMs).toBeLessThan(1500);

    const responses = await Promise.all(clients.map((client) => client.response()));
    for (const response of responses) {
      expect(response.status).toBe(503);
      expect(response.headers['retry-after']).toBe('1');
      expect(response.headers.connection).toBe('close');
      expect(response.json).toMatchObject({ statusCode: 503 });
    }
    for (const id of tags) {
      const record = probe(id);
      expect(kindOf((record.error as Error).cause)).toBe('shutdown');
      expect(record.finished).toBe(false);
    }
    const cancellation = t.logs.inContext('Cancellation');
    expect(
      cancellation.filter((line) => /cancelled \(shutdown\) after \d+ ms$/.test(line.message)),
    ).toHaveLength(10);
    expect(
      cancellation.filter((line) => line.message === 'Shutdown cancelled 10 requests in flight'),
    ).toHaveLength(1);
  });

  it('resolves close() promptly even when a handler ignores its signal', async () => {
    t = await start(adapter);
    const id = tag();
    const client = startRequest(t.port, `/shutdown/stubborn?tag=${id}`);
    await waitFor(() => probe(id).started);

    expect(await t.close()).toBeLessThan(1000);
    const response = await client.response();
    expect(response.status).toBe(503);
    // The work itself was not stopped: only code that honours the signal stops.
    expect(probe(id).finished).toBe(false);
  });

  it('refuses a request that arrives while another module shuts down: the listener is closed by then', async () => {
    t = await start(adapter, true);
    drain.hookStarted = false;
    const closing = t.close();
    await waitFor(() => drain.hookStarted, { message: 'the drain hook to start' });
    expect(drain.shutdownAlreadyBegun).toBe(true);

    const id = tag();
    const outcome = await request(t.port, `/shutdown/wait?tag=${id}`).then(
      (response) => `answered ${response.status}`,
      (err: NodeJS.ErrnoException) => err.code,
    );
    // Refused before it was accepted, as Go's Shutdown does (test/drain.e2e-spec.ts: the door's 503 while
    // the listener is still open, during the grace period).
    expect(outcome).toBe('ECONNREFUSED');
    expect(probe(id).started).toBe(false);
    await closing;
  });

  it('aborts shutdownSignal, and signal outside a request, on close', async () => {
    t = await start(adapter);
    const service = t.app.get(CancellationService);
    const { shutdownSignal } = service;
    const outside = service.signal;
    expect(outside).toBe(shutdownSignal);
    expect(service.isCancelled).toBe(false);
    expect(() => service.throwIfCancelled()).not.toThrow();
    const seen: unknown[] = [];
    shutdownSignal.addEventListener('abort', () => seen.push(shutdownSignal.reason), { once: true });

    await t.close();
    expect(shutdownSignal.aborted).toBe(true);
    expect(outside.aborted).toBe(true);
    expect(seen).toHaveLength(1);
    expect(kindOf(seen[0])).toBe('shutdown');
    expect(service.isCancelled).toBe(true);
    expect(() => service.throwIfCancelled()).toThrow(CancellationError);
  });

  it('tolerates close() twice and the shutdown hooks called again', async () => {
    t = await start(adapter);
    const id = tag();
    const client = startRequest(t.port, `/shutdown/wait?tag=${id}`);
    await waitFor(() => probe(id).started);
    const shutdown = t.app.get(CancellationShutdown);
    const signals = t.app.get(ApplicationSignals);

    await Promise.all([t.app.close(), t.app.close()]);
    const reason = signals.shutdownSignal.reason;
    expect(kindOf(reason)).toBe('shutdown');
    expect((await client.response()).status).toBe(503);

    await expect(t.app.close()).resolves.toBeUndefined();
    await shutdown.beforeApplicationShutdown('SIGTERM');
    shutdown.onApplicationShutdown('SIGTERM');
    shutdown.onApplicationShutdown();
    // The first shutdown's reason stays; nothing is cancelled or reported twice.
    expect(signals.shutdownSignal.reason).toBe(reason);
    expect(
      t.logs.inContext('Cancellation').filter((line) => line.message.startsWith('Shutdown cancelled')),
    ).toHaveLength(1);
    expect(
      t.logs.inContext('Cancellation').filter((line) => line.message.includes('(shutdown)')),
    ).toHaveLength(1);
  });

  it('is not held open by keep-alive clients, idle or with a request in flight', async () => {
    t = await start(adapter);
    const agent = new http.Agent({ keepAlive: true, keepAliveMsecs: 60_000 });
    try {
      // One keep-alive connection with a request in flight, then a second one that goes idle.
      const id = tag();
      const inFlight: RequestHandle = startRequest(t.port, `/shutdown/wait?tag=${id}`, { agent });
      await waitFor(() => probe(id).started);
      const quick = await request(t.port, '/shutdown/quick', { agent });
      expect(quick.status).toBe(200);
      expect(quick.headers.connection).toBe('keep-alive');
      const sockets = () =>
        Object.values(agent.sockets).flat().length + Object.values(agent.freeSockets).flat().length;
      expect(sockets()).toBe(2);

      expect(await t.close()).toBeLessThan(1500);
      const response = await inFlight.response();
      expect(response.status).toBe(503);
      expect(response.headers.connection).toBe('close');
      await waitFor(() => sockets() === 0, { message: 'the server to close both keep-alive connections' });
    } finally {
      agent.destroy();
    }
  });
});
