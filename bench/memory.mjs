// Memory: does anything stay behind after many requests, half of whose clients hang up while the handler runs?
// Heap used after a forced GC, before and after 200,000 requests, plus the listener counts of the HTTP server and
// of a keep-alive socket that served thousands of requests, and the library's own registries.
//
//   node bench/memory.mjs                            full run, writes bench/results/memory.json
//   MEMORY_REQUESTS=20000 node bench/memory.mjs      smoke run (writes bench/results/memory.tmp.json)
//
// The server is a child process started with --expose-gc: CancellationModule.forRoot() and GET /work, a handler
// that awaits MEMORY_WORK_MS (10 ms) with its signal. The clients (this process) alternate: one request on a
// keep-alive connection that waits for its answer, one on a fresh connection that hangs up after a random delay
// shorter than the handler's work. Statistics come over IPC (no request of their own): after a warm-up, at half
// way and at the end, each time once no request is in flight and after gc().
//
// Environment: MEMORY_REQUESTS (200000 per adapter), MEMORY_WARMUP (10000), MEMORY_CONCURRENCY (64),
// MEMORY_WORK_MS (10), MEMORY_ADAPTERS (express,fastify), MEMORY_VARIANTS (cancellation; add `bare` for plain
// Nest as a baseline), BENCH_OUT (result file).
import http from 'node:http';
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
  libraryUrl,
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
const VARIANTS = { cancellation: 'CancellationModule.forRoot()', bare: 'plain Nest (baseline)' };
const TARGET = { growthMB: 2 };
const MB = 2 ** 20;

// ---------------------------------------------------------------- server (child process)

async function serve(variant, adapter, workMs) {
  if (typeof globalThis.gc !== 'function') throw new Error('run with --expose-gc');
  const { CancellationModule, RequestSignal } = await import(libraryUrl());
  // Internal, not exported: the registry of requests in flight and the tracker of open sockets.
  const { InFlightRegistry } = await import(libraryUrl('registry/in-flight.registry.js'));
  const { ConnectionTracker } = await import(libraryUrl('shutdown/connection-tracker.js'));
  const { Controller, Get, Module, Res } = await import('@nestjs/common');
  const counts = { started: 0, completed: 0, aborted: 0, failed: 0 };

  class WorkController {
    async work(response, signal) {
      counts.started++;
      const raw = response.raw ?? response; // Fastify's reply wraps Node's response
      // A client that means to hang up asks for a sign that its handler runs: a 103 Early Hints, which leaves
      // the response itself untouched (no headers sent).
      if (raw.req.url.endsWith('?hint=1')) raw.writeEarlyHints({ link: '</hint>; rel=preload' });
      try {
        await sleep(workMs, undefined, signal === undefined ? undefined : { signal });
        counts.completed++;
        return 'ok';
      } catch (err) {
        if (signal?.aborted) counts.aborted++;
        else counts.failed++;
        throw err;
      }
    }
  }
  decorateParam(WorkController, 'work', 0, Res({ passthrough: true }));
  if (variant === 'cancellation') {
    decorateParam(WorkController, 'work', 1, RequestSignal());
    decorateMethod(WorkController, 'work', [Get('work')], [Object, AbortSignal]);
  } else {
    decorateMethod(WorkController, 'work', [Get('work')], [Object]);
  }
  decorateClass(WorkController, [Controller()]);
  class AppModule {}
  decorateClass(AppModule, [
    Module({
      imports: variant === 'cancellation' ? [CancellationModule.forRoot()] : [],
      controllers: [WorkController],
    }),
  ]);
  const { app, server, port } = await startNest(AppModule, adapter);
  const registry = variant === 'cancellation' ? app.get(InFlightRegistry) : undefined;
  const tracker = variant === 'cancellation' ? app.get(ConnectionTracker) : undefined;

  // The keep-alive socket that has served the most requests so far: where a per-request listener that is
  // never removed would pile up. One 'request' listener on the server, added once.
  const served = new WeakMap();
  let sample;
  server.on('request', (req) => {
    const socket = req.socket;
    const n = (served.get(socket) ?? 0) + 1;
    served.set(socket, n);
    if (sample === undefined || sample.destroyed || n > served.get(sample)) sample = socket;
  });

  const listenerCounts = (emitter) =>
    emitter === undefined
      ? undefined
      : Object.fromEntries(emitter.eventNames().map((name) => [String(name), emitter.listenerCount(name)]));

  serveRequests({
    /** Requests the server has not finished (handlers running, or responses still open). */
    async busy() {
      const connections = await new Promise((resolve) => server.getConnections((_, n) => resolve(n)));
      return {
        handlersRunning: counts.started - counts.completed - counts.aborted - counts.failed,
        inFlightCount: registry?.size,
        connections,
      };
    },
    async stats() {
      for (let i = 0; i < 4; i++) {
        globalThis.gc();
        await sleep(10); // let finalizers and weak callbacks run
      }
      const memory = process.memoryUsage();
      const cpu = process.cpuUsage();
      const connections = await new Promise((resolve) => server.getConnections((_, n) => resolve(n)));
      return {
        heapUsed: memory.heapUsed,
        heapTotal: memory.heapTotal,
        external: memory.external,
        arrayBuffers: memory.arrayBuffers,
        rss: memory.rss,
        cpuMs: (cpu.user + cpu.system) / 1000,
        counts: { ...counts },
        connections,
        serverListeners: listenerCounts(server),
        sampleSocket:
          sample === undefined || sample.destroyed
            ? undefined
            : { requestsServed: served.get(sample), listeners: listenerCounts(sample) },
        library:
          registry === undefined
            ? undefined
            : {
                inFlightCount: registry.size,
                // Private fields, read for this check only.
                trackedSockets: tracker.sockets?.size,
                admittedOpen: tracker.admittedOpen,
                // The first few requests still registered, if any: what kept them.
                stuck: [...(registry.running ?? [])].slice(0, 5).map((scope) => ({
                  elapsedMs: Math.round(scope.elapsedMs),
                  reason: scope.reason?.kind,
                  url: scope.response.req?.url,
                  destroyed: scope.response.destroyed,
                  writableFinished: scope.response.writableFinished,
                  headersSent: scope.response.headersSent,
                  socketDestroyed: scope.response.socket?.destroyed ?? null,
                  released: scope.released,
                  handlerSettled: scope.handlerSettled,
                })),
              },
      };
    },
  });
  notify({ ready: true, port });
}

