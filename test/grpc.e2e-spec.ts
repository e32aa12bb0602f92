// gRPC calls (@nestjs/microservices' Transport.GRPC on @grpc/grpc-js) in a hybrid application: a scope per
// call whose signal aborts on the client's cancel, on the deadline and at shutdown; deadline propagation to
// outgoing calls (nestjs-cancellation/grpc) from gRPC and from HTTP. Real grpc-js server and clients on
// loopback; the docs/grpc.md examples (test/readme/grpc.ts) are the application's Work service.
import 'reflect-metadata';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { Controller, Get, UseGuards } from '@nestjs/common';
import type { CanActivate } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { GrpcMethod, GrpcStreamCall, GrpcStreamMethod, Transport } from '@nestjs/microservices';
import type { MicroserviceOptions } from '@nestjs/microservices';
import { once } from 'node:events';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { concatMap, finalize, interval, map, take, toArray } from 'rxjs';
import type { Observable } from 'rxjs';
import {
  CancellationError,
  CancellationModule,
  CancellationRegistry,
  CancellationService,
  OutboundCancellation,
  RequestTimeout,
} from 'nestjs-cancellation';
import type { CancelledEvent, SettledEvent } from 'nestjs-cancellation';
import { WORK_PROTO, WorkModule, connectGrpc } from './readme/grpc.js';
import { ADAPTERS, createApp, LogCapture, request, rootModule, waitFor } from './utils/harness.js';
import type { AdapterName, TestApp } from './utils/harness.js';

const PROBE_PROTO = fileURLToPath(new URL('./fixtures/grpc/probe.proto', import.meta.url));

/** What a handler saw, by the tag of its call. */
interface Probe {
  signal: AbortSignal | undefined;
  /** `performance.now()` when the handler began, and when its signal aborted. */
  startedAt: number;
  abortedAt: number;
  remaining: number | undefined;
  finished: boolean;
  /** `performance.now()` when an Observable handler was torn down. */
  tornDownAt: number;
}

const probes = new Map<string, Probe>();

function probe(tag: string): Probe {
  let found = probes.get(tag);
  if (found === undefined) {
    found = {
      signal: undefined,
      startedAt: 0,
      abortedAt: 0,
      remaining: undefined,
      finished: false,
      tornDownAt: 0,
    };
    probes.set(tag, found);
  }
  return found;
}

/** Records that the handler of `tag` runs with `signal`. */
function started(tag: string, signal: AbortSignal, remaining?: number): Probe {
  const record = probe(tag);
  record.signal = signal;
  record.startedAt = performance.now();
  record.remaining = remaining;
  signal.addEventListener('abort', () => (record.abortedAt = performance.now()), { once: true });
  return record;
}

function kindOf(record: Probe): string | undefined {
  return (record.signal?.reason as CancellationError | undefined)?.kind;
}

interface HoldRequest {
  tag: string;
  ms: number;
  count?: number;
}
interface HoldReply {
  tag: string;
  remaining: number;
}

/** A guard whose wait for an answer (an auth call) ends with shutdown. */
class ShutDownGuard implements CanActivate {
  canActivate(): boolean {
    throw new CancellationError('shutdown');
  }
}

@Controller()
class ProbeController {
  constructor(
    private readonly cancellation: CancellationService,
    private readonly outbound: OutboundCancellation,
  ) {}

  @GrpcMethod('Probe', 'Hold')
  async hold({ tag, ms }: HoldRequest): Promise<HoldReply> {
    const { signal, remainingMs } = this.cancellation;
    const record = started(tag, signal, remainingMs);
    await sleep(ms, undefined, { signal });
    record.finished = true;
    return { tag, remaining: Math.round(remainingMs ?? -1) };
  }

  @GrpcMethod('Probe', 'Limited')
  @RequestTimeout(150)
  limited(request: HoldRequest): Promise<HoldReply> {
    return this.hold(request);
  }

