// Overhead suite: what CancellationModule costs per request, next to bare Nest, an empty global interceptor and
// the ways people get a per-request signal today. Every variant is its own server process; the load generator
// (autocannon) runs here. Variants are interleaved round-robin over several rounds and the medians compared, so
// that drift on a shared, noisy machine hits every variant alike: read the ratios, not the absolute req/s.
//
//   node bench/run.mjs overhead          full run (8 rounds x 2 s per route), writes bench/results/overhead.json
//   BENCH_ROUNDS=1 BENCH_DURATION=1 ...  smoke run (writes bench/results/overhead.tmp.json)
//   BENCH_PROFILE=1 ...                  one CPU-profiled run of one server instead (see profile() below)
//
// Environment: BENCH_ROUNDS (8), BENCH_DURATION (2 s measured per route and round), BENCH_WARMUP (2 s per
// route, once per server process), BENCH_RESTART (1: a fresh server process every round, no head-to-head
// runs), BENCH_HEAD_TO_HEAD (0: skip the simultaneous runs of CancellationModule against its baselines),
// BENCH_SUBJECT (the variant judged and run head to head: cancellation), BENCH_CONNECTIONS (50), BENCH_PIPELINING (1), BENCH_VARIANTS (comma list, see lib/overhead-variants.mjs),
// BENCH_ADAPTERS (express,fastify), BENCH_ROUTES (hello,io), BENCH_OUT (result file); on a shared machine
// BENCH_QUIET_CORES (0.3), BENCH_QUIET_WAIT (10 s; 0 = off), BENCH_RETRIES (2), BENCH_IO_MS (1: how long GET /io
// waits). Profile mode: see profile().
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { summarize } from './cpuprofile-top.mjs';
import {
  BENCH_DIR,
  RESULTS_DIR,
  envList,
  envNumber,
  formatInt,
  formatRatio,
  load,
  log,
  machineBusyMicros,
  libraryInfo,
  machineInfo,
  markdownTable,
  median,
  snapshotDist,
  startServer,
  verify,
  waitForQuiet,
  writeResults,
} from './lib/harness.mjs';
import { HELLO, IO, VARIANTS } from './lib/overhead-variants.mjs';

const SERVER = path.join(BENCH_DIR, 'servers', 'overhead-server.mjs');
const ROUTES = { hello: { path: '/hello', body: HELLO }, io: { path: '/io', body: IO } };
const ADAPTERS = ['express', 'fastify'];

/**
 * The targets of issue 5: ours against the empty interceptor, and on the I/O route against bare Nest; with the
 * variant `cancellation-base`, this build against that one.
 */
const TARGETS = [
  { id: 'ours/empty', route: 'hello', baseline: 'empty-interceptor', min: 0.97 },
  { id: 'ours/empty', route: 'io', baseline: 'empty-interceptor', min: 0.97 },
  { id: 'ours/bare', route: 'io', baseline: 'bare-nest', min: 0.98 },
  // With the variant `cancellation-base` (another build): this build against it, not worse.
  { id: 'ours/before', route: 'hello', baseline: 'cancellation-base', min: 1.0 },
  { id: 'ours/before', route: 'io', baseline: 'cancellation-base', min: 1.0 },
];

