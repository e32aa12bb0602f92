/**
 * Graceful drain, end to end on both platforms: the grace period (`shutdownGracePeriodMs`) that lets requests
 * in flight finish while new ones are refused with 503, its expiry, the hard deadline (`shutdownTimeoutMs`)
 * that ends what the interceptor never saw, keep-alive connections, and SIGTERM under `enableShutdownHooks()`
 * in a child process.
 *
 * The SIGTERM cases run test/fixtures/drain-app.mjs on the built package: they need `npm run build` first
 * (`npm test` runs it).
 */
import 'reflect-metadata';
import {
  BadRequestException,
  Body,
  Controller,
  Get,
  Inject,
  Injectable,
  Post,
  Query,
  Res,
  UseGuards,
} from '@nestjs/common';
import type { CanActivate, OnModuleInit } from '@nestjs/common';
import http from 'node:http';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import {
  CancellationError,
  CancellationModule,
  CancellationService,
  RequestSignal,
} from 'nestjs-cancellation';
import type { CancellationModuleOptions } from 'nestjs-cancellation';
import { ADAPTERS, createApp, request, rootModule, sleep, startRequest, waitFor } from './utils/harness.js';
import type { AdapterName, RawResponse, RequestResult, TestApp } from './utils/harness.js';
import { FixtureApp, fixtureNestVersion, spawnFixture } from './utils/fixture.js';
import type { FixtureEvent } from './utils/fixture.js';

const FIXTURE = fileURLToPath(new URL('./fixtures/drain-app.mjs', import.meta.url));

/** What a handler of `/drain/slow` went through, by the tag its request carried. */
interface Probe {
  startedAt?: number;
  endedAt?: number;
  abortedAt?: number;
  abortKind?: string;
  error?: unknown;
}

const probes = new Map<string, Probe>();
function probe(tag: string): Probe {
  let found = probes.get(tag);
  if (found === undefined) {
    found = {};
    probes.set(tag, found);
  }
  return found;
}

function kindOf(reason: unknown): string | undefined {
  return reason instanceof CancellationError ? reason.kind : undefined;
}

/** Requests that reached the guard that never decides. */
const hanging = { entered: 0 };

/** Runs before interceptors and never lets the request through: the interceptor never sees it. */
@Injectable()
class HangingGuard implements CanActivate {
  canActivate(): Promise<boolean> {
    hanging.entered++;
    return new Promise<boolean>(() => undefined);
  }
}

/** Requests that reached the guard that takes 200 ms to let them through. */
const slowGuard = { entered: 0 };

/** An authorisation check that takes a while (a token lookup): it runs before the interceptor sees the request. */
@Injectable()
class SlowGuard implements CanActivate {
  async canActivate(): Promise<boolean> {
    slowGuard.entered++;
    await sleep(200);
    return true;
  }
}

@Controller('drain')
class DrainController {
  /** Waits `ms` on a timer that honours the request's signal, and records when its signal aborted, if ever. */
  @Get('slow')
  async slow(
    @Query('tag') tag: string,
    @Query('ms') ms: string,
    @RequestSignal() signal: AbortSignal,
  ): Promise<{ done: true }> {
    const record = probe(tag);
    record.startedAt = performance.now();
    signal.addEventListener(
      'abort',
      () => {
        record.abortedAt = performance.now();
        record.abortKind = kindOf(signal.reason);
      },
      { once: true },
    );
    try {
      await delay(Number(ms), undefined, { signal });
    } catch (err) {
      record.error = err;
      throw err;
    }
    record.endedAt = performance.now();
    return { done: true };
  }

  /** Never looks at its signal: awaits a plain 10 s timer, unref'd so that it holds nothing in the test. */
  @Get('stubborn')
  async stubborn(@Query('tag') tag: string): Promise<string> {
    const record = probe(tag);
    record.startedAt = performance.now();
    await new Promise<void>((resolve) => setTimeout(resolve, 10_000).unref());
    record.endedAt = performance.now();
    return 'finished';
  }

  @Get('guarded')
  @UseGuards(HangingGuard)
  guarded(): string {
    return 'never';
  }

  /** Fails with a 400 after `ms`. */
  @Get('fail')
  async fail(@Query('ms') ms: string): Promise<never> {
    await delay(Number(ms));
    throw new BadRequestException('The order was rejected');
  }