// ---------------------------------------------------------------- clients (this process)

/** One GET /work on a keep-alive connection, read to the end. */
function complete(port, agent) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/work', agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
      res.on('error', () => resolve('error'));
    });
    req.on('error', (err) => resolve(err.code ?? 'error'));
  });
}

/**
 * One GET /work on a fresh connection, hung up `delayMs` after the server said (103 Early Hints) that the
 * handler runs: the hang-up lands while the handler awaits its work.
 */
function hangUp(port, delayMs) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let answered = false;
    socket.on('error', () => {});
    socket.once('data', () => setTimeout(() => socket.destroy(), delayMs));
    socket.on('data', (chunk) => (answered ||= chunk.includes('HTTP/1.1 200')));
    socket.once('close', () => resolve(answered ? 'answered before the hang-up' : 'hung up'));
    socket.write('GET /work?hint=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
  });
}

async function drive(server, agent, count, cfg) {
  const outcomes = {};
  const startedAt = performance.now();
  await pool(count, cfg.concurrency, async (index) => {
    const outcome =
      index % 2 === 0
        ? await complete(server.port, agent)
        : await hangUp(server.port, Math.random() * (cfg.workMs - 2));
    outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
  });
  return { outcomes, seconds: (performance.now() - startedAt) / 1000 };
}

/**
 * Waits until the server has no handler running, no request in flight and no connection besides the
 * keep-alive ones of `agent`, twice in a row 100 ms apart.
 */