function config() {
  const variants =
    envList('BENCH_VARIANTS') ?? Object.keys(VARIANTS).filter((name) => VARIANTS[name].default);
  for (const name of variants) {
    if (!(name in VARIANTS)) throw new TypeError(`BENCH_VARIANTS: unknown variant ${name}`);
  }
  // The ratios need their baselines.
  for (const needed of ['bare-nest', 'empty-interceptor'])
    if (!variants.includes(needed)) variants.push(needed);
  const adapters = envList('BENCH_ADAPTERS') ?? ADAPTERS;
  const routes = envList('BENCH_ROUTES') ?? Object.keys(ROUTES);
  for (const adapter of adapters)
    if (!ADAPTERS.includes(adapter)) throw new TypeError(`BENCH_ADAPTERS: ${adapter}`);
  for (const route of routes) if (!(route in ROUTES)) throw new TypeError(`BENCH_ROUTES: ${route}`);
  const cfg = {
    rounds: Math.round(envNumber('BENCH_ROUNDS', 8)),
    duration: envNumber('BENCH_DURATION', 2),
    warmup: envNumber('BENCH_WARMUP', 2),
    restart: process.env.BENCH_RESTART === '1',
    // Each round also loads CancellationModule and each target's baseline at the same time (BENCH_HEAD_TO_HEAD=0: off).
    headToHead: process.env.BENCH_HEAD_TO_HEAD !== '0',
    // The variant judged against the targets and loaded head to head with the baselines (BENCH_SUBJECT).
    subject: process.env.BENCH_SUBJECT || 'cancellation',
    connections: Math.round(envNumber('BENCH_CONNECTIONS', 50)),
    pipelining: Math.round(envNumber('BENCH_PIPELINING', 1)),
    ioMs: envNumber('BENCH_IO_MS', 1),
    // The machine is shared: before each measurement, wait (at most BENCH_QUIET_WAIT s) until other processes
    // use under BENCH_QUIET_CORES cores, and measure again (at most BENCH_RETRIES times) when they took more
    // during the run. BENCH_QUIET_WAIT=0 disables both.
    quiet:
      process.env.BENCH_QUIET_WAIT === '0'
        ? false
        : {
            threshold: envNumber('BENCH_QUIET_CORES', 0.3),
            maxWaitMs: envNumber('BENCH_QUIET_WAIT', 10) * 1000,
            retries: process.env.BENCH_RETRIES === '0' ? 0 : Math.round(envNumber('BENCH_RETRIES', 2)),
          },
    variants: Object.keys(VARIANTS).filter((name) => variants.includes(name)),
    adapters,
    routes,
  };
  // A reduced run must not overwrite the full figures.
  const full =
    cfg.rounds >= 5 &&
    cfg.duration >= 2 &&
    cfg.ioMs === 1 &&
    cfg.adapters.length === ADAPTERS.length &&
    cfg.routes.length === Object.keys(ROUTES).length &&
    Object.keys(VARIANTS).every((name) => !VARIANTS[name].default || cfg.variants.includes(name));
  cfg.out = process.env.BENCH_OUT || path.join(RESULTS_DIR, full ? 'overhead.json' : 'overhead.tmp.json');
  return cfg;
}

/** Every server of a round: raw node:http once, every Nest variant on every adapter. */
function servers(cfg) {
  const list = [];
  for (const variant of cfg.variants) {
    for (const adapter of VARIANTS[variant].adapters ?? cfg.adapters) list.push({ variant, adapter });
  }
  return list;
}

/** Starts one server and warms each of its routes up (after checking that it answers what it should). */
async function startWarm({ variant, adapter }, cfg) {
  const dist = variant === 'cancellation-base' ? cfg.baseDist : cfg.dist;
  const server = await startServer(SERVER, [variant, adapter], { env: { BENCH_DIST: dist } });
  try {
    for (const route of cfg.routes) {
      const url = `http://127.0.0.1:${server.port}${ROUTES[route].path}`;
      await verify(url, ROUTES[route].body);
      if (cfg.warmup > 0) {
        await load(url, { connections: cfg.connections, pipelining: cfg.pipelining, duration: cfg.warmup });
      }
    }
  } catch (err) {
    await server.stop();
    throw err;
  }
  return server;
}

/**
 * Measures one route of a running server. A run during which other processes took more than quiet.threshold
 * cores is measured again (at most quiet.retries times); the quietest attempt is kept.
 */
async function measureRoute(server, { variant, adapter }, route, cfg) {
  const url = `http://127.0.0.1:${server.port}${ROUTES[route].path}`;
  const options = { connections: cfg.connections, pipelining: cfg.pipelining };
  let best;
  for (let attempt = 0; attempt <= (cfg.quiet ? cfg.quiet.retries : 0); attempt++) {
    const result = await measureOnce(server, url, options, cfg);
    if (result.errors > 0 || result.timeouts > 0 || result.non2xx > 0) {
      throw new Error(
        `${variant} on ${adapter} GET ${ROUTES[route].path}: ${result.errors} errors, ` +
          `${result.timeouts} timeouts, ${result.non2xx} non-2xx answers`,
      );
    }
    result.attempts = attempt + 1;
    if (best === undefined || (result.cores.others ?? 0) < (best.cores.others ?? 0)) best = result;
    if (!cfg.quiet || (result.cores.others ?? 0) <= cfg.quiet.threshold) break;
    log(`  (others took ${result.cores.others.toFixed(2)} cores: measuring again)`);
  }
  return best;
}