  @GrpcMethod('Probe', 'Stream')
  stream({ tag, ms, count }: HoldRequest): Observable<HoldReply> {
    const record = started(tag, this.cancellation.signal);
    return interval(ms).pipe(
      take(count ?? 1),
      map((n) => ({ tag, remaining: n })),
      finalize(() => (record.tornDownAt = performance.now())),
    );
  }

  @GrpcStreamMethod('Probe', 'Upload')
  upload(messages: Observable<HoldRequest>): Observable<HoldReply> {
    // Messages arrive in grpc-js's callbacks, outside the call's store: the signal is read here.
    const signal = this.cancellation.signal;
    return messages.pipe(
      concatMap((message) => {
        started(message.tag, signal);
        return sleep(message.ms, message.tag, { signal });
      }),
      toArray(),
      map((tags) => ({ tag: tags.join(','), remaining: tags.length })),
    );
  }

  /** Answers each message after `ms`; ends when the client half-closes and no message is pending. */
  @GrpcStreamCall('Probe', 'Chat')
  chat(call: grpc.ServerDuplexStream<HoldRequest, HoldReply>): Promise<void> {
    const signal = this.cancellation.signal;
    return new Promise((resolve) => {
      let pending = 0;
      let ended = false;
      call.on('data', (message: HoldRequest) => {
        started(message.tag, signal);
        pending++;
        sleep(message.ms, undefined, { signal }).then(
          () => {
            call.write({ tag: message.tag, remaining: -1 });
            if (--pending === 0 && ended) call.end();
            if (pending === 0 && ended) resolve();
          },
          () => resolve(),
        );
      });
      // grpc-js reports a client's cancel as a half-close ('end') first, then 'cancelled'.
      call.on('end', () => {
        ended = true;
        if (pending > 0) return;
        call.end();
        resolve();
      });
    });
  }

  @GrpcMethod('Probe', 'Guarded')
  @UseGuards(ShutDownGuard)
  guarded(request: HoldRequest): Promise<HoldReply> {
    return this.hold(request);
  }

  @GrpcMethod('Probe', 'Fetch')
  async fetch({ tag, url }: { tag: string; url: string }): Promise<HoldReply> {
    const res = await this.outbound.fetch(url);
    const body = (await res.json()) as { remaining: number };
    return { tag, remaining: body.remaining };
  }
}

@Controller('probe')
class HttpProbeController {
  constructor(private readonly cancellation: CancellationService) {}

  @Get('remaining')
  remaining(): { remaining: number } {
    return { remaining: Math.round(this.cancellation.remainingMs ?? -1) };
  }
}

/** A TCP port that was free a moment ago (Nest does not report the port a gRPC server bound to 0). */
async function freePort(): Promise<number> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

type Callback<T> = (error: grpc.ServiceError | null, value?: T) => void;
/** The grpc-js client of a service, as `loadPackageDefinition` makes it (method names as in the proto). */
type ServiceClient = grpc.Client & Record<string, (...args: unknown[]) => grpc.ClientUnaryCall>;

function clientOf(protoPath: string, pkg: string, service: string, url: string): ServiceClient {
  const definition = grpc.loadPackageDefinition(protoLoader.loadSync(protoPath)) as unknown as Record<
    string,
    Record<string, new (url: string, credentials: grpc.ChannelCredentials) => ServiceClient>
  >;
  return new definition[pkg][service](url, grpc.credentials.createInsecure());
}

type Outcome<T> = { value: T } | { error: grpc.ServiceError };

/** A unary call and its outcome (never rejects). */
function unary<T>(
  client: ServiceClient,
  method: string,
  message: object,
  options: grpc.CallOptions = {},
  metadata = new grpc.Metadata(),
): { call: grpc.ClientUnaryCall; outcome: Promise<Outcome<T>> } {
  let call!: grpc.ClientUnaryCall;
  const outcome = new Promise<Outcome<T>>((resolve) => {
    const callback: Callback<T> = (error, value) => resolve(error ? { error } : { value: value as T });
    call = client[method](message, metadata, options, callback);
  });
  return { call, outcome };
}

function codeOf(outcome: Outcome<unknown>): number | 'ok' {
  return 'error' in outcome ? outcome.error.code : 'ok';
}

