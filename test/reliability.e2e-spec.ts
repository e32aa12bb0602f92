/**
 * Reliability under load and abuse, on Express and Fastify: thousands of clients aborting at random moments
 * (abort storm), SIGTERM while hundreds of requests are in flight, handlers that ignore their signal, and bad
 * input (options, deadline headers, huge and trickled request bodies).
 *
 * Bounded: at the default (CI) scale the whole file takes well under a minute on two cores. For a manual run
 * at a larger scale (up to about three minutes): `RELIABILITY_SCALE=full npm run jest -- test/reliability`.
 * The random choices come from a seeded generator: the seed is printed, and `RELIABILITY_SEED=<n>` replays
 * them (the timing of a run cannot be replayed).
 *
 * The SIGTERM cases run test/fixtures/reliability-app.mjs on the built package: they need `npm run build`
 * first (`npm test` runs it).
 */
import 'reflect-metadata';
import { Body, Controller, Get, HttpCode, Post, Query } from '@nestjs/common';
import type { DynamicModule, INestApplication } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { ExpressAdapter } from '@nestjs/platform-express';
import type { NestExpressApplication } from '@nestjs/platform-express';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { inspect } from 'node:util';
import { CancellationModule, RequestSignal, RequestTimeout, isCancellationError } from 'nestjs-cancellation';
import type { CancellationModuleOptions } from 'nestjs-cancellation';
import { InFlightRegistry } from '../src/registry/in-flight.registry.js';
import {
  ADAPTERS,
  LogCapture,
  createApp,
  request,
  rootModule,
  startRequest,
  waitFor,
} from './utils/harness.js';
import type { AdapterName, TestApp } from './utils/harness.js';
import { FixtureApp, fixtureNestVersion, spawnFixture } from './utils/fixture.js';
import type { FixtureEvent, FixtureExit } from './utils/fixture.js';
import { testCertificate } from './utils/tls.js';

const FIXTURE = fileURLToPath(new URL('./fixtures/reliability-app.mjs', import.meta.url));

// ---------------------------------------------------------------------------------------------------------
// Scale, randomness, and the process-wide watch
// ---------------------------------------------------------------------------------------------------------

const FULL = process.env.RELIABILITY_SCALE === 'full';

const SCALE = FULL
  ? {
      stormRequests: 12_000,
      stormConcurrency: 100,
      loadInFlight: 800,
      loadRampMs: 4000,
      headerRequests: 2000,
      slowBodies: 100,
      testTimeoutMs: 170_000,
    }
  : {
      stormRequests: 1600,
      stormConcurrency: 50,
      loadInFlight: 300,
      loadRampMs: 1500,
      headerRequests: 300,
      slowBodies: 20,
      testTimeoutMs: 30_000,
    };

const SEED = Number(process.env.RELIABILITY_SEED ?? Math.floor(Math.random() * 2 ** 31));