  @Get('checked')
  @UseGuards(SlowGuard)
  checked(): string {
    return 'checked';
  }

  /**
   * A download that sends its headers and a first chunk, then never ends: it ignores every signal. It writes
   * to Node's response itself (`@Res()`), so the interceptor does not see it: a `StreamableFile` would be
   * ended when the grace period ends (test/streaming.e2e-spec.ts), this only by the hard deadline.
   */
  @Get('download')
  download(@Res() reply: { raw?: http.ServerResponse } & http.ServerResponse): void {
    const response = reply.raw ?? reply;
    response.writeHead(200, { 'content-type': 'text/plain' });
    response.write('first chunk\n');
  }

  @Post('upload')
  upload(@Body() body: unknown): { received: number } {
    return { received: JSON.stringify(body).length };
  }

  @Get('quick')
  quick(): string {
    return 'quick';
  }
}

/** The two moments of shutdown as user code sees them through `CancellationService`. */
@Injectable()
class ShutdownTimeline implements OnModuleInit {
  drainingAt: number | undefined;
  shutdownAt: number | undefined;
  shutdownKind: string | undefined;

  constructor(@Inject(CancellationService) private readonly cancellation: CancellationService) {}

  onModuleInit(): void {
    const { drainingSignal, shutdownSignal } = this.cancellation;
    drainingSignal.addEventListener('abort', () => (this.drainingAt = performance.now()), { once: true });
    shutdownSignal.addEventListener(
      'abort',
      () => {
        this.shutdownAt = performance.now();
        this.shutdownKind = kindOf(shutdownSignal.reason);
      },
      { once: true },
    );
  }
}

function start(adapter: AdapterName, options: CancellationModuleOptions): Promise<TestApp> {
  return createApp(
    adapter,
    rootModule({
      imports: [CancellationModule.forRoot(options)],
      controllers: [DrainController],
      providers: [ShutdownTimeline, HangingGuard, SlowGuard],
    }),
  );
}

/** Starts `app.close()` and hands back its promise and the moment it started. */
function beginClose(t: TestApp): { startedAt: number; closed: Promise<number> } {
  const startedAt = performance.now();
  return { startedAt, closed: t.close().then(() => performance.now()) };
}

/** The response of a settled request; fails with the client's error when there is none. */
function responseOf(outcome: RequestResult): RawResponse {
  if ('error' in outcome) throw new Error(`expected a response, the client got ${String(outcome.error)}`);
  return outcome.response;
}

function expectShutdown503(response: RawResponse): void {
  expect(response.status).toBe(503);
  expect(response.headers['retry-after']).toBe('1');
  expect(response.headers.connection).toBe('close');
  expect(response.json).toMatchObject({ statusCode: 503 });
}

/** 1000 bytes of JSON. */
const UPLOAD_BODY = `{"data":"${'x'.repeat(989)}"}`;

/**
 * A POST of 1000 bytes of JSON (Content-Length: 1000) that sends the first 10 and stalls until `finish()`:
 * the body parser waits for the rest, before any guard or interceptor runs.
 */
function startUpload(port: number, path: string): { settled: Promise<RequestResult>; finish(): void } {
  const req = http.request({
    host: '127.0.0.1',
    port,
    path,
    method: 'POST',
    agent: false,
    headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(UPLOAD_BODY) },
  });
  const settled = new Promise<RequestResult>((resolve) => {
    req.once('error', (error) => resolve({ error }));
    req.once('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.once('error', (error) => resolve({ error }));
      res.once('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = JSON.parse(body);
        } catch {
          json = undefined;
        }
        resolve({ response: { status: res.statusCode ?? 0, headers: res.headers, body, json } });
      });
    });
  });
  req.flushHeaders();
  req.write(UPLOAD_BODY.slice(0, 10));
  return { settled, finish: () => void req.end(UPLOAD_BODY.slice(10)) };
}

/** The hard-deadline warning for one open request, which must name its method and URL. */
function deadlineWarnings(t: TestApp): string[] {
  return t.logs.lines
    .filter((line) => line.level === 'warn' && line.message.includes('Shutdown deadline'))
    .map((line) => line.message);
}