/** One measured run, with the server's CPU time per request and who used the cores meanwhile. */
async function measureOnce(server, url, options, cfg) {
  const quietBefore = cfg.quiet ? await waitForQuiet(cfg.quiet) : undefined;
  const cpuBefore = await server.cpuMicros();
  const machineBefore = machineBusyMicros();
  const ownBefore = process.cpuUsage();
  const result = await load(url, { ...options, duration: cfg.duration });
  const own = process.cpuUsage(ownBefore);
  const machine = machineBusyMicros() - machineBefore;
  const serverCpu = (await server.cpuMicros()) - cpuBefore;
  result.cpuUsPerRequest = serverCpu / result.requests;
  // Cores the server, the load generator and everything else used on average during the run.
  result.cores = {
    server: serverCpu / 1e6 / result.seconds,
    loadGenerator: (own.user + own.system) / 1e6 / result.seconds,
    others: Number.isFinite(machine)
      ? (machine - serverCpu - own.user - own.system) / 1e6 / result.seconds
      : null,
    othersBefore: quietBefore ?? null,
  };
  return result;
}

/**
 * Head to head: loads two servers at the same time (one autocannon each, same settings) so that both see the same
 * machine speed, which on a shared host drifts by tens of percent within minutes. Both servers are busy, so the
 * scheduler shares the cores between them and the ratios of their req/s and of their CPU per request compare
 * the per-request cost directly.
 */
async function measurePair(a, b, route, cfg) {
  const options = { connections: cfg.connections, pipelining: cfg.pipelining, duration: cfg.duration };
  let best;
  for (let attempt = 0; attempt <= (cfg.quiet ? cfg.quiet.retries : 0); attempt++) {
    if (cfg.quiet) await waitForQuiet(cfg.quiet);
    const cpuBefore = [await a.cpuMicros(), await b.cpuMicros()];
    const machineBefore = machineBusyMicros();
    const ownBefore = process.cpuUsage();
    const [ra, rb] = await Promise.all(
      [a, b].map((server) => load(`http://127.0.0.1:${server.port}${ROUTES[route].path}`, options)),
    );
    const own = process.cpuUsage(ownBefore);
    const machine = machineBusyMicros() - machineBefore;
    const cpu = [(await a.cpuMicros()) - cpuBefore[0], (await b.cpuMicros()) - cpuBefore[1]];
    for (const r of [ra, rb]) {
      if (r.errors > 0 || r.timeouts > 0 || r.non2xx > 0) {
        throw new Error(`head-to-head GET ${ROUTES[route].path}: ${r.errors} errors, ${r.non2xx} non-2xx`);
      }
    }
    const seconds = Math.max(ra.seconds, rb.seconds);
    const result = {
      a: { rps: ra.rps, cpuUsPerRequest: cpu[0] / ra.requests },
      b: { rps: rb.rps, cpuUsPerRequest: cpu[1] / rb.requests },
      rpsRatio: ra.rps / rb.rps,
      cpuRatio: cpu[1] / rb.requests / (cpu[0] / ra.requests),
      othersCores: Number.isFinite(machine)
        ? (machine - cpu[0] - cpu[1] - own.user - own.system) / 1e6 / seconds
        : null,
      attempts: attempt + 1,
    };
    if (best === undefined || (result.othersCores ?? 0) < (best.othersCores ?? 0)) best = result;
    if (!cfg.quiet || (result.othersCores ?? 0) <= cfg.quiet.threshold) break;
    log(`  (others took ${result.othersCores.toFixed(2)} cores: measuring again)`);
  }
  return best;
}

