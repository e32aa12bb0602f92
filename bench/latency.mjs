// Disconnect -> abort latency: how long after the server sees a client's connection close does the request's
// AbortSignal fire? 1,000 requests whose clients hang up while their handler awaits, on Express and Fastify.
//
//   node bench/latency.mjs                       full run, writes bench/results/latency.json
//   LATENCY_REQUESTS=100 node bench/latency.mjs  smoke run (writes bench/results/latency.tmp.json)
//
// The server (a child process: the clients must not share its event loop) runs CancellationModule.forRoot() and
// GET /hang/:id, a handler that awaits a 30 s timer with its signal. A `server.on('connection')` listener stamps
// each socket's 'end' (the client's FIN read) and 'close' with performance.now(); the handler stamps its
// signal's 'abort' event and the moment its await settles. The client (this process) opens a raw TCP connection,
// sends the request, waits until the server says the handler runs, and destroys the socket.
//
// Environment: LATENCY_REQUESTS (1000 measured per adapter), LATENCY_WARMUP (200, not measured),
// LATENCY_CONCURRENCY (50 clients at a time), LATENCY_ADAPTERS (express,fastify), LATENCY_HANGUP (fin: a
// normal close; rst: a reset), BENCH_OUT (result file).
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { decorateClass, decorateMethod, decorateParam } from './lib/decorate.mjs';
import {
  RESULTS_DIR,
  envList,
  envNumber,
  libraryInfo,
  log,
  machineInfo,
  markdownTable,
  writeResults,
} from './lib/harness.mjs';
import {
  distribution,
  libraryUrl,
  ms,
  notify,
  pool,
  runSuite,
  serveRequests,
  snapshotDist,
  startChild,
  startNest,
} from './support/common.mjs';

const SELF = fileURLToPath(import.meta.url);
const ADAPTERS = ['express', 'fastify'];
const TARGET_P99_MS = 2;
/** How long a handler would run if nobody cancelled it. */
const HANG_MS = 30_000;

// ---------------------------------------------------------------- server (child process)

async function serve(adapter) {
  const { CancellationModule, RequestSignal } = await import(libraryUrl());
  const { Controller, Get, Module, Param, Req } = await import('@nestjs/common');
  const ENDED_AT = Symbol('endedAt');
  const CLOSED_AT = Symbol('closedAt');
  let records = [];

  class HangController {
    async hang(id, request, signal) {
      const raw = request.raw ?? request; // Fastify's request wraps Node's
      const record = { id: Number(id), socket: raw.socket, startedAt: performance.now() };
      records.push(record);
      signal.addEventListener(
        'abort',
        () => {
          record.abortAt = performance.now();
          record.kind = signal.reason?.kind;
        },
        { once: true },
      );
      notify({ started: record.id });
      try {
        await sleep(HANG_MS, undefined, { signal });
        return 'nobody hung up';
      } finally {
        record.settledAt = performance.now();
      }
    }
  }
  decorateParam(HangController, 'hang', 0, Param('id'));
  decorateParam(HangController, 'hang', 1, Req());
  decorateParam(HangController, 'hang', 2, RequestSignal());
  decorateMethod(HangController, 'hang', [Get('hang/:id')], [String, Object, AbortSignal]);
  decorateClass(HangController, [Controller()]);
  class AppModule {}
  decorateClass(AppModule, [
    Module({ imports: [CancellationModule.forRoot()], controllers: [HangController] }),
  ]);

  const { app, server, port } = await startNest(AppModule, adapter);
  // Added after the library's own 'connection' listener and before the response exists, so these 'close'
  // listeners run before the response's: the stamp is when Node reports the socket closed.
  server.on('connection', (socket) => {
    socket.once('end', () => (socket[ENDED_AT] = performance.now()));
    socket.once('close', () => (socket[CLOSED_AT] = performance.now()));
  });

  serveRequests({
    /** Every record so far (waiting up to 2 s for the aborts still to come), then forgets them. */
    async results() {
      const deadline = performance.now() + 2000;
      while (
        records.some((r) => r.settledAt === undefined || r.socket[CLOSED_AT] === undefined) &&
        performance.now() < deadline
      ) {
        await sleep(10);
      }
      const out = records.map(({ socket, ...record }) => ({
        ...record,
        endedAt: socket[ENDED_AT],
        closedAt: socket[CLOSED_AT],
      }));
      records = [];
      return out;
    },
    async exit() {
      await app.close();
      process.exit(0);
    },
  });
  notify({ ready: true, port });
}

// ---------------------------------------------------------------- clients (this process)

/**
 * `count` clients, `concurrency` at a time: each connects, sends GET /hang/<id>, waits until the handler runs
 * and hangs up. Returns how many the server never reported (their handler did not start within 5 s).
 */