/** mulberry32: a small seeded generator, so that a failing run can be replayed with its seed. */
function seeded(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * The generator of one client (`id`) of one stream of choices: each client's choices depend on the seed alone,
 * not on the order in which concurrent clients happen to draw them.
 */
function randomFor(stream: number, id: number): () => number {
  return seeded((SEED ^ Math.imul(stream, 0x9e3779b1) ^ Math.imul(id + 1, 0x85ebca6b)) >>> 0);
}

/** A whole number from `min` to `max`, both included. */
function between(random: () => number, min: number, max: number): number {
  return min + Math.floor(random() * (max - min + 1));
}

/** Writes a line to the test's output (counts and timings that the report quotes). */
function report(line: string): void {
  process.stdout.write(`[reliability] ${line}\n`);
}

/**
 * The Jest worker's real `process`. Test code sees a copy of it whose `on()` registers listeners that real
 * `unhandledRejection` / `uncaughtException` events never reach; a function from Node's own realm (any
 * global Jest copies in, such as `setTimeout`) leads to the real one.
 */
const realProcess = (setTimeout as unknown as { constructor: FunctionConstructor }).constructor(
  'return process',
)() as NodeJS.Process;

/**
 * Records every `unhandledRejection`, `uncaughtException` and process warning, and everything written with
 * `console.error` / `console.warn` (Express's final handler prints unhandled errors there), while installed.
 */
class ProcessWatch {
  readonly events: string[] = [];
  private readonly restore: (() => void)[] = [];

  install(): void {
    const listen = (event: 'unhandledRejection' | 'uncaughtException' | 'warning') => {
      const listener = (value: unknown) => {
        // Jest's own, at its first ESM import.
        if (event === 'warning' && (value as Error).name === 'ExperimentalWarning') return;
        this.events.push(`${event}: ${show(value)}`);
      };
      realProcess.on(event, listener);
      this.restore.push(() => realProcess.off(event, listener));
    };
    listen('unhandledRejection');
    listen('uncaughtException');
    listen('warning');
    for (const method of ['error', 'warn'] as const) {
      const original = console[method];
      console[method] = (...args: unknown[]) =>
        this.events.push(`console.${method}: ${args.map(show).join(' ')}`);
      this.restore.push(() => (console[method] = original));
    }
  }

  uninstall(): void {
    for (const undo of this.restore.splice(0)) undo();
  }

  /** What was recorded since the last call. */
  take(): string[] {
    return this.events.splice(0);
  }
}

function show(value: unknown): string {
  if (value instanceof Error || (typeof value === 'object' && value !== null && 'stack' in value)) {
    return String((value as Error).stack ?? value);
  }
  return typeof value === 'string' ? value : inspect(value);
}

const watch = new ProcessWatch();
beforeAll(() => {
  report(`seed ${SEED}, scale ${FULL ? 'full' : 'ci'} (RELIABILITY_SEED=${SEED} replays its random choices)`);
  watch.install();
});
afterAll(() => watch.uninstall());
afterEach(() => {
  expect(watch.take()).toEqual([]);
});

/** Polls an asynchronous condition until it holds, or fails after `timeoutMs` naming `message`. */
async function until(
  condition: () => Promise<boolean>,
  { timeoutMs = 3000, message = 'condition' }: { timeoutMs?: number; message?: string } = {},
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await condition())) {
    if (performance.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${message}`);
    await delay(10);
  }
}

/** The HTTP server's open connections. */
function connectionCount(app: INestApplication): Promise<number> {
  const server = app.getHttpServer() as http.Server;
  return new Promise((resolve, reject) =>
    server.getConnections((err, count) => (err ? reject(err) : resolve(count))),
  );
}

/** Cancellation and logging problems that must never show: error-level lines, or a double response. */
function problems(logs: LogCapture): string[] {
  return logs.lines
    .filter(
      (line) =>
        line.level === 'error' ||
        line.level === 'fatal' ||
        line.level === 'warn' ||
        /ERR_HTTP_HEADERS_SENT|Cannot set headers|headers already sent/i.test(line.text),
    )
    .map((line) => `${line.level}: ${line.text}`);
}

// ---------------------------------------------------------------------------------------------------------
// Raw sockets
// ---------------------------------------------------------------------------------------------------------

/** Opens a TCP connection to the server; resolves once it is connected. */
function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

/** Resolves once the socket is closed (never rejects: an error closes it too). */
function closed(socket: net.Socket): Promise<void> {
  socket.on('error', () => undefined);
  return socket.destroyed && socket.closed
    ? Promise.resolve()
    : new Promise((resolve) => socket.once('close', () => resolve()));
}

interface RawReply {
  /** Status of the response, when one began. */
  readonly status: number | undefined;
  readonly text: string;
  /** Milliseconds from the request's last byte written to the response's first byte. */
  readonly firstByteMs: number | undefined;
  readonly error: string | undefined;
}

/**
 * Sends `bytes` (a whole request, with `Connection: close`) on a fresh connection and reads until the
 * server closes it.
 */
async function rawExchange(port: number, bytes: Buffer, timeoutMs = 10_000): Promise<RawReply> {
  const socket = await connect(port);
  const chunks: Buffer[] = [];
  let firstByteAt: number | undefined;
  let error: string | undefined;
  const sentAt = await new Promise<number>((resolve) =>
    socket.write(bytes, () => resolve(performance.now())),
  );
  socket.on('data', (chunk: Buffer) => {
    firstByteAt ??= performance.now();
    chunks.push(chunk);
  });
  socket.on('error', (err) => (error = String(err)));
  const timer = setTimeout(() => {
    error = `no end of response within ${timeoutMs} ms`;
    socket.destroy();
  }, timeoutMs);
  await closed(socket);
  clearTimeout(timer);
  const text = Buffer.concat(chunks).toString('utf8');
  const status = /^HTTP\/1\.1 (\d{3}) /.exec(text)?.[1];
  return {
    status: status === undefined ? undefined : Number(status),
    text,
    firstByteMs: firstByteAt === undefined ? undefined : firstByteAt - sentAt,
    error,
  };
}

/** The body of a raw reply (after the blank line), parsed as JSON, or `undefined`. */
function rawJson(reply: RawReply): unknown {
  const body = reply.text.slice(reply.text.indexOf('\r\n\r\n') + 4);
  try {
    return JSON.parse(body);
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Abort storm
// ---------------------------------------------------------------------------------------------------------

/** What the storm's handlers went through, counted in the handlers. */
const storm = {
  started: 0,
  completed: 0,
  cancelled: 0,
  failed: [] as string[],
  /** Each id's end; a second start of the same id is recorded as a failure. */
  outcomes: new Map<number, 'running' | 'completed' | 'cancelled'>(),
  reset(): void {
    this.started = this.completed = this.cancelled = 0;
    this.failed = [];
    this.outcomes.clear();
  },
};

/** The body the storm's routes answer for an id; its length varies with the id. */
function stormBody(
  id: number,
  received: number | null,
): { id: number; received: number | null; pad: string } {
  return { id, received, pad: 'x'.repeat(64 + ((id * 7919) % 2048)) };
}

function stormEnd(id: number, outcome: 'completed' | 'cancelled'): void {
  if (storm.outcomes.get(id) !== 'running') storm.failed.push(`id ${id} ended twice (${outcome})`);
  storm.outcomes.set(id, outcome);
  storm[outcome]++;
}

/** Waits `ms` on a timer that honours the request's signal, counting how the handler ends. */
async function stormWork(id: number, ms: number, signal: AbortSignal, received: number | null) {
  if (storm.outcomes.has(id)) storm.failed.push(`id ${id} started twice`);
  storm.outcomes.set(id, 'running');
  storm.started++;
  try {
    await delay(ms, undefined, { signal });
  } catch (err) {
    if (isCancellationError(err)) stormEnd(id, 'cancelled');
    else storm.failed.push(`id ${id} failed: ${show(err)}`);
    throw err;
  }
  // The timer fired as the request was being cancelled: the work is done, but the answer is the cancellation's.
  stormEnd(id, signal.aborted ? 'cancelled' : 'completed');
  return stormBody(id, received);
}

@Controller('storm')
class StormController {
  @Get('work')
  work(@Query('id') id: string, @Query('ms') ms: string, @RequestSignal() signal: AbortSignal) {
    return stormWork(Number(id), Number(ms), signal, null);
  }

  @Post('upload')
  @HttpCode(200)
  upload(
    @Query('id') id: string,
    @Query('ms') ms: string,
    @Body() body: { data?: string },
    @RequestSignal() signal: AbortSignal,
  ) {
    return stormWork(Number(id), Number(ms), signal, body.data?.length ?? -1);
  }
}

type StormKind = 'before-headers' | 'mid-body' | 'while-awaiting' | 'never';

interface StormClient {
  readonly id: number;
  readonly kind: StormKind;
  /** What went wrong for this client, if anything did. */
  readonly failure?: string;
}

/** A JSON body of about `size` bytes: `{"data":"xxxx"}`. */
function jsonBody(size: number): string {
  return JSON.stringify({ data: 'x'.repeat(Math.max(0, size - 11)) });
}

/**
 * Writes part of a request line and headers (never the blank line that ends them) on a raw socket, then
 * hangs up, at once or after a few milliseconds. The server must not answer, nor start a handler.
 */
async function abortBeforeHeaders(port: number, id: number, random: () => number): Promise<StormClient> {
  const head =
    `GET /storm/work?id=${id}&ms=5 HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: storm\r\n` +
    `Accept: application/json\r\nX-Padding: ${'p'.repeat(between(random, 0, 200))}\r\n`;
  const socket = await connect(port);
  let answered = false;
  socket.on('data', () => (answered = true));
  socket.write(head.slice(0, between(random, 1, head.length - 1)));
  const wait = between(random, 0, 5);
  if (wait > 0) await delay(wait);
  socket.destroy();
  await closed(socket);
  return { id, kind: 'before-headers', failure: answered ? 'answered an incomplete request' : undefined };
}

/** A POST with `Content-Length` whose body stops halfway, then hangs up. The handler must never start. */
async function abortMidBody(port: number, id: number, random: () => number): Promise<StormClient> {
  const body = jsonBody(between(random, 256, 32 * 1024));
  const head =
    `POST /storm/upload?id=${id}&ms=5 HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
    `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n`;
  const socket = await connect(port);
  let answered = false;
  socket.on('data', () => (answered = true));
  socket.write(head);
  if (random() < 0.5) await delay(between(random, 0, 3));
  socket.write(body.slice(0, Math.floor(body.length / 2)));
  const wait = between(random, 0, 10);
  if (wait > 0) await delay(wait);
  socket.destroy();
  await closed(socket);
  return {
    id,
    kind: 'mid-body',
    failure: answered ? 'answered a request whose body was incomplete' : undefined,
  };
}

/** A complete request (GET, or POST with its whole body) whose client hangs up 0-30 ms later. */
async function abortWhileAwaiting(port: number, id: number, random: () => number): Promise<StormClient> {
  const ms = between(random, 0, 30);
  const post = random() < 0.3;
  const handle = post
    ? startRequest(port, `/storm/upload?id=${id}&ms=${ms}`, {
        method: 'POST',
        body: jsonBody(between(random, 64, 8 * 1024)),
      })
    : startRequest(port, `/storm/work?id=${id}&ms=${ms}`);
  await delay(between(random, 0, 30));
  handle.abort();
  await handle.settled();
  return { id, kind: 'while-awaiting' };
}

/** A complete request that waits for its answer: it must be a complete 200 with the right body. */
async function neverAbort(
  port: number,
  id: number,
  random: () => number,
  agent: http.Agent,
): Promise<StormClient> {
  const ms = between(random, 0, 30);
  const size = random() < 0.3 ? between(random, 64, 8 * 1024) : undefined;
  const handle =
    size === undefined
      ? startRequest(port, `/storm/work?id=${id}&ms=${ms}`, { agent })
      : startRequest(port, `/storm/upload?id=${id}&ms=${ms}`, {
          method: 'POST',
          body: jsonBody(size),
          agent,
        });
  const timer = setTimeout(() => handle.abort(), 10_000);
  const outcome = await handle.settled();
  clearTimeout(timer);
  const expected = JSON.stringify(stormBody(id, size === undefined ? null : Math.max(0, size - 11)));
  let failure: string | undefined;
  if ('error' in outcome) failure = `no response: ${String(outcome.error)}`;
  else if (outcome.response.status !== 200)
    failure = `status ${outcome.response.status}: ${outcome.response.body}`;
  else if (outcome.response.body !== expected) failure = `wrong body: ${outcome.response.body.slice(0, 120)}`;
  return { id, kind: 'never', failure };
}

/** Runs `count` jobs, at most `concurrency` at a time. */
async function pool<T>(count: number, concurrency: number, job: (index: number) => Promise<T>): Promise<T[]> {
  const results: T[] = new Array<T>(count);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const index = next++;
      results[index] = await job(index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return results;
}

function tally<T extends string>(values: readonly T[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const value of values) counts[value] = (counts[value] ?? 0) + 1;
  return counts;
}

/**
 * The resets the clients saw, split by what the server reports: `lost` are requests the server read, or the
 * first request of a connection it accepted (must not happen: the server knew of that client); `keptAliveRace`
 * are requests a client sent on a keep-alive connection it had used before, which the server never read because
 * it had closed that connection while idle, as every HTTP/1.1 server does at its end (the client had not yet
 * processed the close: RFC 9112 section 9.3.1 has such a client retry); `neverAccepted` are connections the
 * kernel had completed and queued when the listener closed.
 */
function resets(
  outcomes: readonly LoadOutcome[],
  server: Pick<WorkSummary, 'acceptedPorts' | 'receivedIds'>,
) {
  const accepted = new Set(server.acceptedPorts);
  const received = new Set(server.receivedIds);
  const all = outcomes.filter((outcome) => outcome.category === 'reset');
  const ofAccepted = all.filter((outcome) => outcome.port !== undefined && accepted.has(outcome.port));
  const lost = ofAccepted.filter((outcome) => received.has(outcome.id) || outcome.reused !== true);
  return {
    lost,
    keptAliveRace: ofAccepted.length - lost.length,
    neverAccepted: all.length - ofAccepted.length,
  };
}

/**
 * At most this share of the requests (and at least 2) may be reset without having been accepted: the target of
 * issue #14. The listener closes once the kernel reports an empty accept queue: measured 8 of 11,177 requests
 * (0.07%, at most 1 a run) over 10 runs of the 2 ms and HTTPS cases on a quiet two-core machine, and 1 of 3,324 with
 * two spinning processes overloading it (against 109 of 3,218, 3.4%, with the listener closed after a turn that
 * accepted nothing, and 6 to 21% a run when it closed after the abort). Resets of accepted connections must be 0.
 */
const MAX_UNACCEPTED_RESETS = 0.01;

describe.each(ADAPTERS)('abort storm (%s)', (adapter) => {
  let t: TestApp | undefined;

  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  it(
    `${SCALE.stormRequests} clients aborting at random moments: exact accounting, nothing logged, nothing left`,
    async () => {
      t = await createApp(
        adapter,
        rootModule({ imports: [CancellationModule.forRoot()], controllers: [StormController] }),
      );
      const { port, app, logs } = t;
      storm.reset();
      const stream = adapter === 'express' ? 1 : 2;
      const random = randomFor(stream, 0);
      const agent = new http.Agent({ keepAlive: true, maxSockets: SCALE.stormConcurrency });
      const kinds: StormKind[] = Array.from({ length: SCALE.stormRequests }, () => {
        const roll = random();
        return roll < 0.2
          ? 'before-headers'
          : roll < 0.4
            ? 'mid-body'
            : roll < 0.7
              ? 'while-awaiting'
              : 'never';
      });

      const startedAt = performance.now();
      const clients = await pool(kinds.length, SCALE.stormConcurrency, (index) => {
        const id = index + 1;
        const random = randomFor(stream, id);
        switch (kinds[index]) {
          case 'before-headers':
            return abortBeforeHeaders(port, id, random);
          case 'mid-body':
            return abortMidBody(port, id, random);
          case 'while-awaiting':
            return abortWhileAwaiting(port, id, random);
          case 'never':
            return neverAbort(port, id, random, agent);
        }
      });
      const stormMs = performance.now() - startedAt;
      agent.destroy();

      const registry = app.get(InFlightRegistry);
      await waitFor(
        () =>
          registry.size === 0 && storm.started === storm.completed + storm.cancelled + storm.failed.length,
        { timeoutMs: 5000, message: 'every handler to end and the in-flight registry to empty' },
      );
      await until(async () => (await connectionCount(app)) === 0, {
        timeoutMs: 5000,
        message: 'every connection to close',
      });

      const byKind = tally(kinds);
      report(
        `abort storm (${adapter}): ${kinds.length} clients in ${Math.round(stormMs)} ms ${JSON.stringify(byKind)}; ` +
          `handlers started ${storm.started} = completed ${storm.completed} + cancelled ${storm.cancelled}`,
      );

      // Every client saw what it should: the ones that waited, a complete 200 with their own body.
      expect(clients.filter((client) => client.failure !== undefined)).toEqual([]);
      // Every handler that started ended exactly once, as completed or cancelled.
      expect(storm.failed).toEqual([]);
      expect(storm.started).toBe(storm.completed + storm.cancelled);
      expect(storm.started).toBe(storm.outcomes.size);
      // Counted on both sides: a client that waited had its handler complete; a request that never arrived
      // whole (headers or body cut off) never reached a handler.
      const mismatched = clients
        .map((client) => ({ ...client, outcome: storm.outcomes.get(client.id) }))
        .filter(({ kind, outcome }) =>
          kind === 'never'
            ? outcome !== 'completed'
            : kind === 'before-headers' || kind === 'mid-body'
              ? outcome !== undefined
              : false,
        );
      expect(mismatched).toEqual([]);
      // A storm, not a drizzle: both endings happened many times.
      expect(storm.completed).toBeGreaterThanOrEqual(byKind.never);
      expect(storm.cancelled).toBeGreaterThan(kinds.length / 50);

      expect(registry.size).toBe(0);
      expect(problems(logs)).toEqual([]);
      // Every cancellation was a client leaving, logged at verbose level: each cancelled handler's request, and
      // at most one line per client that hung up after sending its whole request.
      const cancelledLines = logs
        .inContext('Cancellation')
        .filter((line) => line.message.includes(' cancelled ('));
      expect(cancelledLines.filter((line) => !line.message.includes('(client-disconnected)'))).toEqual([]);
      expect(cancelledLines.filter((line) => line.level !== 'verbose')).toEqual([]);
      expect(cancelledLines.length).toBeGreaterThanOrEqual(storm.cancelled);
      expect(cancelledLines.length).toBeLessThanOrEqual(byKind['while-awaiting']);

      // The server is still serving.
      const after = await request(port, '/storm/work?id=0&ms=0');
      expect({ status: after.status, json: after.json }).toEqual({ status: 200, json: stormBody(0, null) });
    },
    SCALE.testTimeoutMs,
  );
});

// ---------------------------------------------------------------------------------------------------------
// Child processes: SIGTERM under load, non-cooperative handlers
// ---------------------------------------------------------------------------------------------------------

/** The fixture app in a child process, its stdout parsed line by line (test/utils/fixture.ts). */
class ChildApp extends FixtureApp {
  static spawn(adapter: AdapterName, env: Record<string, string>): ChildApp {
    const childEnv: NodeJS.ProcessEnv = { ...process.env, ADAPTER: adapter, ...env };
    delete childEnv.NODE_OPTIONS;
    return new ChildApp(spawnFixture(FIXTURE, childEnv));
  }

  /** The app's port, once it listens on the Nest the suite runs on (Nest 11 in the Nest 11 job). */
  async port(): Promise<number> {
    const listening = await this.next('listening', 20_000);
    expect(listening.nest).toBe(fixtureNestVersion());
    return Number(listening.port);
  }

  /** Log lines at warn, error or fatal level, crashes, and anything on stderr. */
  problems(): string[] {
    return [
      ...this.events
        .filter(
          (line) =>
            (line.event === 'log' && ['warn', 'error', 'fatal'].includes(String(line.level))) ||
            line.event === 'crash',
        )
        .map((line) => JSON.stringify(line)),
      ...(this.stderr === '' ? [] : [`stderr: ${this.stderr}`]),
    ];
  }
}

/** How a load client's request ended. */
type LoadCategory =
  | 'ok'
  | 'unavailable'
  | 'refused'
  | 'reset'
  | 'truncated'
  | 'wrong-body'
  | 'other-status'
  | 'other-error'
  | 'hung';

interface LoadOutcome {
  readonly id: number;
  readonly category: LoadCategory;
  readonly detail?: string;
  /** The client's port of the connection, once it connected (the server reports the ports it accepted). */
  readonly port?: number;
  /** Whether the request went out on a keep-alive connection that an earlier request had used. */
  readonly reused?: boolean;
}

/** The body `/load/work?id=` answers (the same formula as the fixture's `workBody`). */
function workBody(id: number): string {
  return JSON.stringify({ id, pad: 'x'.repeat(512 + ((id * 7919) % 4096)) });
}

const CLIENT_TIMEOUT_MS = 8000;

/**
 * One client of the load: a GET (on a keep-alive or a fresh connection), classified as a complete 200 with the
 * right body, a complete 503, a refused connection, a reset before any response byte, or a failure (a truncated
 * body, an error after the response began, another status, no end within `CLIENT_TIMEOUT_MS`).
 */
function loadRequest(
  port: number,
  path: string,
  id: number,
  agent: http.Agent | false,
  /** A certificate to trust: the request goes over HTTPS. */
  ca?: string,
): Promise<LoadOutcome> {
  return new Promise((resolve) => {
    let settled = false;
    let localPort: number | undefined;
    const done = (category: LoadCategory, detail?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ id, category, detail, port: localPort, reused: req.reusedSocket });
    };
    const target = { host: '127.0.0.1', port, path, agent };
    const req = ca === undefined ? http.get(target) : https.get({ ...target, ca });
    req.once('socket', (socket) => {
      if (!socket.connecting) localPort = socket.localPort;
      else socket.once('connect', () => (localPort = socket.localPort));
    });
    const timer = setTimeout(() => {
      done('hung', `no end within ${CLIENT_TIMEOUT_MS} ms`);
      req.destroy();
    }, CLIENT_TIMEOUT_MS);
    req.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNREFUSED') done('refused');
      else if (err.code === 'ECONNRESET' || err.code === 'EPIPE') done('reset', err.message);
      else done('other-error', `${err.code}: ${err.message}`);
    });
    req.once('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.once('error', (err) => done('truncated', `after status ${res.statusCode}: ${String(err)}`));
      res.once('close', () => {
        if (!res.complete) done('truncated', `status ${res.statusCode}, body cut off`);
      });
      res.once('end', () => {
        const body = Buffer.concat(chunks);
        const length = res.headers['content-length'];
        if (length !== undefined && Number(length) !== body.length) {
          done('truncated', `status ${res.statusCode}, ${body.length} of ${length} bytes`);
        } else if (res.statusCode === 200) {
          const text = body.toString('utf8');
          done(text === workBody(id) ? 'ok' : 'wrong-body', text.slice(0, 80));
        } else if (res.statusCode === 503) {
          done('unavailable');
        } else {
          done('other-status', `${res.statusCode}: ${body.toString('utf8').slice(0, 120)}`);
        }
      });
    });
  });
}