/**
 * Medians per (variant, adapter, route), the ratios to bare Nest and to the empty interceptor, and the targets.
 * Two measures: req/s, and the server's CPU time per request (turned into a throughput-equivalent ratio,
 * baseline CPU / variant CPU), which moves much less than req/s when other processes take the cores.
 */
function analyse(cfg, samples, pairs) {
  const series = (variant, adapter, route) => {
    const effective = VARIANTS[variant].adapters ? VARIANTS[variant].adapters[0] : adapter;
    return samples.get(`${variant}|${effective}|${route}`) ?? [];
  };
  const stats = (values) => ({ median: median(values), min: Math.min(...values), max: Math.max(...values) });
  /** Ratio of the medians, and the median of the per-round ratios (a round's pair ran a minute apart at most). */
  const ratio = (a, b) => {
    const rps = (runs) => runs.map((run) => run.rps);
    const cpu = (runs) => runs.map((run) => run.cpuUsPerRequest);
    return {
      rps: median(rps(a)) / median(rps(b)),
      rpsPaired: median(a.map((run, i) => (b[i] ? run.rps / b[i].rps : NaN))),
      cpu: median(cpu(b)) / median(cpu(a)),
      cpuPaired: median(a.map((run, i) => (b[i] ? b[i].cpuUsPerRequest / run.cpuUsPerRequest : NaN))),
    };
  };

  const results = [];
  for (const route of cfg.routes) {
    for (const variant of cfg.variants) {
      for (const adapter of cfg.adapters) {
        const runs = series(variant, adapter, route);
        if (runs.length === 0) continue;
        results.push({
          variant,
          label: VARIANTS[variant].label.replaceAll('*', ''),
          adapter,
          measuredOn: VARIANTS[variant].adapters?.[0] ?? adapter,
          route: ROUTES[route].path,
          rps: stats(runs.map((run) => run.rps)),
          cpuUsPerRequest: stats(runs.map((run) => run.cpuUsPerRequest)),
          latencyP50ms: median(runs.map((run) => run.latencyP50)),
          latencyP99ms: median(runs.map((run) => run.latencyP99)),
          rounds: runs.map((run) => ({
            rps: Math.round(run.rps),
            cpuUsPerRequest: +run.cpuUsPerRequest.toFixed(2),
            cores: run.cores,
          })),
          vsBareNest: ratio(runs, series('bare-nest', adapter, route)),
          vsEmptyInterceptor: ratio(runs, series('empty-interceptor', adapter, route)),
        });
      }
    }
  }

  const targets = [];
  if (cfg.variants.includes(cfg.subject)) {
    for (const target of TARGETS) {
      if (!cfg.routes.includes(target.route) || !cfg.variants.includes(target.baseline)) continue;
      for (const adapter of cfg.adapters) {
        const r = ratio(
          series(cfg.subject, adapter, target.route),
          series(target.baseline, adapter, target.route),
        );
        const h2h = pairs.get(`${target.baseline}|${adapter}|${target.route}`) ?? [];
        const headToHead =
          h2h.length === 0
            ? undefined
            : {
                rps: median(h2h.map((p) => p.rpsRatio)),
                cpu: median(h2h.map((p) => p.cpuRatio)),
                rounds: h2h.map((p) => ({
                  rpsRatio: +p.rpsRatio.toFixed(3),
                  cpuRatio: +p.cpuRatio.toFixed(3),
                  othersCores: p.othersCores === null ? null : +p.othersCores.toFixed(2),
                })),
              };
        targets.push({
          target: `GET ${ROUTES[target.route].path}: ${target.id} >= ${target.min}`,
          adapter,
          min: target.min,
          ...r,
          headToHead,
          // Judged by the head-to-head CPU per request where measured: the sequential figures carry the
          // machine's drift, and head to head the shared load generator compresses the req/s ratio.
          met: (headToHead?.cpu ?? r.rps) >= target.min,
        });
      }
    }
  }
  return { results, targets };
}