async function hangUps(server, { count, concurrency, hangup, firstId }) {
  const waiting = new Map();
  const onMessage = (message) => {
    const id = message?.event?.started;
    if (id !== undefined) waiting.get(id)?.();
  };
  server.child.on('message', onMessage);
  let lost = 0;
  await pool(count, concurrency, async (index) => {
    const id = firstId + index;
    const socket = net.connect(server.port, '127.0.0.1');
    socket.on('error', () => {});
    const closed = new Promise((resolve) => socket.once('close', resolve));
    const started = new Promise((resolve) => waiting.set(id, resolve));
    socket.write(`GET /hang/${id} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
    const ok = await Promise.race([started.then(() => true), sleep(5000).then(() => false)]);
    waiting.delete(id);
    if (!ok) lost++;
    if (hangup === 'rst') socket.resetAndDestroy();
    else socket.destroy();
    await closed;
  });
  server.child.off('message', onMessage);
  return lost;
}

function config() {
  const adapters = envList('LATENCY_ADAPTERS') ?? ADAPTERS;
  for (const adapter of adapters)
    if (!ADAPTERS.includes(adapter)) throw new TypeError(`LATENCY_ADAPTERS: ${adapter}`);
  const hangup = process.env.LATENCY_HANGUP ?? 'fin';
  if (hangup !== 'fin' && hangup !== 'rst') throw new TypeError(`LATENCY_HANGUP: fin or rst, got ${hangup}`);
  return {
    requests: Math.round(envNumber('LATENCY_REQUESTS', 1000)),
    warmup: Math.round(envNumber('LATENCY_WARMUP', 200)),
    concurrency: Math.round(envNumber('LATENCY_CONCURRENCY', 50)),
    adapters,
    hangup,
  };
}

async function measure(adapter, cfg, dist) {
  const server = await startChild(SELF, ['--serve', adapter], { env: { BENCH_DIST: dist } });
  try {
    await hangUps(server, { ...cfg, count: cfg.warmup, firstId: 1_000_000 });
    await server.request('results');
    const lost = await hangUps(server, { ...cfg, count: cfg.requests, firstId: 0 });
    const records = await server.request('results');
    const aborted = records.filter((r) => r.abortAt !== undefined && r.closedAt !== undefined);
    const kinds = {};
    for (const r of records) kinds[r.kind ?? 'none'] = (kinds[r.kind ?? 'none'] ?? 0) + 1;
    return {
      adapter,
      requests: cfg.requests,
      handlersStarted: records.length,
      handlersAborted: aborted.length,
      neverStarted: lost,
      reasonKinds: kinds,
      // The measured figure: socket 'close' -> signal 'abort'.
      closeToAbortMs: distribution(aborted.map((r) => r.abortAt - r.closedAt)),
      // The client's FIN read by the server -> signal 'abort' (fin only: a reset emits no 'end').
      endToAbortMs: distribution(
        aborted.filter((r) => r.endedAt !== undefined).map((r) => r.abortAt - r.endedAt),
      ),
      // Signal 'abort' -> the handler's `await` rejected (the work has stopped).
      abortToSettledMs: distribution(
        aborted.filter((r) => r.settledAt !== undefined).map((r) => r.settledAt - r.abortAt),
      ),
    };
  } finally {
    await server.stop();
  }
}

export async function latency() {
  const cfg = config();
  const reduced = cfg.requests < 1000 || cfg.hangup !== 'fin' || cfg.adapters.length < ADAPTERS.length;
  const out = process.env.BENCH_OUT ?? path.join(RESULTS_DIR, reduced ? 'latency.tmp.json' : 'latency.json');
  const dist = await snapshotDist('latency');
  log(
    `latency: ${cfg.requests} hang-ups (+${cfg.warmup} warm-up) per adapter, ${cfg.concurrency} at a time, ` +
      `${cfg.hangup === 'rst' ? 'reset' : 'FIN'}`,
  );
  const results = [];
  for (const adapter of cfg.adapters) {
    const result = await measure(adapter, cfg, dist);
    const d = result.closeToAbortMs;
    result.targetMet = d.n === cfg.requests && d.p99 <= TARGET_P99_MS;
    results.push(result);
    log(`  ${adapter}: p50 ${ms(d.p50)} ms, p99 ${ms(d.p99)} ms, max ${ms(d.max)} ms (n=${d.n})`);
  }
  writeResults(out, {
    suite: 'latency',
    description:
      "Time from the server-side socket 'close' event to the request signal's 'abort' event, for clients " +
      'that hang up while their handler awaits (CancellationModule.forRoot(), one fresh connection each).',
    target: { p99Ms: TARGET_P99_MS },
    config: cfg,
    machine: machineInfo(),
    library: libraryInfo(),
    results,
  });
  const table = markdownTable(
    [
      'adapter',
      'aborted / requests',
      'close → abort p50 (ms)',
      'p90',
      'p99',
      'max',
      'FIN read → abort p99',
      'abort → handler settled p99',
      `target p99 ≤ ${TARGET_P99_MS} ms`,
    ],
    results.map((r) => [
      r.adapter,
      `${r.handlersAborted} / ${r.requests}`,
      ms(r.closeToAbortMs.p50),
      ms(r.closeToAbortMs.p90),
      ms(r.closeToAbortMs.p99),
      ms(r.closeToAbortMs.max),
      ms(r.endToAbortMs.p99),
      ms(r.abortToSettledMs.p99),
      r.targetMet ? 'met' : '**missed**',
    ]),
    ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l'],
  );
  console.log(table);
  log(`wrote ${path.relative(process.cwd(), out)}`);
  return results;
}

runSuite(import.meta, { serve, main: latency });