async function settle(server, agent) {
  const deadline = performance.now() + 30_000;
  const keepAlive = () =>
    [agent.sockets, agent.freeSockets].reduce(
      (n, byHost) => n + Object.values(byHost).reduce((m, list) => m + list.length, 0),
      0,
    );
  let quiet = 0;
  for (;;) {
    const busy = await server.request('busy');
    const idle =
      busy.handlersRunning === 0 && (busy.inFlightCount ?? 0) === 0 && busy.connections === keepAlive();
    quiet = idle ? quiet + 1 : 0;
    if (quiet === 2) return busy;
    if (performance.now() > deadline) throw new Error(`the server did not settle: ${JSON.stringify(busy)}`);
    await sleep(100);
  }
}

async function measure(variant, adapter, cfg, dist) {
  const server = await startChild(SELF, ['--serve', variant, adapter, String(cfg.workMs)], {
    execArgv: [
      '--expose-gc',
      // MEMORY_PROFILE=1: a CPU profile of each server process (all of it, warm-up included).
      ...(process.env.MEMORY_PROFILE === '1'
        ? [
            '--cpu-prof',
            '--cpu-prof-dir',
            RESULTS_DIR,
            '--cpu-prof-name',
            `memory-${variant}-${adapter}.cpuprofile`,
          ]
        : []),
    ],
    env: { BENCH_DIST: dist },
  });
  const agent = new http.Agent({ keepAlive: true, maxSockets: cfg.concurrency });
  try {
    const warmup = await drive(server, agent, cfg.warmup, cfg);
    const clientCpu = process.cpuUsage();
    await settle(server, agent);
    const before = await server.request('stats');
    const half = Math.floor(cfg.requests / 2);
    const first = await drive(server, agent, half, cfg);
    await settle(server, agent);
    const middle = await server.request('stats');
    const second = await drive(server, agent, cfg.requests - half, cfg);
    await settle(server, agent);
    const after = await server.request('stats');
    const clientCpuUsed = process.cpuUsage(clientCpu);
    const handled = {};
    for (const key of Object.keys(after.counts)) handled[key] = after.counts[key] - before.counts[key];
    const outcomes = {};
    for (const run of [first, second])
      for (const [key, n] of Object.entries(run.outcomes)) outcomes[key] = (outcomes[key] ?? 0) + n;
    const sameListeners = (a, b) => JSON.stringify(a) === JSON.stringify(b);
    const result = {
      variant,
      adapter,
      requests: cfg.requests,
      seconds: first.seconds + second.seconds,
      serverCpuMsPerRequest: (after.cpuMs - before.cpuMs) / cfg.requests,
      clientCpuMsPerRequest: (clientCpuUsed.user + clientCpuUsed.system) / 1000 / cfg.requests,
      warmupSeconds: warmup.seconds,
      clientOutcomes: outcomes,
      // Server side, over the measured requests: handlers that ran to the end, were aborted, failed; the rest
      // of the hang-ups left before their handler started.
      handlers: handled,
      heapGrowthMB: (after.heapUsed - before.heapUsed) / MB,
      heapGrowthFirstHalfMB: (middle.heapUsed - before.heapUsed) / MB,
      heapGrowthSecondHalfMB: (after.heapUsed - middle.heapUsed) / MB,
      serverListenersUnchanged: sameListeners(before.serverListeners, after.serverListeners),
      sampleSocketListenersUnchanged:
        before.sampleSocket !== undefined &&
        after.sampleSocket !== undefined &&
        sameListeners(before.sampleSocket.listeners, after.sampleSocket.listeners),
      stats: { before, middle, after },
    };
    result.targetMet =
      result.heapGrowthMB <= TARGET.growthMB &&
      result.serverListenersUnchanged &&
      result.sampleSocketListenersUnchanged &&
      (after.library === undefined ||
        (after.library.inFlightCount === 0 && after.library.trackedSockets === after.connections));
    return result;
  } finally {
    agent.destroy();
    await server.stop();
  }
}

