// Shutdown with long requests in flight: how long `app.close()` takes and what the clients get, for
// CancellationModule (every request answered 503 at once), plain Nest (close() waits for the work) and plain
// Nest with `forceCloseConnections: true` (close() destroys the connections: the clients get no response), and
// as the floor for CancellationModule, plain Nest whose handlers all throw a 503 when a shutdown hook says so
// (what answering N requests costs in Nest itself, without the library).
//
//   node bench/shutdown.mjs                          full run, writes bench/results/shutdown.json
//   SHUTDOWN_ROUNDS=1 SHUTDOWN_COUNTS=10,100 ...     smoke run (writes bench/results/shutdown.tmp.json)
//
// Each measurement is a fresh server process (the clients run here, in the parent). It is warmed up first with
// SHUTDOWN_WARMUP (500) requests to GET /warm, a 503 through Nest's exception path, and for CancellationModule
// as many clients hanging up on GET /long, so that close() runs optimized code, as in a process that has
// answered errors before (SHUTDOWN_WARMUP=0: the shutdown's 503s are the process's first error responses, and
// take longer). Then N clients send GET /long on their own connection; once the server reports all N handlers
// running, it calls `app.close()` and reports how long it took to resolve (and its phases: lifecycle hooks,
// then the HTTP server's close); the parent records every client's outcome (status, or error code) and when it
// arrived. Handlers: CancellationModule and forceCloseConnections await a 30 s timer (with the request's signal
// for CancellationModule); plain Nest awaits SHUTDOWN_PLAIN_WORK_MS (3 s) so that a run ends: its close() time
// is whatever remained of that work, and would be as long as the longest request in a real application.
//
// Environment: SHUTDOWN_COUNTS (10,100,1000), SHUTDOWN_ROUNDS (3, plain Nest runs once; the median is reported),
// SHUTDOWN_VARIANTS (cancellation,plain,force-close,hand-503; also raw-503, a sketch of a faster design: the
// hook writes a canned 503 on each open response, skipping exception filters), SHUTDOWN_ADAPTERS (express,fastify),
// SHUTDOWN_PLAIN_WORK_MS (3000), SHUTDOWN_WARMUP (500), BENCH_OUT (result file); on a shared machine, before each measurement wait at
// most BENCH_QUIET_WAIT s (3; 0 = off) until other processes use under BENCH_QUIET_CORES cores (0.3).
// SHUTDOWN_PROFILE=1 writes a CPU profile of each server's close() (see startProfiler).
import { writeFileSync } from 'node:fs';
import http from 'node:http';
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
  median,
  waitForQuiet,
  writeResults,
} from './lib/harness.mjs';
import {
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
const VARIANTS = {
  cancellation: 'CancellationModule.forRoot()',
  plain: 'plain Nest',
  'force-close': 'plain Nest, forceCloseConnections: true',
  'hand-503': 'floor: plain Nest, a shutdown hook makes every handler throw a 503',
  'raw-503': 'plain Nest, a shutdown hook writes a 503 on every open response itself (no exception filter)',
};
/** Run unless SHUTDOWN_VARIANTS names them: `raw-503` is the sketch of a faster design, not a competitor. */
const DEFAULT_VARIANTS = ['cancellation', 'plain', 'force-close', 'hand-503'];
const TARGET = { count: 1000, closeMs: 250 };
const LONG_MS = 30_000;

/** Wall-clock milliseconds, comparable between the two processes. */
const wallNow = () => performance.timeOrigin + performance.now();

// ---------------------------------------------------------------- server (child process)

async function serve(variant, adapter, expected, plainWorkMs) {
  const { CancellationModule, RequestSignal } = await import(libraryUrl());
  const { Controller, Get, Injectable, Module, Res, ServiceUnavailableException } =
    await import('@nestjs/common');
  let counts = { started: 0, completed: 0, aborted: 0, failed: 0 };
  const started = () => {
    if (++counts.started === expected) notify({ allStarted: true });
  };

  // hand-503: what answering every request in flight with a 503 costs in Nest without the library, the floor
  // for CancellationModule: every handler awaits one shared promise, which a shutdown hook resolves (no
  // per-request listener, no timer, no AbortSignal).
  let shuttingDown;
  const shutdown = new Promise((resolve) => (shuttingDown = resolve));
  // raw-503: the hook answers every open response itself, bypassing Nest's exception path.
  const open = new Set();
  const body = JSON.stringify({
    message: 'The application is shutting down',
    error: 'Service Unavailable',
    statusCode: 503,
  });
  class ShutdownHook {
    beforeApplicationShutdown() {
      shuttingDown();
      for (const raw of open) {
        raw.writeHead(503, {
          'Content-Type': 'application/json; charset=utf-8',
          'Content-Length': Buffer.byteLength(body),
          'Retry-After': '1',
          Connection: 'close',
        });
        raw.end(body);
        counts.aborted++;
      }
      open.clear();
    }
  }
  decorateClass(ShutdownHook, [Injectable()]);

  class LongController {
    async long(signal) {
      started();
      try {
        if (signal === undefined) await sleep(variant === 'plain' ? plainWorkMs : LONG_MS);
        else await sleep(LONG_MS, undefined, { signal });
        counts.completed++;
        return 'done';
      } catch (err) {
        if (signal?.aborted) counts.aborted++;
        else counts.failed++;
        throw err;
      }
    }

    /** Warm-up: Nest's exception path and the platform's error response, as every 503 at shutdown takes. */
    warm() {
      throw new ServiceUnavailableException('warm-up');
    }

    async handRolled(response) {
      started();
      if (variant === 'raw-503') {
        open.add(response.raw ?? response);
        return new Promise(() => {}); // answered by the hook; the process exits after the measurement
      }
      await shutdown;
      counts.aborted++;
      const raw = response.raw ?? response;
      raw.setHeader('Retry-After', '1');
      raw.setHeader('Connection', 'close');
      throw new ServiceUnavailableException('The application is shutting down');
    }
  }
  if (variant === 'cancellation') {
    decorateParam(LongController, 'long', 0, RequestSignal());
    decorateMethod(LongController, 'long', [Get('long')], [AbortSignal]);
  } else if (variant === 'hand-503' || variant === 'raw-503') {
    decorateParam(LongController, 'handRolled', 0, Res({ passthrough: true }));
    decorateMethod(LongController, 'handRolled', [Get('long')], [Object]);
  } else {
    decorateMethod(LongController, 'long', [Get('long')]);
  }
  decorateMethod(LongController, 'warm', [Get('warm')]);
  decorateClass(LongController, [Controller()]);
  class AppModule {}
  decorateClass(AppModule, [
    Module({
      imports: variant === 'cancellation' ? [CancellationModule.forRoot()] : [],
      controllers: [LongController],
      providers: variant === 'hand-503' || variant === 'raw-503' ? [ShutdownHook] : [],
    }),
  ]);
  const { app, server, port } = await startNest(
    AppModule,
    adapter,
    variant === 'force-close' ? { forceCloseConnections: true } : {},
  );
  // Phases of close(): the lifecycle hooks (where CancellationModule cancels), then the HTTP server's close(),
  // which resolves once every connection has closed.
  const phases = {};
  const serverClose = server.close;
  server.close = function (...args) {
    phases.serverCloseCalledAt ??= performance.now();
    return serverClose.apply(this, args);
  };
  server.once('close', () => (phases.serverClosedAt = performance.now()));

  serveRequests({
    /** Open connections and handlers still running (the warm-up must be over before the measurement). */
    async busy() {
      const connections = await new Promise((resolve) => server.getConnections((_, n) => resolve(n)));
      return { connections, running: counts.started - counts.completed - counts.aborted - counts.failed };
    },
    /** After the warm-up: count the measured requests only. */
    reset() {
      counts = { started: 0, completed: 0, aborted: 0, failed: 0 };
    },
    async close() {
      const profiler = process.env.SHUTDOWN_PROFILE === '1' ? await startProfiler() : undefined;
      const startedAt = performance.now();
      const wallStartedAt = wallNow();
      const cpuBefore = process.cpuUsage();
      await app.close();
      const closeMs = performance.now() - startedAt;
      const cpu = process.cpuUsage(cpuBefore);
      await profiler?.stop(
        path.join(RESULTS_DIR, `shutdown-${variant}-${adapter}-${expected}.cpuprofile`),
        expected,
      );
      // Let handlers that were aborted finish counting (their rejection runs after the response was written).
      await sleep(50);
      return {
        closeMs,
        // The server's CPU time during close(): steadier than wall time when other processes compete.
        closeCpuMs: (cpu.user + cpu.system) / 1000,
        wallStartedAt,
        counts: { ...counts },
        phases: {
          hooksMs: phases.serverCloseCalledAt - startedAt,
          serverCloseMs: phases.serverClosedAt - phases.serverCloseCalledAt,
        },
      };
    },
  });
  notify({ ready: true, port });
}

/**
 * SHUTDOWN_PROFILE=1: a CPU profile of the server during close() only (node:inspector), written to
 * bench/results/shutdown-<variant>-<adapter>-<count>.cpuprofile; read it with bench/cpuprofile-top.mjs.
 */
async function startProfiler() {
  const { Session } = await import('node:inspector/promises');
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 100 });
  await session.post('Profiler.start');
  return {
    async stop(file, requests) {
      const { profile } = await session.post('Profiler.stop');
      session.disconnect();
      // bench/cpuprofile-top.mjs reads the request count here, for per-request figures and --vs.
      writeFileSync(file, JSON.stringify({ ...profile, benchMeta: { requests } }));
      log(`wrote ${path.relative(process.cwd(), file)}`);
    },
  };
}