function report(cfg, analysis) {
  const out = [];
  const spread = (s) => (s.median > 0 ? ` ±${Math.round(((s.max - s.min) / 2 / s.median) * 100)}%` : '');
  const adapterName = (adapter) => adapter[0].toUpperCase() + adapter.slice(1);
  const find = (variant, adapter, route) =>
    analysis.results.find(
      (r) => r.variant === variant && r.adapter === adapter && r.route === ROUTES[route].path,
    );
  const routeTable = (route, title, unit, cell, ratioKey) => {
    const header = [`GET ${ROUTES[route].path}: ${title}`];
    const align = ['l'];
    for (const adapter of cfg.adapters) {
      header.push(`${adapterName(adapter)} ${unit}`, '× bare', '× empty');
      align.push('r', 'r', 'r');
    }
    const rows = cfg.variants.map((variant) => {
      const cells = [VARIANTS[variant].label];
      for (const adapter of cfg.adapters) {
        const row = find(variant, adapter, route);
        if (row === undefined) cells.push('–', '–', '–');
        else {
          cells.push(
            cell(row),
            formatRatio(row.vsBareNest[ratioKey]),
            formatRatio(row.vsEmptyInterceptor[ratioKey]),
          );
        }
      }
      return cells;
    });
    return markdownTable(header, rows, align);
  };
  for (const route of cfg.routes) {
    out.push(
      routeTable(
        route,
        'throughput',
        'req/s',
        (row) => `${formatInt(row.rps.median)}${spread(row.rps)}`,
        'rps',
      ),
      '',
    );
  }
  for (const route of cfg.routes) {
    out.push(
      routeTable(
        route,
        'server CPU per request',
        'µs/req',
        (row) => `${row.cpuUsPerRequest.median.toFixed(1)}${spread(row.cpuUsPerRequest)}`,
        'cpu',
      ),
      '',
    );
  }
  if (analysis.targets.length > 0) {
    const rows = analysis.targets.map((t) => [
      t.target,
      adapterName(t.adapter),
      t.headToHead ? formatRatio(t.headToHead.rps) : '–',
      t.headToHead ? formatRatio(t.headToHead.cpu) : '–',
      `${formatRatio(t.rps)} (${formatRatio(t.rpsPaired)})`,
      `${formatRatio(t.cpu)} (${formatRatio(t.cpuPaired)})`,
      t.met ? 'met' : '**missed**',
    ]);
    out.push(
      markdownTable(
        [
          `target (${cfg.subject})`,
          'adapter',
          'head to head: req/s',
          'head to head: CPU',
          'sequential: req/s (per-round)',
          'sequential: CPU (per-round)',
          '',
        ],
        rows,
        ['l', 'l', 'r', 'r', 'r', 'r', 'l'],
      ),
      '',
      'Head to head: CancellationModule and the baseline loaded at the same time, median of the per-round ' +
        'ratios; the verdict uses the CPU ratio (baseline CPU per request / ours), which is the throughput ratio ' +
        'of a CPU-bound server, while the req/s ratio is compressed because both share one load generator. ' +
        'Sequential: from the tables above.',
      '',
    );
  }
  out.push(
    `Median of ${cfg.rounds} interleaved rounds, ${cfg.duration} s per route and round, after ${cfg.warmup} s ` +
      `of warm-up per route${cfg.restart ? ' in a fresh process every round' : ' (one process per server for the whole run)'}; ` +
      `autocannon, ${cfg.connections} connections, pipelining ${cfg.pipelining}, in the parent process on the same ` +
      'machine. ±: half the range across rounds. × bare / × empty: ratio of medians to bare Nest / to the empty ' +
      'interceptor on the same adapter (CPU tables: baseline µs / variant µs, so that higher is better in both). ' +
      'In parentheses: the median of the per-round ratios.',
  );
  return out.join('\n');
}