function config() {
  const adapters = envList('MEMORY_ADAPTERS') ?? ADAPTERS;
  for (const adapter of adapters)
    if (!ADAPTERS.includes(adapter)) throw new TypeError(`MEMORY_ADAPTERS: ${adapter}`);
  const variants = envList('MEMORY_VARIANTS') ?? ['cancellation'];
  for (const variant of variants)
    if (!(variant in VARIANTS)) throw new TypeError(`MEMORY_VARIANTS: ${variant}`);
  const cfg = {
    requests: Math.round(envNumber('MEMORY_REQUESTS', 200_000)),
    warmup: Math.round(envNumber('MEMORY_WARMUP', 10_000)),
    concurrency: Math.round(envNumber('MEMORY_CONCURRENCY', 64)),
    workMs: Math.round(envNumber('MEMORY_WORK_MS', 10)),
    adapters,
    variants,
  };
  if (cfg.workMs < 3) throw new TypeError('MEMORY_WORK_MS must be at least 3');
  return cfg;
}

const mb = (bytes) => (bytes / MB).toFixed(2);
const signed = (value) => `${value >= 0 ? '+' : ''}${value.toFixed(2)}`;

export async function memory() {
  const cfg = config();
  const reduced = cfg.requests < 200_000 || cfg.adapters.length < ADAPTERS.length;
  const out = process.env.BENCH_OUT ?? path.join(RESULTS_DIR, reduced ? 'memory.tmp.json' : 'memory.json');
  const dist = await snapshotDist('memory');
  log(
    `memory: ${cfg.requests.toLocaleString('en-US')} requests per adapter (+${cfg.warmup} warm-up), half ` +
      `hanging up, ${cfg.concurrency} at a time, ${cfg.workMs} ms handlers`,
  );
  const results = [];
  for (const variant of cfg.variants) {
    for (const adapter of cfg.adapters) {
      const result = await measure(variant, adapter, cfg, dist);
      results.push(result);
      log(
        `  ${variant} ${adapter}: heap ${signed(result.heapGrowthMB)} MB in ${result.seconds.toFixed(0)} s, ` +
          `handlers ${JSON.stringify(result.handlers)}, CPU per request: server ` +
          `${result.serverCpuMsPerRequest.toFixed(3)} ms, clients ${result.clientCpuMsPerRequest.toFixed(3)} ms`,
      );
    }
  }
  writeResults(out, {
    suite: 'memory',
    description:
      'Heap used after forced GC before and after N requests (half the clients hang up while the handler ' +
      'awaits), listener counts of the HTTP server and of a busy keep-alive socket, and the registries of ' +
      'CancellationModule (requests in flight, tracked sockets).',
    target: TARGET,
    config: cfg,
    machine: machineInfo(),
    library: libraryInfo(),
    results,
  });
  const table = markdownTable(
    [
      'variant',
      'adapter',
      'requests (handlers aborted mid-work)',
      'heap before (MB)',
      'heap after (MB)',
      'growth (MB)',
      'listeners: server / keep-alive socket',
      'in flight / tracked sockets after',
      `target ≤ ${TARGET.growthMB} MB, no listener growth`,
    ],
    results.map((r) => [
      VARIANTS[r.variant],
      r.adapter,
      `${r.requests.toLocaleString('en-US')} (${r.handlers.aborted.toLocaleString('en-US')})`,
      mb(r.stats.before.heapUsed),
      mb(r.stats.after.heapUsed),
      signed(r.heapGrowthMB),
      `${r.serverListenersUnchanged ? 'unchanged' : '**changed**'} / ` +
        `${r.sampleSocketListenersUnchanged ? 'unchanged' : '**changed**'}`,
      r.stats.after.library === undefined
        ? '–'
        : `${r.stats.after.library.inFlightCount} / ${r.stats.after.library.trackedSockets} ` +
          `(of ${r.stats.after.connections} open)`,
      r.targetMet ? 'met' : '**missed**',
    ]),
    ['l', 'l', 'r', 'r', 'r', 'r', 'l', 'l', 'l'],
  );
  console.log(table);
  log(`wrote ${path.relative(process.cwd(), out)}`);
  return results;
}

runSuite(import.meta, {
  serve: (variant, adapter, workMs) => serve(variant, adapter, Number(workMs)),
  main: memory,
});