// ---------------------------------------------------------------- clients (this process)

/** One GET /long on its own connection: resolves with `{ status, retryAfter, connection, at }` or `{ error, at }`. */
function longRequest(port, agent) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/long', agent }, (res) => {
      res.resume();
      res.on('end', () =>
        resolve({
          status: res.statusCode,
          retryAfter: res.headers['retry-after'],
          connection: res.headers.connection,
          at: wallNow(),
        }),
      );
      res.on('error', (err) =>
        resolve({ error: err.code ?? err.message, status: res.statusCode, at: wallNow() }),
      );
    });
    req.on('error', (err) => resolve({ error: err.code ?? err.message, at: wallNow() }));
    req.setTimeout(LONG_MS + 10_000, () => req.destroy(new Error('client timeout')));
  });
}

/**
 * Runs the code shutdown will run, so that it is measured optimized rather than on its first calls: `count`
 * requests to GET /warm (a 503 through Nest's exception path), and for CancellationModule as many clients
 * hanging up on GET /long (the cancellation path: abort, outcome, exception filter).
 */
async function warmUp(server, variant, count) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 20 });
  const warm = () =>
    new Promise((resolve) => {
      http
        .get({ host: '127.0.0.1', port: server.port, path: '/warm', agent }, (res) => {
          res.resume();
          res.on('end', resolve);
        })
        .on('error', resolve);
    });
  const hangUp = () =>
    new Promise((resolve) => {
      const req = http.get({ host: '127.0.0.1', port: server.port, path: '/long', agent: false });
      req.on('error', () => {});
      req.on('close', resolve);
      setTimeout(() => req.destroy(), 5);
    });
  await pool(count, 20, warm);
  if (variant === 'cancellation') await pool(count, 20, hangUp);
  agent.destroy();
  // Wait until the server has closed every warm-up connection and ended every warm-up handler.
  for (let i = 0; i < 100; i++) {
    const busy = await server.request('busy');
    if (busy.connections === 0 && busy.running === 0) return;
    await sleep(50);
  }
  throw new Error('the warm-up did not end');
}