export async function overhead() {
  if (process.env.BENCH_PROFILE === '1') return profile();
  const cfg = config();
  cfg.dist = await snapshotDist();
  if (cfg.variants.includes('cancellation-base')) {
    if (!process.env.BENCH_BASE_DIST_DIR)
      throw new TypeError(
        'BENCH_VARIANTS: cancellation-base needs BENCH_BASE_DIST_DIR (a build of another commit)',
      );
    cfg.baseDist = await snapshotDist('nestjs-cancellation-bench-base', 'BENCH_BASE_DIST_DIR');
  }
  // What the snapshot was built from (the work tree may move on during the run).
  const library = libraryInfo();
  const list = servers(cfg);
  const perRound = list.length * cfg.routes.length * (cfg.duration + 1);
  log(
    `overhead: ${list.length} servers x ${cfg.routes.length} routes x ${cfg.rounds} rounds of ${cfg.duration} s, ` +
      `about ${Math.ceil((perRound * cfg.rounds + list.length * (1 + cfg.routes.length * cfg.warmup)) / 60)} min ` +
      'on a quiet machine',
  );
  const samples = new Map();
  const pairs = new Map();
  // By default every server runs for the whole suite (idle while the others are measured), so that rounds can
  // be short and many: the speed of a shared machine drifts by tens of percent over minutes, and only variants
  // measured close together in time compare well. BENCH_RESTART=1 starts a fresh process for every round.
  const running = new Map();
  try {
    if (!cfg.restart) {
      for (const entry of list) running.set(entry, await startWarm(entry, cfg));
      log(`started and warmed up ${list.length} servers`);
    }
    for (let round = 0; round < cfg.rounds; round++) {
      // Rotate the order each round so that no variant always runs first, last or after the same neighbour.
      const shift = (round * Math.max(1, Math.floor(list.length / cfg.rounds))) % list.length;
      const order = [...list.slice(shift), ...list.slice(0, shift)];
      for (const entry of order) {
        const server = cfg.restart ? await startWarm(entry, cfg) : running.get(entry);
        try {
          for (const route of cfg.routes) {
            const result = await measureRoute(server, entry, route, cfg);
            const key = `${entry.variant}|${entry.adapter}|${route}`;
            if (!samples.has(key)) samples.set(key, []);
            samples.get(key)[round] = result;
            log(
              `round ${round + 1}/${cfg.rounds}  ${entry.variant.padEnd(20)} ${entry.adapter.padEnd(8)} ` +
                `${ROUTES[route].path.padEnd(7)} ${formatInt(result.rps).padStart(7)} req/s ` +
                `${result.cpuUsPerRequest.toFixed(1).padStart(7)} µs CPU/req  cores: server ` +
                `${result.cores.server.toFixed(2)} load ${result.cores.loadGenerator.toFixed(2)} ` +
                `others ${result.cores.others?.toFixed(2) ?? '?'}`,
            );
          }
        } finally {
          if (cfg.restart) await server.stop();
        }
      }
      if (cfg.restart || !cfg.headToHead || !cfg.variants.includes(cfg.subject)) continue;
      for (const adapter of cfg.adapters) {
        const find = (variant) =>
          running.get(list.find((e) => e.variant === variant && e.adapter === adapter));
        for (const target of TARGETS) {
          if (!cfg.routes.includes(target.route) || !cfg.variants.includes(target.baseline)) continue;
          const pair = await measurePair(find(cfg.subject), find(target.baseline), target.route, cfg);
          const key = `${target.baseline}|${adapter}|${target.route}`;
          if (!pairs.has(key)) pairs.set(key, []);
          pairs.get(key).push(pair);
          log(
            `round ${round + 1}/${cfg.rounds}  head to head ${adapter.padEnd(8)} ${ROUTES[target.route].path.padEnd(7)} ` +
              `${cfg.subject} / ${target.baseline}: req/s ${pair.rpsRatio.toFixed(3)} CPU ${pair.cpuRatio.toFixed(3)} ` +
              `others ${pair.othersCores?.toFixed(2) ?? '?'}`,
          );
        }
      }
    }
  } finally {
    for (const server of running.values()) await server.stop();
  }
  const analysis = analyse(cfg, samples, pairs);
  const table = report(cfg, analysis);
  writeResults(cfg.out, {
    suite: 'overhead',
    machine: machineInfo(),
    library,
    config: { ...cfg, out: undefined, dist: undefined },
    ...analysis,
  });
  process.stdout.write(`${table}\n\nWritten to ${path.relative(process.cwd(), cfg.out)}\n`);
  return analysis;
}