/** A streaming call's end: its status, and the messages it received. */
function ended(
  call: grpc.ClientReadableStream<unknown> | grpc.ClientDuplexStream<unknown, unknown>,
): Promise<{
  code: number;
  received: number;
}> {
  let received = 0;
  call.on('data', () => received++);
  return new Promise((resolve) => {
    call.on('error', (error: grpc.ServiceError) => resolve({ code: error.code, received }));
    call.on('status', (status: grpc.StatusObject) => {
      if (status.code === grpc.status.OK) resolve({ code: status.code, received });
    });
  });
}

/** The kind of each cancellation, by route. */
function kinds(events: readonly CancelledEvent[]): Record<string, string> {
  return Object.fromEntries(events.map((event) => [event.route, event.kind]));
}

let counter = 0;
function tagged(name: string): string {
  return `${name}-${++counter}-${Math.random().toString(36).slice(2, 8)}`;
}

describe.each(ADAPTERS)('gRPC calls in a hybrid application on %s', (adapter: AdapterName) => {
  let testApp: TestApp;
  let probe$: ServiceClient;
  let work: ServiceClient;
  const cancelled: CancelledEvent[] = [];
  const settled: Array<SettledEvent & { at: number }> = [];

  beforeEach(async () => {
    const [probePort, workPort] = [await freePort(), await freePort()];
    process.env.WORK_URL = `127.0.0.1:${workPort}`;
    testApp = await createApp(
      adapter,
      rootModule({ imports: [WorkModule], controllers: [ProbeController, HttpProbeController] }),
      {
        configure: async (app) => {
          app.connectMicroservice<MicroserviceOptions>(
            {
              transport: Transport.GRPC,
              options: { package: 'probe', protoPath: PROBE_PROTO, url: `127.0.0.1:${probePort}` },
            },
            { inheritAppConfig: true },
          );
          await connectGrpc(app, `127.0.0.1:${workPort}`);
        },
      },
    );
    const registry = testApp.app.get(CancellationRegistry);
    cancelled.length = 0;
    settled.length = 0;
    registry.onCancelled((event) => cancelled.push(event));
    registry.onSettled((event) => settled.push({ ...event, at: performance.now() }));
    probe$ = clientOf(PROBE_PROTO, 'probe', 'Probe', `127.0.0.1:${probePort}`);
    work = clientOf(WORK_PROTO, 'work', 'Work', `127.0.0.1:${workPort}`);
  });

  afterEach(async () => {
    probe$?.close();
    work?.close();
    await testApp?.close();
    delete process.env.WORK_URL;
  });

  it('answers a call that completes, whose signal never aborts (not even when grpc-js ends the call)', async () => {
    const tag = tagged('quick');
    const { outcome } = unary<HoldReply>(probe$, 'Hold', { tag, ms: 20 }, { deadline: Date.now() + 5000 });
    const result = await outcome;
    expect(result).toEqual({ value: { tag, remaining: expect.any(Number) } });
    const { remaining } = (result as { value: HoldReply }).value;
    expect(remaining).toBeGreaterThan(3000);
    expect(remaining).toBeLessThanOrEqual(5000);
    const streamTag = tagged('stream-quick');
    const stream = probe$.Stream({
      tag: streamTag,
      ms: 5,
      count: 3,
    }) as unknown as grpc.ClientReadableStream<unknown>;
    expect(await ended(stream)).toEqual({ code: grpc.status.OK, received: 3 });
    // grpc-js emits 'cancelled' on the server's call after it sent the status: give it time to.
    await sleep(50);
    expect(probe(tag).signal!.aborted).toBe(false);
    expect(probe(streamTag).signal!.aborted).toBe(false);
    expect(testApp.app.get(CancellationRegistry).inFlight()).toEqual([]);
    expect(cancelled).toEqual([]);
    expect(testApp.logs.errors).toEqual([]);
  });

  it("stops a unary handler's work within milliseconds of the client's cancel", async () => {
    const latencies: string[] = [];
    for (let round = 0; round < 5; round++) {
      const tag = tagged('cancel');
      const { call, outcome } = unary(probe$, 'Hold', { tag, ms: 10_000 });
      await waitFor(() => probe(tag).signal, { message: 'the handler to start' });
      const cancelledAt = performance.now();
      call.cancel();
      expect(codeOf(await outcome)).toBe(grpc.status.CANCELLED);
      const stopped = await waitFor(() => settled.find((event) => event.id === cancelled[round]?.id), {
        message: 'the handler to settle',
      });
      const record = probe(tag);
      const abortMs = record.abortedAt - cancelledAt;
      const stoppedMs = stopped.at - cancelledAt;
      latencies.push(`${abortMs.toFixed(1)} / ${stoppedMs.toFixed(1)}`);
      expect(abortMs).toBeLessThan(250);
      expect(stoppedMs).toBeLessThan(250);
      expect(kindOf(record)).toBe('client-disconnected');
      expect(record.finished).toBe(false);
    }
    console.log(
      `[${adapter}] gRPC client cancel -> handler's signal aborted / its work stopped (Promise settled), ms, ` +
        `5 calls in a row: ${latencies.join(', ')}`,
    );
    expect(cancelled[0]).toMatchObject({
      method: 'GRPC',
      route: 'probe.Probe/Hold',
      kind: 'client-disconnected',
    });
    const verbose = testApp.logs.inContext('Cancellation').map((line) => line.message);
    expect(
      verbose.some((line) => /^GRPC probe\.Probe\/Hold \[.+\] cancelled \(client-disconnected\)/.test(line)),
    ).toBe(true);
    expect(testApp.logs.errors).toEqual([]);
  });

  it('unsubscribes a server-streaming handler and aborts its signal when the client cancels', async () => {
    const tag = tagged('stream');
    const call = probe$.Stream({ tag, ms: 20, count: 1000 }) as unknown as grpc.ClientReadableStream<unknown>;
    call.on('error', () => undefined);
    await once(call, 'data');
    call.cancel();
    const record = await waitFor(() => (probe(tag).tornDownAt > 0 ? probe(tag) : undefined), {
      message: 'the Observable to be torn down',
    });
    expect(kindOf(record)).toBe('client-disconnected');
    expect(testApp.logs.errors).toEqual([]);
  });

  it('aborts the signal of a client-streaming (@GrpcStreamMethod) and a duplex (@GrpcStreamCall) call on cancel', async () => {
    const [up, chat] = [tagged('upload'), tagged('chat')];
    const upload = probe$.Upload(
      new grpc.Metadata(),
      () => undefined,
    ) as unknown as grpc.ClientWritableStream<unknown>;
    upload.write({ tag: up, ms: 10_000 });
    const duplex = probe$.Chat() as unknown as grpc.ClientDuplexStream<unknown, unknown>;
    duplex.on('error', () => undefined);
    duplex.write({ tag: chat, ms: 10_000 });
    await waitFor(() => probe(up).signal && probe(chat).signal, { message: 'both handlers to start' });
    upload.cancel();
    duplex.cancel();
    await waitFor(() => probe(up).signal!.aborted && probe(chat).signal!.aborted, {
      message: 'both signals to abort',
    });
    expect([kindOf(probe(up)), kindOf(probe(chat))]).toEqual(['client-disconnected', 'client-disconnected']);
    await waitFor(() => testApp.app.get(CancellationRegistry).inFlight().length === 0, {
      message: 'the registry to empty',
    });
    expect(testApp.logs.errors).toEqual([]);
  });

  it('stops a call at its 200 ms grpc-timeout with DEADLINE_EXCEEDED', async () => {
    const tag = tagged('deadline');
    const sentAt = performance.now();
    const { outcome } = unary(probe$, 'Hold', { tag, ms: 10_000 }, { deadline: Date.now() + 200 });
    expect(codeOf(await outcome)).toBe(grpc.status.DEADLINE_EXCEEDED);
    const record = await waitFor(() => (probe(tag).abortedAt > 0 ? probe(tag) : undefined), {
      message: 'the signal to abort',
    });
    expect(record.remaining).toBeLessThanOrEqual(200);
    expect(kindOf(record)).toBe('timeout');
    expect(record.abortedAt - sentAt).toBeGreaterThan(150);
    expect(record.abortedAt - sentAt).toBeLessThan(1000);
    expect(record.finished).toBe(false);
    expect(testApp.logs.errors).toEqual([]);
  });

  it("answers DEADLINE_EXCEEDED when the handler's own @RequestTimeout is shorter than the caller's deadline", async () => {
    const tag = tagged('limited');
    const { outcome } = unary(probe$, 'Limited', { tag, ms: 10_000 }, { deadline: Date.now() + 5000 });
    const result = await outcome;
    expect(codeOf(result)).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect((result as { error: grpc.ServiceError }).error.details).toBe("The call's deadline passed");
    expect(probe(tag).remaining).toBeLessThanOrEqual(150);
    expect(kindOf(probe(tag))).toBe('timeout');
    expect(testApp.logs.errors).toEqual([]);
  });

  it("answers UNAVAILABLE for a call whose guard fails with shutdown's cancellation, logging no error", async () => {
    const tag = tagged('guarded');
    const { outcome } = unary(probe$, 'Guarded', { tag, ms: 10 });
    expect(codeOf(await outcome)).toBe(grpc.status.UNAVAILABLE);
    expect(probes.has(tag)).toBe(false);
    const verbose = testApp.logs.inContext('Cancellation').map((line) => line.message);
    expect(verbose).toContain('gRPC call cancelled (shutdown) before its handler ran');
    expect(testApp.logs.errors).toEqual([]);
  });

  it('lists calls in inFlight() and cancels one by id (CANCELLED)', async () => {
    const tag = tagged('listed');
    const metadata = new grpc.Metadata();
    metadata.set('x-request-id', `id-${tag}`);
    const { outcome } = unary(probe$, 'Hold', { tag, ms: 10_000 }, { deadline: Date.now() + 5000 }, metadata);
    await waitFor(() => probe(tag).signal, { message: 'the handler to start' });
    const registry = testApp.app.get(CancellationRegistry);
    const [entry] = registry.inFlight();
    // The id is the server's own; the caller's x-request-id metadata is the correlation id.
    expect(entry).toMatchObject({
      id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      correlationId: `id-${tag}`,
      method: 'GRPC',
      route: 'probe.Probe/Hold',
    });
    expect(entry.remainingMs).toBeGreaterThan(3000);
    expect(registry.cancel(`id-${tag}`, 'Stopped by an operator')).toBe(0);
    expect(registry.cancel(entry.id, 'Stopped by an operator')).toBe(1);
    const result = await outcome;
    expect(codeOf(result)).toBe(grpc.status.CANCELLED);
    expect((result as { error: grpc.ServiceError }).error.details).toBe('Stopped by an operator');
    expect(kindOf(probe(tag))).toBe('manual');
    expect(testApp.logs.errors).toEqual([]);
  });

  it('answers every kind of call in flight UNAVAILABLE on app.close(), which resolves promptly', async () => {
    const [unaryTag, streamTag, upTag, chatTag] = [tagged('u'), tagged('s'), tagged('up'), tagged('chat')];
    const held = unary(probe$, 'Hold', { tag: unaryTag, ms: 10_000 });
    const stream = ended(
      probe$.Stream({ tag: streamTag, ms: 50, count: 1000 }) as unknown as grpc.ClientReadableStream<unknown>,
    );
    let uploadCode: number | undefined;
    const upload = probe$.Upload((error: grpc.ServiceError | null) => {
      uploadCode = error?.code;
    }) as unknown as grpc.ClientWritableStream<unknown>;
    upload.write({ tag: upTag, ms: 10_000 });
    const duplex = probe$.Chat() as unknown as grpc.ClientDuplexStream<unknown, unknown>;
    const chat = ended(duplex);
    duplex.write({ tag: chatTag, ms: 10_000 });
    const tags = [unaryTag, streamTag, upTag, chatTag];
    await waitFor(() => tags.every((tag) => probe(tag).signal), { message: 'every handler to start' });
    const closeMs = await testApp.close();
    expect(closeMs).toBeLessThan(2000);
    expect(codeOf(await held.outcome)).toBe(grpc.status.UNAVAILABLE);
    expect((await stream).code).toBe(grpc.status.UNAVAILABLE);
    expect((await chat).code).toBe(grpc.status.UNAVAILABLE);
    await waitFor(() => uploadCode, { message: 'the upload to be answered' });
    expect(uploadCode).toBe(grpc.status.UNAVAILABLE);
    expect(tags.map((tag) => kindOf(probe(tag)))).toEqual(['shutdown', 'shutdown', 'shutdown', 'shutdown']);
    expect(probe(unaryTag).finished).toBe(false);
    expect(testApp.logs.errors).toEqual([]);
  });

  it("gives a gRPC -> gRPC call (A -> B) A's remaining budget, and cancels B with A, by its client or its deadline", async () => {
    const quick = unary<HoldReply>(
      work,
      'Relay',
      { tag: tagged('relay'), ms: 0 },
      { deadline: Date.now() + 3000 },
    );
    const reply = await quick.outcome;
    expect('value' in reply).toBe(true);
    const { remaining } = (reply as { value: HoldReply }).value;
    expect(remaining).toBeGreaterThan(2000);
    expect(remaining).toBeLessThanOrEqual(3000);

    const slow = unary(work, 'Relay', { tag: tagged('relay-cancel'), ms: 10_000 });
    await waitFor(() => testApp.app.get(CancellationRegistry).inFlight().length === 2, {
      message: 'A and B to run',
    });
    slow.call.cancel();
    await waitFor(() => cancelled.length === 2, { message: 'A and B to be cancelled' });
    expect(kinds(cancelled.slice(0, 2))).toEqual({
      'work.Work/Relay': 'client-disconnected',
      'work.Work/Run': 'client-disconnected',
    });

    const late = unary(work, 'Relay', { tag: tagged('late'), ms: 10_000 }, { deadline: Date.now() + 300 });
    expect(codeOf(await late.outcome)).toBe(grpc.status.DEADLINE_EXCEEDED);
    await waitFor(() => cancelled.length === 4, { message: 'A and B to time out' });
    expect(kinds(cancelled.slice(2))).toEqual({ 'work.Work/Relay': 'timeout', 'work.Work/Run': 'timeout' });
    expect(testApp.logs.errors).toEqual([]);
  });

  it("gives an HTTP -> gRPC call the request's budget from the deadline header", async () => {
    const quick = await request(testApp.port, `/runs/${tagged('http')}?ms=0`, {
      headers: { 'x-request-timeout-ms': '800' },
    });
    expect(quick.status).toBe(200);
    const { remaining } = quick.json as HoldReply;
    expect(remaining).toBeGreaterThan(400);
    expect(remaining).toBeLessThanOrEqual(800);

    const startedAt = performance.now();
    const slow = await request(testApp.port, `/runs/${tagged('http-slow')}?ms=10000`, {
      headers: { 'x-request-timeout-ms': '300' },
    });
    expect(slow.status).toBe(504);
    expect(performance.now() - startedAt).toBeLessThan(2000);
    await waitFor(() => cancelled.some((event) => event.route === 'work.Work/Run'), {
      message: 'the gRPC call to be cancelled',
    });
    expect(cancelled.find((event) => event.route === 'work.Work/Run')?.kind).toBe('timeout');
    expect(testApp.logs.errors).toEqual([]);
  });

  it("gives a gRPC -> HTTP call (OutboundCancellation.fetch) the call's budget", async () => {
    const url = `${testApp.url}/probe/remaining`;
    const { outcome } = unary<HoldReply>(
      probe$,
      'Fetch',
      { tag: 'fetch', url },
      { deadline: Date.now() + 1500 },
    );
    const reply = await outcome;
    expect('value' in reply).toBe(true);
    const { remaining } = (reply as { value: HoldReply }).value;
    expect(remaining).toBeGreaterThan(800);
    expect(remaining).toBeLessThanOrEqual(1500);
    expect(testApp.logs.errors).toEqual([]);
  });

  it('passes the deadline and the cancel by hand (grpcCallOptions, untilAborted) on a streaming call', async () => {
    const all = await request(testApp.port, '/ticks?ms=5&count=3');
    expect(all.json).toEqual([{ n: 0 }, { n: 1 }, { n: 2 }]);
    const cut = await request(testApp.port, '/ticks?ms=50&count=1000', {
      headers: { 'x-request-timeout-ms': '250' },
    });
    expect(cut.status).toBe(504);
    await waitFor(() => cancelled.some((event) => event.route === 'work.Work/Ticks'), {
      message: 'the streaming call to be cancelled',
    });
    expect(cancelled.find((event) => event.route === 'work.Work/Ticks')?.kind).toBe('timeout');
    expect(testApp.logs.errors).toEqual([]);
  });
});