interface LoadRun {
  readonly outcomes: LoadOutcome[];
  /** Requests the clients had open when SIGTERM was sent. */
  readonly openAtSignal: number;
  readonly signalledAt: number;
  readonly exit: FixtureExit;
}

/**
 * Open-loop load: requests of 50-1000 ms arrive at the rate that keeps about `SCALE.loadInFlight` of them in
 * flight, three in four on keep-alive connections (as from a load balancer's pool), the others on a fresh
 * connection each; after `SCALE.loadRampMs` the app gets SIGTERM, and arrivals go on until shortly after it
 * exited.
 */
async function loadAndTerminate(app: ChildApp, port: number, random: () => number): Promise<LoadRun> {
  const meanMs = 525;
  const perTick = (SCALE.loadInFlight / meanMs) * 10;
  const agent = new http.Agent({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY });
  const pending: Promise<LoadOutcome>[] = [];
  let open = 0;
  let nextId = 1;
  let owed = 0;
  const launch = () => {
    const id = nextId++;
    const path = `/load/work?id=${id}&ms=${between(random, 50, 1000)}`;
    open++;
    pending.push(loadRequest(port, path, id, random() < 0.75 ? agent : false).finally(() => open--));
  };
  const arrivals = setInterval(() => {
    owed += perTick;
    for (; owed >= 1; owed--) launch();
  }, 10);
  try {
    await delay(SCALE.loadRampMs);
    const openAtSignal = open;
    const signalledAt = performance.now();
    app.child.kill('SIGTERM');
    const giveUp = new AbortController();
    const exit = await Promise.race([
      app.exited,
      delay(10_000, undefined, { signal: giveUp.signal }).then(() => {
        throw new Error(`the app did not exit within 10 s of SIGTERM\n${app.stderr}`);
      }),
    ]).finally(() => giveUp.abort());
    // A few arrivals after the exit, which must be refused.
    await delay(50);
    clearInterval(arrivals);
    return { outcomes: await Promise.all(pending), openAtSignal, signalledAt, exit };
  } finally {
    clearInterval(arrivals);
    agent.destroy();
  }
}