describe.each(ADAPTERS)('graceful drain (%s)', (adapter) => {
  let t: TestApp | undefined;
  let seq = 0;
  const tag = () => `${adapter}-${++seq}`;

  afterEach(async () => {
    if (t === undefined) return;
    await t.close();
    expect(t.logs.errors).toEqual([]);
    t = undefined;
  });

  it('lets a request in flight finish with 200 during the grace period and refuses new ones with 503 at once', async () => {
    t = await start(adapter, { shutdownGracePeriodMs: 1000 });
    const timeline = t.app.get(ShutdownTimeline);
    const id = tag();
    const inFlight = startRequest(t.port, `/drain/slow?ms=300&tag=${id}`);
    await waitFor(() => probe(id).startedAt, { message: 'the handler to start' });

    const { startedAt, closed } = beginClose(t);
    await waitFor(() => timeline.drainingAt, { message: 'drainingSignal to abort' });
    expect(timeline.shutdownAt).toBeUndefined();

    const lateSentAt = performance.now();
    const late = await request(t.port, '/drain/quick');
    const lateMs = performance.now() - lateSentAt;
    expectShutdown503(late);
    // At once: not held until the request in flight or the grace period ends.
    expect(lateMs).toBeLessThan(250);

    const response = await inFlight.response();
    expect(response.status).toBe(200);
    expect(response.json).toEqual({ done: true });
    // The response completed while draining: its connection is not kept.
    expect(response.headers.connection).toBe('close');

    const closedAt = await closed;
    const record = probe(id);
    // The in-flight request's signal never aborted, not even later.
    expect(record.abortedAt).toBeUndefined();
    expect(record.error).toBeUndefined();
    const endedAt = record.endedAt as number;
    // close() waited for the request in flight, and resolved soon after it, long before the grace period.
    expect(closedAt).toBeGreaterThanOrEqual(endedAt);
    expect(closedAt - endedAt).toBeLessThan(500);
    expect(closedAt - startedAt).toBeLessThan(800);
    // drainingSignal at the start, shutdownSignal only once the work in flight had ended.
    const drainingAt = timeline.drainingAt as number;
    const shutdownAt = timeline.shutdownAt as number;
    expect(drainingAt).toBeGreaterThanOrEqual(startedAt);
    expect(drainingAt).toBeLessThan(lateSentAt);
    expect(drainingAt).toBeLessThan(endedAt);
    expect(shutdownAt).toBeGreaterThanOrEqual(endedAt);
    expect(shutdownAt).toBeLessThanOrEqual(closedAt);
    expect(timeline.shutdownKind).toBe('shutdown');

    const cancellation = t.logs.inContext('Cancellation').map((line) => line.message);
    expect(cancellation).toContain('Draining 1 request(s) in flight for up to 1000 ms');
    expect(cancellation.filter((message) => message.startsWith('Shutdown cancelled'))).toEqual([]);
    expect(deadlineWarnings(t)).toEqual([]);
  });

  it('aborts what is still running when the grace period ends, with kind shutdown and a 503', async () => {
    t = await start(adapter, { shutdownGracePeriodMs: 300 });
    const timeline = t.app.get(ShutdownTimeline);
    const id = tag();
    const inFlight = startRequest(t.port, `/drain/slow?ms=5000&tag=${id}`);
    await waitFor(() => probe(id).startedAt, { message: 'the handler to start' });

    const { startedAt, closed } = beginClose(t);
    const response = await inFlight.response();
    expectShutdown503(response);
    const closedAt = await closed;

    const record = probe(id);
    expect(record.abortKind).toBe('shutdown');
    expect(kindOf((record.error as Error).cause)).toBe('shutdown');
    expect(record.endedAt).toBeUndefined();
    const abortedAfter = (record.abortedAt as number) - startedAt;
    expect(abortedAfter).toBeGreaterThanOrEqual(250);
    expect(abortedAfter).toBeLessThan(1000);
    expect(timeline.shutdownAt).toBeGreaterThanOrEqual(startedAt + 250);
    expect(closedAt - startedAt).toBeLessThan(2000);
    const cancellation = t.logs.inContext('Cancellation').map((line) => line.message);
    expect(cancellation).toContain('Shutdown cancelled 1 request in flight');
    expect(deadlineWarnings(t)).toEqual([]);
  });

  it('is not held by a handler that never checks its signal', async () => {
    const shutdownTimeoutMs = 3000;
    t = await start(adapter, { shutdownGracePeriodMs: 200, shutdownTimeoutMs });
    const id = tag();
    const inFlight = startRequest(t.port, `/drain/stubborn?tag=${id}`);
    await waitFor(() => probe(id).startedAt, { message: 'the handler to start' });

    const { startedAt, closed } = beginClose(t);
    const response = await inFlight.response();
    const answeredAfter = performance.now() - startedAt;
    expectShutdown503(response);
    const closeMs = (await closed) - startedAt;

    // Our 503 goes out when the grace period ends, and close() follows it: no wait for the hard deadline.
    expect(answeredAfter).toBeGreaterThanOrEqual(150);
    expect(answeredAfter).toBeLessThan(1000);
    expect(closeMs).toBeLessThan(1500);
    expect(closeMs).toBeLessThan(shutdownTimeoutMs + 500);
    // The work itself goes on (nothing stops code that ignores its signal), without holding anything.
    expect(probe(id).endedAt).toBeUndefined();
    expect(deadlineWarnings(t)).toEqual([]);
  });

  describe('hard deadline', () => {
    it('answers 503 to a request held by a guard that never decides, and close() resolves by the deadline', async () => {
      t = await start(adapter, { shutdownTimeoutMs: 500 });
      hanging.entered = 0;
      const client = startRequest(t.port, '/drain/guarded');
      await waitFor(() => hanging.entered === 1, { message: 'the request to reach the guard' });

      const closeMs = await t.close();
      expect(closeMs).toBeGreaterThanOrEqual(400);
      expect(closeMs).toBeLessThan(2000);
      const outcome = await client.settled();
      // Its headers were unsent: the hard deadline answers it.
      expectShutdown503(responseOf(outcome));

      const warnings = deadlineWarnings(t);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toContain('GET /drain/guarded');
      expect(warnings[0]).toContain('500 ms');
    });

    it('ends a POST whose body stalls halfway, and close() resolves by the deadline', async () => {
      t = await start(adapter, { shutdownTimeoutMs: 500 });
      const responses = t.responses;
      const upload = startUpload(t.port, '/drain/upload');
      await waitFor(() => responses.length === 1, { message: 'the server to take the upload' });

      const closeMs = await t.close();
      expect(closeMs).toBeGreaterThanOrEqual(400);
      expect(closeMs).toBeLessThan(2000);
      const outcome = await upload.settled;
      // Its headers were unsent: the hard deadline answers it.
      expectShutdown503(responseOf(outcome));

      const warnings = deadlineWarnings(t);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toContain('POST /drain/upload');
    });

    it('ends both at once, logging each open request once', async () => {
      t = await start(adapter, { shutdownTimeoutMs: 500 });
      hanging.entered = 0;
      const responses = t.responses;
      const guarded = startRequest(t.port, '/drain/guarded');
      const upload = startUpload(t.port, '/drain/upload');
      await waitFor(() => hanging.entered === 1 && responses.length === 2, {
        message: 'both requests to be held',
      });

      const closeMs = await t.close();
      expect(closeMs).toBeGreaterThanOrEqual(400);
      expect(closeMs).toBeLessThan(2000);
      const outcomes = await Promise.all([guarded.settled(), upload.settled]);
      for (const outcome of outcomes) expectShutdown503(responseOf(outcome));
      const warnings = deadlineWarnings(t);
      expect(warnings).toHaveLength(2);
      expect(warnings.filter((line) => line.includes('GET /drain/guarded'))).toHaveLength(1);
      expect(warnings.filter((line) => line.includes('POST /drain/upload'))).toHaveLength(1);
    });

    it('destroys the connection of a response whose headers were sent', async () => {
      t = await start(adapter, { shutdownTimeoutMs: 500 });
      const responses = t.responses;
      const client = startRequest(t.port, '/drain/download');
      await waitFor(() => responses[0]?.headersSent, { message: 'the download to send its headers' });

      const closeMs = await t.close();
      expect(closeMs).toBeGreaterThanOrEqual(400);
      expect(closeMs).toBeLessThan(2000);
      const outcome = await client.settled();
      // The client had a 200 and part of the body: all it can learn is that the connection broke.
      expect('error' in outcome).toBe(true);
      const warnings = deadlineWarnings(t);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toContain('GET /drain/download');
      expect(warnings[0]).toContain('destroying the connection');
    });
  });

  /**
   * Requests that arrived before shutdown began but had not reached the interceptor yet (a guard still
   * deciding, a body still uploading) are in flight for their client and for the load balancer that sent
   * them: the issue gives them the grace period to finish normally, like those past the interceptor.
   */
  describe('requests that arrived before the drain, not yet past guards and body parsing', () => {
    it('lets a request still in a slow guard finish with 200', async () => {
      t = await start(adapter, { shutdownGracePeriodMs: 1000 });
      slowGuard.entered = 0;
      const client = startRequest(t.port, '/drain/checked');
      await waitFor(() => slowGuard.entered === 1, { message: 'the request to reach the guard' });

      const closing = t.close();
      const response = await client.response();
      expect({ status: response.status, body: response.body }).toEqual({ status: 200, body: 'checked' });
      expect(response.headers.connection).toBe('close');
      expect(await closing).toBeLessThan(900);
    });

    it('lets a POST whose body is still uploading finish with 200', async () => {
      t = await start(adapter, { shutdownGracePeriodMs: 1000 });
      const responses = t.responses;
      const upload = startUpload(t.port, '/drain/upload');
      await waitFor(() => responses.length === 1, { message: 'the server to take the upload' });

      const closing = t.close();
      await waitFor(() => t?.app.get(ShutdownTimeline).drainingAt, { message: 'the drain to begin' });
      await sleep(100);
      upload.finish();
      const response = responseOf(await upload.settled);
      expect({ status: response.status, json: response.json }).toEqual({
        status: 201,
        json: { received: UPLOAD_BODY.length },
      });
      expect(response.headers.connection).toBe('close');
      expect(await closing).toBeLessThan(900);
    });
  });

  describe('keep-alive', () => {
    let agent: http.Agent;
    const agentSockets = () =>
      Object.values(agent.sockets).flat().length + Object.values(agent.freeSockets).flat().length;

    beforeEach(() => {
      agent = new http.Agent({ keepAlive: true, keepAliveMsecs: 60_000 });
    });
    afterEach(() => agent.destroy());

    it('an idle keep-alive connection does not hold close()', async () => {
      t = await start(adapter, { shutdownGracePeriodMs: 1000 });
      const quick = await request(t.port, '/drain/quick', { agent });
      expect(quick.status).toBe(200);
      expect(quick.headers.connection).toBe('keep-alive');
      expect(agentSockets()).toBe(1);

      expect(await t.close()).toBeLessThan(500);
      await waitFor(() => agentSockets() === 0, { message: 'the server to close the idle connection' });
      expect(deadlineWarnings(t)).toEqual([]);
    });

    it('a request completing during the drain on a keep-alive connection gets Connection: close', async () => {
      t = await start(adapter, { shutdownGracePeriodMs: 1000 });
      const warm = await request(t.port, '/drain/quick', { agent });
      expect(warm.headers.connection).toBe('keep-alive');
      const id = tag();
      const inFlight = startRequest(t.port, `/drain/slow?ms=300&tag=${id}`, { agent });
      await waitFor(() => probe(id).startedAt, { message: 'the handler to start' });
      // The request in flight reuses the warm connection.
      expect(agentSockets()).toBe(1);

      const closing = t.close();
      const response = await inFlight.response();
      expect(response.status).toBe(200);
      expect(response.headers.connection).toBe('close');
      expect(await closing).toBeLessThan(900);
      await waitFor(() => agentSockets() === 0, { message: 'the server to close the connection' });
      expect(probe(id).abortedAt).toBeUndefined();
      expect(deadlineWarnings(t)).toEqual([]);
    });

    it('a request failing during the drain on a keep-alive connection gets Connection: close too', async () => {
      t = await start(adapter, { shutdownGracePeriodMs: 1000 });
      const warm = await request(t.port, '/drain/quick', { agent });
      expect(warm.headers.connection).toBe('keep-alive');
      const inFlight = startRequest(t.port, '/drain/fail?ms=300', { agent });
      await waitFor(() => t?.responses.length === 2, { message: 'the server to take the request' });

      const closing = t.close();
      const response = await inFlight.response();
      expect(response.status).toBe(400);
      expect(response.headers.connection).toBe('close');
      expect(await closing).toBeLessThan(900);
    });
  });
});