describe('gRPC calls during the shutdown grace period', () => {
  it('lets a call in flight finish, refuses new ones (UNAVAILABLE), and close() waits no longer', async () => {
    const port = await freePort();
    const testApp = await createApp(
      'express',
      rootModule({
        imports: [CancellationModule.forRoot({ shutdownGracePeriodMs: 3000 })],
        controllers: [ProbeController],
      }),
      {
        configure: async (app) => {
          app.connectMicroservice<MicroserviceOptions>(
            {
              transport: Transport.GRPC,
              options: {
                package: 'probe',
                protoPath: PROBE_PROTO,
                url: `127.0.0.1:${port}`,
                gracefulShutdown: true,
              },
            },
            { inheritAppConfig: true },
          );
          await app.startAllMicroservices();
        },
      },
    );
    const client = clientOf(PROBE_PROTO, 'probe', 'Probe', `127.0.0.1:${port}`);
    try {
      const tag = tagged('draining');
      const inFlight = unary<HoldReply>(client, 'Hold', { tag, ms: 300 });
      await waitFor(() => probe(tag).signal, { message: 'the handler to start' });
      const closing = testApp.close();
      await sleep(50);
      const late = unary(client, 'Hold', { tag: tagged('late'), ms: 10 });
      expect(codeOf(await late.outcome)).toBe(grpc.status.UNAVAILABLE);
      expect(await inFlight.outcome).toEqual({ value: { tag, remaining: -1 } });
      expect(probe(tag).signal!.aborted).toBe(false);
      expect(await closing).toBeLessThan(1500);
      expect(testApp.logs.errors).toEqual([]);
    } finally {
      client.close();
      await testApp.close();
    }
  });
});