interface WorkSummary {
  readonly started: number[];
  readonly completed: number[];
  readonly cancelled: number[];
  readonly failed: number[];
  /** The client ports of the connections the server accepted. */
  readonly acceptedPorts: number[];
  /** The ids of the requests the server read. */
  readonly receivedIds: number[];
}

describe.each(ADAPTERS)('SIGTERM (%s)', (adapter) => {
  const GRACE_MS = 300;
  const STALLED = { grace: 200, deadline: 800 };
  /** All started at once, so that their start-up (about a second each) overlaps. */
  let apps: { load: ChildApp; burst: ChildApp; burstTls: ChildApp; stubborn: ChildApp } | undefined;

  beforeAll(() => {
    apps = {
      load: ChildApp.spawn(adapter, { GRACE_MS: String(GRACE_MS) }),
      burst: ChildApp.spawn(adapter, { GRACE_MS: '0' }),
      burstTls: ChildApp.spawn(adapter, {
        GRACE_MS: '0',
        TLS_KEY: testCertificate().key,
        TLS_CERT: testCertificate().cert,
      }),
      stubborn: ChildApp.spawn(adapter, {
        GRACE_MS: String(STALLED.grace),
        TIMEOUT_MS: String(STALLED.deadline),
      }),
    };
  });

  afterAll(async () => {
    for (const app of Object.values(apps ?? {})) await app.kill();
  });

  it(
    'under load: every client gets a complete 200, a 503 or a refused connection, and the process exits in time',
    async () => {
      const app = apps?.load as ChildApp;
      const port = await app.port();
      const run = await loadAndTerminate(app, port, randomFor(adapter === 'express' ? 3 : 4, 0));
      const counts = tally(run.outcomes.map((outcome) => outcome.category));
      const exitMs = run.exit.at - run.signalledAt;
      const draining = app.events.find(
        (line) => line.event === 'log' && String(line.message).startsWith('Draining '),
      );
      report(
        `SIGTERM under load (${adapter}): ${run.outcomes.length} requests, ${run.openAtSignal} open at SIGTERM ` +
          `(server: "${String(draining?.message)}"), exit ${run.exit.signal ?? run.exit.code} after ` +
          `${Math.round(exitMs)} ms; ${JSON.stringify(counts)}`,
      );

      const failures = run.outcomes.filter(
        (outcome) => !['ok', 'unavailable', 'refused', 'reset'].includes(outcome.category),
      );
      expect(failures).toEqual([]);
      expect(counts.ok).toBeGreaterThan(0);
      expect(counts.unavailable).toBeGreaterThan(0);
      // Every connection the server accepted got its whole answer; few were queued and never accepted.
      const summaryEvent = (await app.next('summary')) as FixtureEvent & WorkSummary;
      const reset = resets(run.outcomes, summaryEvent);
      report(
        `SIGTERM under load (${adapter}): ${summaryEvent.acceptedPorts.length} connections accepted; resets ` +
          `of requests the server read or first requests of accepted connections ${reset.lost.length}, of ` +
          `reused keep-alive connections closed while idle ${reset.keptAliveRace}, of never-accepted ` +
          `connections ${reset.neverAccepted}`,
      );
      // (How many were queued and never accepted depends on how far the server lagged behind this open-loop load
      // on a shared machine: reported only; the case below bounds it.)
      expect(reset.lost).toEqual([]);
      // Idle keep-alive connections are closed when Nest closes the server, after the abort, so that most carry a
      // request (answered 503) before: a client that sends on one at that very moment is the rare case.
      expect(reset.keptAliveRace).toBeLessThanOrEqual(Math.max(2, Math.floor(run.outcomes.length / 100)));
      // Hundreds in flight when the signal came. The server counts fewer when it lags behind its clients (on a
      // busy machine some requests are still in socket buffers): a sanity check only.
      expect(run.openAtSignal).toBeGreaterThanOrEqual(SCALE.loadInFlight / 3);
      expect(Number(/Draining (\d+)/.exec(String(draining?.message))?.[1])).toBeGreaterThanOrEqual(
        SCALE.loadInFlight / 6,
      );

      // Nest re-sends the signal to itself once its shutdown hooks ran.
      expect(run.exit).toMatchObject({ code: null, signal: 'SIGTERM' });
      expect(exitMs).toBeLessThan(GRACE_MS + 1500);

      // Counted on both sides: the handlers that completed are exactly the clients that got their 200, and a
      // handler cancelled at the end of the grace period answered its client 503.
      const summary = (await app.next('summary')) as FixtureEvent & WorkSummary;
      expect(summary.failed).toEqual([]);
      expect(summary.started.length).toBe(summary.completed.length + summary.cancelled.length);
      const ok = run.outcomes.filter((outcome) => outcome.category === 'ok').map((outcome) => outcome.id);
      expect([...summary.completed].sort((a, b) => a - b)).toEqual(ok.sort((a, b) => a - b));
      const unavailable = new Set(
        run.outcomes.filter((outcome) => outcome.category === 'unavailable').map((outcome) => outcome.id),
      );
      expect(summary.cancelled.filter((id) => !unavailable.has(id))).toEqual([]);
      expect(app.problems()).toEqual([]);
    },
    SCALE.testTimeoutMs,
  );

  /**
   * SIGTERM with `long` requests in flight (aborted at once: no grace period) and a new connection every
   * `everyMs`: every connection the server accepted is answered, few were queued and never accepted.
   */
  async function burst(app: ChildApp, long: number, everyMs: number, ca?: string): Promise<void> {
    const port = await app.port();
    const scheme = ca === undefined ? 'HTTP' : 'HTTPS';
    // Aborted at SIGTERM (no grace period): answering them all is the CPU-heavy part of the shutdown.
    const longRequests = Array.from({ length: long }, (_, i) =>
      loadRequest(port, `/load/work?id=${100_000 + i}&ms=10000`, 100_000 + i, false, ca),
    );
    await waitFor(() => app.all('started').length === long, {
      timeoutMs: 10_000,
      message: 'every long request to start',
    });
    const arriving: Promise<LoadOutcome>[] = [];
    let nextId = 1;
    const arrivals = setInterval(() => {
      const id = nextId++;
      arriving.push(loadRequest(port, `/load/work?id=${id}&ms=0`, id, false, ca));
    }, everyMs);
    let exit: FixtureExit;
    let signalledAt: number;
    try {
      await delay(300);
      signalledAt = performance.now();
      app.child.kill('SIGTERM');
      exit = await app.exited;
      await delay(50); // arrivals after the exit, refused
    } finally {
      clearInterval(arrivals);
    }
    const longOutcomes = await Promise.all(longRequests);
    const outcomes = [...longOutcomes, ...(await Promise.all(arriving))];
    const summary = (await app.next('summary')) as FixtureEvent & WorkSummary;
    const counts = tally(outcomes.map((outcome) => outcome.category));
    const reset = resets(outcomes, summary);
    report(
      `SIGTERM with ${long} long requests in flight and a connection every ${everyMs} ms (${adapter}, ` +
        `${scheme}): ${outcomes.length} requests, ${summary.acceptedPorts.length} connections accepted, ` +
        `exit after ${Math.round(exit.at - signalledAt)} ms; ${JSON.stringify(counts)}; resets of accepted ` +
        `connections ${reset.lost.length + reset.keptAliveRace}, of never-accepted ones ${reset.neverAccepted} ` +
        `(${((100 * reset.neverAccepted) / outcomes.length).toFixed(1)}%)`,
    );

    expect(longOutcomes.map((outcome) => outcome.category)).toEqual(Array(long).fill('unavailable'));
    const failures = outcomes.filter(
      (outcome) => !['ok', 'unavailable', 'refused', 'reset'].includes(outcome.category),
    );
    expect(failures).toEqual([]);
    // (No connection is reused here: every reset of an accepted one would be `lost`.)
    expect(reset.lost).toEqual([]);
    expect(reset.keptAliveRace).toBe(0);
    expect(reset.neverAccepted).toBeLessThanOrEqual(
      Math.max(2, Math.floor(outcomes.length * MAX_UNACCEPTED_RESETS)),
    );
    // Every connection the server accepted carried a request that was answered (200 or 503).
    const answered = outcomes.filter(
      (outcome) => outcome.category === 'ok' || outcome.category === 'unavailable',
    );
    expect(answered.length).toBe(summary.acceptedPorts.length);
    expect(exit).toMatchObject({ code: null, signal: 'SIGTERM' });
    expect(summary.failed).toEqual([]);
    expect(app.problems()).toEqual([]);
  }

  it(
    'with 200 long requests in flight and a new connection every 2 ms: no accepted connection is reset',
    () => burst(apps?.burst as ChildApp, 200, 2),
    SCALE.testTimeoutMs,
  );

  it(
    'over HTTPS, with 100 long requests in flight and a new connection every 4 ms: no accepted connection is reset',
    () => burst(apps?.burstTls as ChildApp, 100, 4, testCertificate().cert),
    SCALE.testTimeoutMs,
  );

  it(
    'with handlers that ignore their signal (timers, CPU slices, an endless stream): exits by the hard deadline',
    async () => {
      const app = apps?.stubborn as ChildApp;
      const port = await app.port();
      const clients = [
        ...Array.from({ length: 10 }, (_, i) => ({
          route: 'stubborn',
          client: startRequest(port, `/load/stubborn?n=${i}`),
        })),
        ...Array.from({ length: 3 }, () => ({
          route: 'spin',
          client: startRequest(port, '/load/spin?ms=5000'),
        })),
        ...Array.from({ length: 2 }, () => ({ route: 'stream', client: startRequest(port, '/load/stream') })),
      ];
      await waitFor(() => app.all('started').length === clients.length, {
        timeoutMs: 10_000,
        message: 'every handler to start',
      });

      const signalledAt = performance.now();
      app.child.kill('SIGTERM');
      const settled = await Promise.all(
        clients.map(async ({ route, client }) => ({
          route,
          outcome: await client.settled(),
          at: performance.now(),
        })),
      );
      const exit = await app.exited;
      const exitMs = exit.at - signalledAt;
      report(`non-cooperative handlers under SIGTERM (${adapter}): exit after ${Math.round(exitMs)} ms`);

      for (const { route, outcome, at } of settled) {
        if (route === 'stream') {
          // Headers and a first chunk were sent: all the hard deadline can do is destroy the connection.
          expect({ route, error: 'error' in outcome }).toEqual({ route, error: true });
          expect(at - signalledAt).toBeGreaterThanOrEqual(STALLED.deadline - 100);
        } else {
          // Answered when the grace period ended, although the handler goes on.
          const status = 'response' in outcome ? outcome.response.status : String(outcome.error);
          expect({ route, status }).toEqual({ route, status: 503 });
          expect(at - signalledAt).toBeLessThan(STALLED.grace + 1000);
        }
      }
      expect(exit).toMatchObject({ code: null, signal: 'SIGTERM' });
      expect(exitMs).toBeGreaterThanOrEqual(STALLED.deadline - 100);
      expect(exitMs).toBeLessThan(STALLED.deadline + 1500);

      // The hard deadline named the two streams it cut, at warn level, and nothing else went wrong.
      const warnings = app.events
        .filter((line) => line.event === 'log' && line.level === 'warn')
        .map((line) => String(line.message));
      expect(warnings).toHaveLength(2);
      for (const warning of warnings) expect(warning).toContain('GET /load/stream');
      expect(
        app.problems().filter((line) => !warnings.some((warning) => line.includes(JSON.stringify(warning)))),
      ).toEqual([]);
    },
    SCALE.testTimeoutMs,
  );
});