async function measureOnce(variant, adapter, count, cfg, dist) {
  // The machine is shared: wait (a while) until other processes leave the cores alone.
  const busyCoresBefore = cfg.quiet ? await waitForQuiet(cfg.quiet) : undefined;
  const server = await startChild(
    SELF,
    ['--serve', variant, adapter, String(count), String(cfg.plainWorkMs)],
    {
      env: { BENCH_DIST: dist },
    },
  );
  const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
  try {
    if (cfg.warmup > 0) await warmUp(server, variant, cfg.warmup);
    await server.request('reset');
    const allStarted = server.waitFor((event) => event.allStarted === true, 60_000);
    const openedAt = performance.now();
    const clients = Array.from({ length: count }, () => longRequest(server.port, agent));
    await allStarted;
    const rampMs = performance.now() - openedAt;
    const { closeMs, closeCpuMs, wallStartedAt, counts, phases } = await server.request('close');
    const outcomes = await Promise.all(clients);
    const byOutcome = {};
    for (const o of outcomes) {
      const key = o.error ?? String(o.status);
      byOutcome[key] = (byOutcome[key] ?? 0) + 1;
    }
    const answered503 = outcomes.filter(
      (o) => o.status === 503 && o.error === undefined && o.retryAfter !== undefined,
    ).length;
    return {
      closeMs,
      closeCpuMs,
      // When the last client had its answer (or its error), from the moment app.close() was called.
      lastClientMs: Math.max(...outcomes.map((o) => o.at)) - wallStartedAt,
      rampMs,
      outcomes: byOutcome,
      answered503,
      handlers: counts,
      phases,
      busyCoresBefore,
    };
  } finally {
    agent.destroy();
    await server.stop();
  }
}