/**
 * BENCH_PROFILE=1: runs CancellationModule on Fastify (BENCH_PROFILE_VARIANT / BENCH_PROFILE_ADAPTER) under
 * `node --cpu-prof` and, at the same time and under the same load, the baseline BENCH_PROFILE_VS
 * (empty-interceptor; `none` for no baseline): profiles taken one after the other differ by the machine's drift
 * more than by what is measured. Loads one route (BENCH_PROFILE_ROUTE, hello) for BENCH_PROFILE_DURATION
 * seconds (10) after 1 s of warm-up, writes bench/results/overhead-<variant>-<adapter>-<route>.cpuprofile for
 * each (with the request count under `benchMeta`, for per-request costs) and prints the summary of the first,
 * compared with the baseline.
 */
async function profile() {
  const variant = process.env.BENCH_PROFILE_VARIANT || 'cancellation';
  const baseline = process.env.BENCH_PROFILE_VS || 'empty-interceptor';
  const adapter = process.env.BENCH_PROFILE_ADAPTER || 'fastify';
  const route = process.env.BENCH_PROFILE_ROUTE || 'hello';
  const duration = envNumber('BENCH_PROFILE_DURATION', 10);
  const interval = Math.round(envNumber('BENCH_PROFILE_INTERVAL_US', 250));
  const variants = baseline === 'none' || baseline === variant ? [variant] : [variant, baseline];
  for (const name of variants) {
    if (!(name in VARIANTS)) throw new TypeError(`BENCH_PROFILE_VARIANT / _VS: unknown variant ${name}`);
  }
  if (!(route in ROUTES)) throw new TypeError(`BENCH_PROFILE_ROUTE: ${route}`);
  const dist = await snapshotDist();
  const profiles = variants.map((name) => {
    const file = `overhead-${name}-${adapter}-${route}.cpuprofile`;
    return { variant: name, name: file, file: path.join(RESULTS_DIR, file), requests: 0 };
  });
  const servers = [];
  try {
    for (const p of profiles) {
      const execArgv = ['--cpu-prof', `--cpu-prof-dir=${RESULTS_DIR}`, `--cpu-prof-name=${p.name}`];
      execArgv.push(`--cpu-prof-interval=${interval}`);
      servers.push(await startServer(SERVER, [p.variant, adapter], { env: { BENCH_DIST: dist }, execArgv }));
    }
    const urls = servers.map((server) => `http://127.0.0.1:${server.port}${ROUTES[route].path}`);
    for (const url of urls) await verify(url, ROUTES[route].body);
    const options = {
      connections: envNumber('BENCH_CONNECTIONS', 50),
      pipelining: envNumber('BENCH_PIPELINING', 1),
    };
    log(`profiling ${variants.join(' and ')} on ${adapter}, GET ${ROUTES[route].path}, ${duration} s`);
    for (const seconds of [1, duration]) {
      const results = await Promise.all(urls.map((url) => load(url, { ...options, duration: seconds })));
      results.forEach((r, i) => (profiles[i].requests += r.requests));
      if (seconds === duration) results.forEach((r, i) => (profiles[i].rps = r.rps));
    }
  } finally {
    for (const server of servers) await server.stop();
  }
  const data = profiles.map((p) => {
    const profileData = JSON.parse(readFileSync(p.file, 'utf8'));
    profileData.benchMeta = {
      variant: p.variant,
      adapter,
      route: ROUTES[route].path,
      requests: p.requests,
      rps: p.rps,
      simultaneousWith: variants.filter((v) => v !== p.variant),
    };
    writeFileSync(p.file, JSON.stringify(profileData));
    log(`${p.variant}: ${formatInt(p.rps)} req/s under the profiler, ${formatInt(p.requests)} requests`);
    return profileData;
  });
  process.stdout.write(
    `${summarize(data[0], { file: profiles[0].file, baseline: data[1], baselineFile: profiles[1]?.file })}\n` +
      `Written to ${profiles.map((p) => path.relative(process.cwd(), p.file)).join(', ')}\n`,
  );
}