// ---------------------------------------------------------------------------------------------------------
// Non-cooperative handlers, in process
// ---------------------------------------------------------------------------------------------------------

const stubborn = { started: 0, spinsEnded: 0 };

@Controller('stubborn')
class StubbornController {
  /** Never looks at its signal: awaits a plain 10 s timer, unref'd so that it holds nothing in the test. */
  @Get('sleep')
  async sleep(): Promise<string> {
    stubborn.started++;
    await new Promise<void>((resolve) => setTimeout(resolve, 10_000).unref());
    return 'finished';
  }

  /** Busy for `ms` in 20 ms slices of CPU work with a `setImmediate` between them, never checking its signal. */
  @Get('spin')
  async spin(@Query('ms') ms: string): Promise<{ x: number }> {
    stubborn.started++;
    const until = performance.now() + Number(ms);
    let x = 0;
    while (performance.now() < until) {
      const slice = performance.now() + 20;
      while (performance.now() < slice) x = (x * 31 + 7) % 1_000_003;
      await new Promise((resolve) => setImmediate(resolve));
    }
    stubborn.spinsEnded++;
    return { x };
  }
}

describe.each(ADAPTERS)('non-cooperative handlers (%s)', (adapter) => {
  let t: TestApp | undefined;

  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  it('app.close() resolves promptly, long before the hard deadline, and every client is answered 503', async () => {
    const grace = 100;
    const shutdownTimeoutMs = 1500;
    const spinMs = 1200;
    t = await createApp(
      adapter,
      rootModule({
        imports: [CancellationModule.forRoot({ shutdownGracePeriodMs: grace, shutdownTimeoutMs })],
        controllers: [StubbornController],
      }),
    );
    stubborn.started = stubborn.spinsEnded = 0;
    const clients = [
      ...Array.from({ length: 20 }, (_, i) => startRequest(t!.port, `/stubborn/sleep?n=${i}`)),
      ...Array.from({ length: 4 }, () => startRequest(t!.port, `/stubborn/spin?ms=${spinMs}`)),
    ];
    await waitFor(() => stubborn.started === clients.length, { message: 'every handler to start' });

    const closeMs = await t.close();
    const outcomes = await Promise.all(clients.map((client) => client.settled()));
    report(`non-cooperative handlers, app.close() (${adapter}): ${Math.round(closeMs)} ms`);
    for (const outcome of outcomes) {
      expect('response' in outcome ? outcome.response.status : String(outcome.error)).toBe(503);
    }
    expect(closeMs).toBeLessThan(shutdownTimeoutMs);
    expect(closeMs).toBeLessThan(grace + 1000);
    expect(t.app.get(InFlightRegistry).size).toBe(0);

    // The work itself goes on (nothing stops code that ignores its signal); when it ends, nothing breaks.
    expect(stubborn.spinsEnded).toBe(0);
    await waitFor(() => stubborn.spinsEnded === 4, { timeoutMs: 10_000, message: 'the CPU loops to end' });
    await delay(20);
    expect(problems(t.logs)).toEqual([]);
    expect(t.logs.lines.filter((line) => line.message.includes('Shutdown deadline'))).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------------------

const DEADLINE_HEADER = 'x-request-timeout-ms';
const BUDGET_MS = 300;
const OPEN_MS = 200;
const BODY_LIMIT = 16 * 1024 * 1024;
const uploads = { started: 0 };

@Controller('bad')
class BadInputController {
  /** Would take 2 s; its budget is 300 ms, which a deadline header may shorten and never lengthen. */
  @Get('budgeted')
  @RequestTimeout(BUDGET_MS)
  async budgeted(@RequestSignal() signal: AbortSignal): Promise<string> {
    await delay(2000, undefined, { signal });
    return 'too late';
  }

  /** No budget of its own: takes 200 ms unless a deadline header gives it less. */
  @Get('open')
  async open(@RequestSignal() signal: AbortSignal): Promise<string> {
    await delay(OPEN_MS, undefined, { signal });
    return 'open';
  }

  @Post('upload')
  @HttpCode(200)
  upload(@Body() body: { data?: string }): { received: number } {
    uploads.started++;
    return { received: body.data?.length ?? -1 };
  }

  @Get('quick')
  quick(): string {
    return 'quick';
  }
}

/** An app with a body limit large enough for the 5 MB uploads, and the deadline header on. */
async function startBadInputApp(adapter: AdapterName): Promise<TestApp> {
  const module = rootModule({
    imports: [CancellationModule.forRoot({ deadlineHeader: DEADLINE_HEADER })],
    controllers: [BadInputController],
  });
  if (adapter === 'express') {
    return createApp(adapter, module, {
      configure: (app) => void (app as NestExpressApplication).useBodyParser('json', { limit: BODY_LIMIT }),
    });
  }
  // Fastify's limit is the adapter's own option; the harness builds a default adapter, so do it here.
  const logs = new LogCapture();
  const app = await NestFactory.create(module, new FastifyAdapter({ bodyLimit: BODY_LIMIT }), {
    logger: logs,
    abortOnError: false,
  });
  await app.listen(0, '127.0.0.1');
  const { port } = (app.getHttpServer() as http.Server).address() as AddressInfo;
  let closing: Promise<number> | undefined;
  return {
    app,
    adapter,
    port,
    url: `http://127.0.0.1:${port}`,
    logs,
    responses: [],
    close() {
      closing ??= (async () => {
        const startedAt = performance.now();
        await app.close();
        return performance.now() - startedAt;
      })();
      return closing;
    },
  };
}

/** How the deadline header of a request is spelled, and what it must do to the route's budget. */
interface HeaderCase {
  /** The header lines, verbatim (more than one: a repeated header). */
  readonly lines: readonly string[];
  /** `shorter`: a valid value below the budget; `ignored`: malformed, or not shorter. */
  readonly effect: 'shorter' | 'ignored';
  /** The budget it sets, for `shorter`. */
  readonly ms?: number;
}

const header = (value: string) => `X-Request-Timeout-Ms: ${value}`;

const HEADER_CASES: readonly HeaderCase[] = [
  // Malformed: ignored, the route keeps its budget.
  ...[
    '',
    'abc',
    '-1',
    '-300',
    '+100',
    '1e2',
    '1.5',
    '100.0',
    '0x10',
    '100ms',
    '1_000',
    'Infinity',
    'NaN',
  ].map((value) => ({ lines: [header(value)], effect: 'ignored' as const })),
  { lines: [header('99999999999')], effect: 'ignored' }, // eleven digits
  { lines: [header('9'.repeat(4000))], effect: 'ignored' },
  { lines: [header('\uff11\uff10\uff10')], effect: 'ignored' }, // full-width digits, as UTF-8
  { lines: [header('100'), header('50')], effect: 'ignored' }, // repeated: Node joins them as "100, 50"
  { lines: [header('1 00')], effect: 'ignored' },
  // Valid but not shorter than the budget: a header never lengthens a server-side limit.
  ...['300', '1000', '5000', '2147483647', '9999999999'].map((value) => ({
    lines: [header(value)],
    effect: 'ignored' as const,
  })),
  // Valid and shorter: the caller's budget wins.
  ...[0, 1, 50, 150].map((ms) => ({ lines: [header(String(ms))], effect: 'shorter' as const, ms })),
  { lines: ['x-REQUEST-timeout-MS: 50'], effect: 'shorter', ms: 50 },
];

function getWithHeaders(path: string, lines: readonly string[]): Buffer {
  return Buffer.from(
    `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n${lines.map((line) => `${line}\r\n`).join('')}\r\n`,
    'utf8',
  );
}

/**
 * A POST of `body` with its full Content-Length whose client sends `fraction` of it, `chunk` bytes at a time
 * every `everyMs` for at most `forMs` (all at once when `chunk` is 0), then hangs up. Resolves with whether
 * the server answered anything.
 */
async function partialUpload(
  port: number,
  body: Buffer,
  fraction: number,
  { chunk = 0, everyMs = 0, forMs = 0 }: { chunk?: number; everyMs?: number; forMs?: number } = {},
): Promise<boolean> {
  const socket = await connect(port);
  let answered = false;
  socket.on('data', () => (answered = true));
  socket.on('error', () => undefined);
  socket.write(
    `POST /bad/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${body.length}\r\n\r\n`,
  );
  const end = Math.floor(body.length * fraction);
  if (chunk === 0) {
    await new Promise<void>((resolve) => socket.write(body.subarray(0, end), () => resolve()));
  } else {
    const stopAt = performance.now() + forMs;
    for (let offset = 0; offset < end && !socket.destroyed && performance.now() < stopAt; offset += chunk) {
      socket.write(body.subarray(offset, Math.min(end, offset + chunk)));
      await delay(everyMs);
    }
  }
  socket.destroy();
  await closed(socket);
  return answered;
}

describe.each(ADAPTERS)('bad input (%s)', (adapter) => {
  describe('options', () => {
    const module = (cancellation: DynamicModule) =>
      rootModule({ imports: [cancellation], controllers: [BadInputController] });
    const cases: [string, DynamicModule, RegExp][] = [
      ['a negative timeoutMs', CancellationModule.forRoot({ timeoutMs: -5 }), /"timeoutMs": -5/],
      ['a fractional timeoutMs', CancellationModule.forRoot({ timeoutMs: 1.5 }), /"timeoutMs": 1\.5/],
      [
        'a timeoutStatus that is not an error',
        CancellationModule.forRoot({ timeoutStatus: 200 }),
        /"timeoutStatus": 200/,
      ],
      [
        'a hard deadline shorter than the grace period',
        CancellationModule.forRoot({ shutdownGracePeriodMs: 500, shutdownTimeoutMs: 400 }),
        /"shutdownTimeoutMs": 400.*longer than shutdownGracePeriodMs \(500\)/,
      ],
      [
        'a header name with a space',
        CancellationModule.forRoot({ deadlineHeader: 'x request timeout' }),
        /"deadlineHeader": "x request timeout"/,
      ],
      [
        'an unknown option (a typo)',
        CancellationModule.forRoot({ timeout: 1000 } as CancellationModuleOptions),
        /unknown option "timeout"/,
      ],
      [
        'a string from an async factory',
        CancellationModule.forRootAsync({
          useFactory: () => ({ shutdownGracePeriodMs: '300' }) as unknown as CancellationModuleOptions,
        }),
        /"shutdownGracePeriodMs": "300"/,
      ],
    ];

    it.each(cases)('refuses to start with %s, naming the option', async (_name, cancellation, message) => {
      const logs = new LogCapture();
      const httpAdapter = adapter === 'express' ? new ExpressAdapter() : new FastifyAdapter();
      const creating = NestFactory.create(module(cancellation), httpAdapter, {
        logger: logs,
        abortOnError: false,
      });
      await expect(creating).rejects.toThrow(message);
      await expect(creating).rejects.toBeInstanceOf(TypeError);
      if (adapter === 'fastify') await (httpAdapter as FastifyAdapter).close();
    });
  });

  describe('requests', () => {
    let t: TestApp | undefined;
    beforeEach(async () => {
      t = await startBadInputApp(adapter);
      uploads.started = 0;
    });
    afterEach(async () => {
      if (t === undefined) return;
      expect(t.app.get(InFlightRegistry).size).toBe(0);
      await t.close();
      expect(problems(t.logs)).toEqual([]);
      t = undefined;
    });

    /** A normal request after the abuse: the server still answers. */
    async function stillServing(port: number): Promise<void> {
      const quick = await request(port, '/bad/quick');
      expect({ status: quick.status, body: quick.body }).toEqual({ status: 200, body: 'quick' });
    }

    it(
      `malformed deadline headers under load (${SCALE.headerRequests} requests) never lengthen a budget`,
      async () => {
        const { port } = t!;
        const random = randomFor(adapter === 'express' ? 5 : 6, 0);
        const jobs = Array.from({ length: SCALE.headerRequests }, () => ({
          route: random() < 0.7 ? ('budgeted' as const) : ('open' as const),
          spec: HEADER_CASES[between(random, 0, HEADER_CASES.length - 1)],
        }));
        const startedAt = performance.now();
        const replies = await pool(jobs.length, 50, async (index) => {
          const { route, spec } = jobs[index];
          const reply = await rawExchange(port, getWithHeaders(`/bad/${route}`, spec.lines));
          return { route, spec, reply };
        });
        const elapsed = performance.now() - startedAt;

        const MARGIN_MS = 700;
        const wrong: unknown[] = [];
        const slowest = { ignored: 0, shorter: 0 };
        for (const { route, spec, reply } of replies) {
          const ms = reply.firstByteMs ?? Number.POSITIVE_INFINITY;
          const summary = {
            route,
            header: spec.lines.map((line) => line.slice(0, 40)),
            status: reply.status,
            ms: Math.round(ms),
            error: reply.error,
          };
          // The budget the request must have had: the route's, unless a valid header made it shorter.
          const own = route === 'budgeted' ? BUDGET_MS : undefined;
          const budget =
            spec.effect === 'shorter' && (own === undefined || (spec.ms as number) < own)
              ? (spec.ms as number)
              : own;
          const expected = budget === undefined ? 200 : 504;
          slowest[spec.effect] = Math.max(slowest[spec.effect], ms - (budget ?? OPEN_MS));
          if (reply.status !== expected) wrong.push({ ...summary, expected });
          else if (budget !== undefined && ms > budget + MARGIN_MS)
            wrong.push({ ...summary, problem: 'later than its budget' });
          else if (budget === undefined && ms < OPEN_MS - 5) wrong.push({ ...summary, problem: 'cut short' });
          else if (budget !== undefined && spec.effect === 'ignored' && ms < budget - 5)
            wrong.push({ ...summary, problem: 'a malformed or longer header shortened the budget' });
          else if (expected === 504 && (rawJson(reply) as { statusCode?: number })?.statusCode !== 504)
            wrong.push({ ...summary, problem: 'not the timeout body' });
        }
        report(
          `deadline headers (${adapter}): ${replies.length} requests in ${Math.round(elapsed)} ms; ` +
            `latest answer past its budget: ${Math.round(slowest.ignored)} ms (ignored headers), ` +
            `${Math.round(slowest.shorter)} ms (valid shorter ones)`,
        );
        expect(wrong).toEqual([]);
        await stillServing(port);
      },
      SCALE.testTimeoutMs,
    );

    /**
     * The smallest case of the uploads below. On Fastify the request never reaches the interceptor: Fastify's
     * body reader sends Node's `Error: aborted` (ECONNRESET, given statusCode 400) to Nest's error handler,
     * whose `mapException()` does not map it, so Nest's ExceptionsHandler logs it at error level. Express's
     * body parser turns it into an http-error 400 that Nest maps to an HttpException, which is not logged.
     */
    it('one client hanging up halfway through its POST body: nothing is logged at error level', async () => {
      const { port, app } = t!;
      expect(await partialUpload(port, Buffer.from(jsonBody(4096)), 0.5)).toBe(false);
      await until(async () => (await connectionCount(app)) === 0, { message: 'the connection to close' });
      await delay(20);
      expect(uploads.started).toBe(0);
      expect(t!.logs.errors.map((line) => line.text)).toEqual([]);
      await stillServing(port);
    });

    it('5 MB JSON bodies cut off halfway: no handler, nothing logged, and a complete one still works', async () => {
      const { port, app } = t!;
      const body = Buffer.from(jsonBody(5 * 1024 * 1024));
      const answered = await Promise.all(
        [0.5, 0.25, 0.75, 0.5].map((fraction) => partialUpload(port, body, fraction)),
      );
      // The parser waits for the rest of the body: nothing reaches the handler, and nothing can be answered.
      expect(answered).toEqual([false, false, false, false]);
      await until(async () => (await connectionCount(app)) === 0, { message: 'the connections to close' });
      expect(uploads.started).toBe(0);

      const whole = await request(port, '/bad/upload', { method: 'POST', body: body.toString('utf8') });
      expect({ status: whole.status, json: whole.json }).toEqual({
        status: 200,
        json: { received: 5 * 1024 * 1024 - 11 },
      });
      expect(uploads.started).toBe(1);
      await stillServing(port);
    });

    it(`${SCALE.slowBodies} trickled bodies and headers aborted: nothing logged, the server keeps serving`, async () => {
      const { port, app } = t!;
      const body = Buffer.from(jsonBody(2000));
      const random = randomFor(adapter === 'express' ? 7 : 8, 0);
      const bodies = Array.from({ length: SCALE.slowBodies }, () =>
        partialUpload(port, body, between(random, 10, 90) / 100, {
          chunk: between(random, 1, 16),
          everyMs: between(random, 5, 20),
          forMs: between(random, 200, 1200),
        }),
      );
      // Slowloris: headers trickled a few bytes at a time, then abandoned.
      const head = Buffer.from(
        `GET /bad/quick HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow\r\nAccept: */*\r\nX-Filler: ${'f'.repeat(64)}\r\n`,
      );
      const cuts = Array.from({ length: Math.ceil(SCALE.slowBodies / 2) }, () =>
        between(random, 1, head.length - 1),
      );
      const headers = cuts.map(async (end) => {
        const socket = await connect(port);
        let answered = false;
        socket.on('data', () => (answered = true));
        for (let offset = 0; offset < end; offset += 3) {
          socket.write(head.subarray(offset, Math.min(end, offset + 3)));
          await delay(10);
        }
        socket.destroy();
        await closed(socket);
        return answered;
      });
      // Meanwhile normal requests are answered.
      await delay(50);
      const during = await Promise.all(Array.from({ length: 10 }, () => request(port, '/bad/quick')));
      expect(during.map((reply) => reply.status)).toEqual(Array.from({ length: 10 }, () => 200));

      const answered = await Promise.all([...bodies, ...headers]);
      expect(answered.filter(Boolean)).toEqual([]);
      await until(async () => (await connectionCount(app)) === 0, { message: 'the connections to close' });
      expect(uploads.started).toBe(0);
      await stillServing(port);
    });
  });
});