function config() {
  const adapters = envList('SHUTDOWN_ADAPTERS') ?? ADAPTERS;
  for (const adapter of adapters)
    if (!ADAPTERS.includes(adapter)) throw new TypeError(`SHUTDOWN_ADAPTERS: ${adapter}`);
  const variants = envList('SHUTDOWN_VARIANTS') ?? DEFAULT_VARIANTS;
  for (const variant of variants)
    if (!(variant in VARIANTS)) throw new TypeError(`SHUTDOWN_VARIANTS: ${variant}`);
  const counts = (envList('SHUTDOWN_COUNTS') ?? ['10', '100', '1000']).map(Number);
  for (const count of counts)
    if (!Number.isInteger(count) || count <= 0) throw new TypeError(`SHUTDOWN_COUNTS: ${count}`);
  return {
    counts,
    rounds: Math.round(envNumber('SHUTDOWN_ROUNDS', 3)),
    variants,
    adapters,
    plainWorkMs: Math.round(envNumber('SHUTDOWN_PLAIN_WORK_MS', 3000)),
    warmup: process.env.SHUTDOWN_WARMUP === '0' ? 0 : Math.round(envNumber('SHUTDOWN_WARMUP', 500)),
    quiet:
      process.env.BENCH_QUIET_WAIT === '0'
        ? false
        : {
            threshold: envNumber('BENCH_QUIET_CORES', 0.3),
            maxWaitMs: envNumber('BENCH_QUIET_WAIT', 3) * 1000,
          },
  };
}

function cell(result) {
  if (result === undefined) return '–';
  const outcomes = Object.entries(result.outcomes)
    .sort((a, b) => b[1] - a[1])
    .map(([key, n]) => `${n}× ${key}`)
    .join(', ');
  return `${ms(result.closeMs, 0)} ms (${outcomes})`;
}