describe('gRPC calls of a standalone microservice', () => {
  it("aborts a call's signal when the microservice closes, and close() resolves promptly", async () => {
    const port = await freePort();
    const logs = new LogCapture();
    const app = await NestFactory.createMicroservice<MicroserviceOptions>(
      rootModule({ imports: [CancellationModule.forRoot()], controllers: [ProbeController] }),
      {
        transport: Transport.GRPC,
        options: { package: 'probe', protoPath: PROBE_PROTO, url: `127.0.0.1:${port}` },
        logger: logs,
      },
    );
    await app.listen();
    const client = clientOf(PROBE_PROTO, 'probe', 'Probe', `127.0.0.1:${port}`);
    try {
      const tag = tagged('standalone');
      const { outcome } = unary(client, 'Hold', { tag, ms: 10_000 });
      await waitFor(() => probe(tag).signal, { message: 'the handler to start' });
      const closingAt = performance.now();
      await app.close();
      expect(performance.now() - closingAt).toBeLessThan(2000);
      expect(probe(tag).signal!.aborted).toBe(true);
      expect(probe(tag).finished).toBe(false);
      expect(codeOf(await outcome)).not.toBe('ok');
      expect(logs.errors).toEqual([]);
    } finally {
      client.close();
      await app.close();
    }
  });
});