function spawnApp(adapter: AdapterName, env: Record<string, string>): FixtureApp {
  return new FixtureApp(spawnFixture(FIXTURE, { ...process.env, ADAPTER: adapter, PORT: '0', ...env }));
}

describe.each(ADAPTERS)('SIGTERM under enableShutdownHooks (%s)', (adapter) => {
  /** One app per test, all started at once: their start-up (about a second each) overlaps. */
  let apps: { drain: FixtureApp; stalled: FixtureApp } | undefined;

  beforeAll(() => {
    apps = {
      drain: spawnApp(adapter, { GRACE_MS: '3000' }),
      stalled: spawnApp(adapter, { GRACE_MS: '200', TIMEOUT_MS: '700' }),
    };
  });

  afterAll(async () => {
    for (const app of Object.values(apps ?? {})) {
      if (app.child.exitCode === null && app.child.signalCode === null) {
        app.child.kill('SIGKILL');
        await app.exited;
      }
    }
  });

  it('finishes the request in flight, refuses a new one with 503 and exits promptly', async () => {
    const app = apps?.drain as FixtureApp;
    const listening = (await app.next('listening', 15_000)) as FixtureEvent & { port: number; nest: string };
    // The Nest the suite runs on (Nest 11 with the CommonJS build in the Nest 11 job), not whichever resolves.
    expect(listening.nest).toBe(fixtureNestVersion());
    const { port } = listening;
    const inFlight = startRequest(port, '/drain/slow?ms=500');
    await app.next('handler-start');

    expect(app.child.kill('SIGTERM')).toBe(true);
    await app.next('draining');
    const late = await request(port, '/drain/quick');
    expectShutdown503(late);
    expect(late.json).toMatchObject({ message: 'The application is shutting down (SIGTERM)' });

    const response = await inFlight.response();
    expect(response.status).toBe(200);
    expect(response.json).toEqual({ done: true });
    expect(response.headers.connection).toBe('close');

    const exit = await app.exited;
    // Nest re-sends the signal to itself once its shutdown hooks ran: the process ends by SIGTERM.
    expect(exit).toMatchObject({ code: null, signal: 'SIGTERM' });
    const handlerEnd = (await app.next('handler-end')).receivedAt;
    expect(exit.at - handlerEnd).toBeLessThan(1000);

    const names = app.events
      .filter((line) => line.event !== 'log' && line.event !== 'request')
      .map((line) => line.event);
    expect(names).toEqual([
      'listening',
      'handler-start',
      'draining',
      'handler-end',
      'shutdown',
      'app-shutdown',
    ]);
    expect(app.find('handler-aborted')).toBeUndefined();
    expect(app.find('app-shutdown')).toMatchObject({ signal: 'SIGTERM' });
    // Nothing after the last shutdown hook, nothing at warn or error level, nothing on stderr.
    expect(app.events.at(-1)?.event).toBe('app-shutdown');
    const levels = app.events.filter((line) => line.event === 'log').map((line) => line.level);
    expect(levels.filter((level) => level !== 'log' && level !== 'verbose')).toEqual([]);
    expect(app.stderr).toBe('');
    expect(
      app.events.some(
        (line) =>
          line.event === 'log' && line.message === 'Draining 1 request(s) in flight for up to 3000 ms',
      ),
    ).toBe(true);
  });

  it('exits by the hard deadline when an upload stalls, answering it 503', async () => {
    const app = apps?.stalled as FixtureApp;
    const { port } = (await app.next('listening', 15_000)) as FixtureEvent & { port: number };
    const upload = startUpload(port, '/drain/upload');
    await app.next('request');

    const signalledAt = performance.now();
    expect(app.child.kill('SIGTERM')).toBe(true);
    expectShutdown503(responseOf(await upload.settled));
    const exit = await app.exited;
    expect(exit).toMatchObject({ code: null, signal: 'SIGTERM' });
    expect(exit.at - signalledAt).toBeGreaterThanOrEqual(600);
    expect(exit.at - signalledAt).toBeLessThan(2500);

    const logs = app.events.filter((line) => line.event === 'log');
    const warnings = logs.filter((line) => line.level === 'warn').map((line) => String(line.message));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('Shutdown deadline (700 ms) passed with POST /drain/upload');
    expect(logs.filter((line) => line.level === 'error' || line.level === 'fatal')).toEqual([]);
    expect(app.events.at(-1)?.event).toBe('app-shutdown');
    expect(app.stderr).toBe('');
  });
});