export async function shutdown() {
  const cfg = config();
  const reduced =
    cfg.rounds < 3 ||
    !cfg.counts.includes(TARGET.count) ||
    DEFAULT_VARIANTS.some((v) => !cfg.variants.includes(v)) ||
    cfg.adapters.length < ADAPTERS.length;
  const out =
    process.env.BENCH_OUT ?? path.join(RESULTS_DIR, reduced ? 'shutdown.tmp.json' : 'shutdown.json');
  const dist = await snapshotDist('shutdown');
  log(
    `shutdown: ${cfg.counts.join('/')} requests in flight, ${cfg.rounds} round(s), ` +
      `${cfg.variants.join(', ')} on ${cfg.adapters.join(', ')}`,
  );
  const runs = [];
  for (let round = 0; round < cfg.rounds; round++) {
    for (const adapter of cfg.adapters) {
      for (const count of cfg.counts) {
        for (const variant of cfg.variants) {
          // Plain Nest's close() time is whatever remains of its handlers' work: one round says it.
          if (variant === 'plain' && round > 0) continue;
          const result = await measureOnce(variant, adapter, count, cfg, dist);
          runs.push({ round, adapter, count, variant, ...result });
          log(
            `  round ${round + 1} ${adapter} ${count} ${variant}: close ${ms(result.closeMs, 1)} ms ` +
              `(cpu ${ms(result.closeCpuMs, 1)} ms), ` +
              `(hooks ${ms(result.phases.hooksMs, 1)}, server.close ${ms(result.phases.serverCloseMs, 1)}), ` +
              `last client ${ms(result.lastClientMs, 1)} ms, ${JSON.stringify(result.outcomes)}`,
          );
        }
      }
    }
  }
  // Median of the rounds per (adapter, count, variant); outcomes of every round added up.
  const summary = [];
  for (const adapter of cfg.adapters) {
    for (const count of cfg.counts) {
      for (const variant of cfg.variants) {
        const mine = runs.filter((r) => r.adapter === adapter && r.count === count && r.variant === variant);
        const outcomes = {};
        for (const r of mine)
          for (const [key, n] of Object.entries(r.outcomes)) outcomes[key] = (outcomes[key] ?? 0) + n;
        const entry = {
          adapter,
          count,
          variant,
          rounds: mine.length,
          closeMs: median(mine.map((r) => r.closeMs)),
          closeMsMax: Math.max(...mine.map((r) => r.closeMs)),
          closeCpuMs: median(mine.map((r) => r.closeCpuMs)),
          lastClientMs: median(mine.map((r) => r.lastClientMs)),
          outcomes,
          everyClient503: mine.every((r) => r.answered503 === count),
        };
        if (variant === 'cancellation' && count === TARGET.count) {
          entry.targetMet = entry.closeMs <= TARGET.closeMs && entry.everyClient503;
        }
        summary.push(entry);
      }
    }
  }
  writeResults(out, {
    suite: 'shutdown',
    description:
      'Time from app.close() to resolved with N long requests in flight, and what the clients got. ' +
      `Plain Nest handlers do ${cfg.plainWorkMs} ms of work (close() waits for it); the others await 30 s.`,
    target: TARGET,
    config: cfg,
    machine: machineInfo(),
    library: libraryInfo(),
    summary,
    runs,
  });
  const find = (adapter, count, variant) =>
    summary.find((s) => s.adapter === adapter && s.count === count && s.variant === variant);
  const header = ['adapter', 'in flight', ...cfg.variants.map((v) => VARIANTS[v])];
  if (cfg.variants.includes('cancellation')) header.push(`target ≤ ${TARGET.closeMs} ms, all 503`);
  const rows = [];
  for (const adapter of cfg.adapters) {
    for (const count of cfg.counts) {
      const row = [
        adapter,
        count.toLocaleString('en-US'),
        ...cfg.variants.map((v) => cell(find(adapter, count, v))),
      ];
      if (cfg.variants.includes('cancellation')) {
        const ours = find(adapter, count, 'cancellation');
        row.push(
          count !== TARGET.count
            ? ours.everyClient503
              ? 'all 503'
              : '**not all 503**'
            : ours.targetMet
              ? 'met'
              : '**missed**',
        );
      }
      rows.push(row);
    }
  }
  console.log(markdownTable(header, rows));
  log(
    `(median of ${cfg.rounds} round(s); outcomes added over the rounds) wrote ${path.relative(process.cwd(), out)}`,
  );
  return summary;
}

runSuite(import.meta, {
  serve: (variant, adapter, count, plainWorkMs) =>
    serve(variant, adapter, Number(count), Number(plainWorkMs)),
  main: shutdown,
});
