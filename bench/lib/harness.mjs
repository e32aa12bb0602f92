// Shared by the benchmark suites: server processes, load generation, statistics, machine info, output.
import autocannon from 'autocannon';
import { execFileSync, fork } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const BENCH_DIR = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
export const ROOT_DIR = path.dirname(BENCH_DIR);
export const RESULTS_DIR = path.join(BENCH_DIR, 'results');

/**
 * The built library the suites measure: dist/, or BENCH_DIST_DIR (e.g. a private `tsc --outDir`, to measure a
 * change without rebuilding the dist/ that others in the tree use). Returns its absolute path and the name of
 * its snapshot directory under node_modules/.cache: `base` for dist/, `base-<hash of the path>` otherwise, so
 * that runs of different builds do not overwrite each other's snapshot.
 */
export function distSource(base, envName = 'BENCH_DIST_DIR') {
  const custom = process.env[envName];
  if (custom === undefined || custom === '') return { dir: path.join(ROOT_DIR, 'dist'), cacheName: base };
  const dir = path.resolve(custom);
  const hash = createHash('sha1').update(dir).digest('hex').slice(0, 8);
  return { dir, cacheName: `${base}-${hash}` };
}

/**
 * Whether `dir` holds a complete build: index.js is there, no top-level module is empty and every relative
 * import of every top-level module resolves (the build is consistent with itself, whatever src/ looks like while
 * somebody edits it, and whichever tree BENCH_DIST_DIR was built from).
 */
export function isCompleteBuild(dir) {
  if (!existsSync(path.join(dir, 'index.js'))) return false;
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.js'))) {
    const text = readFileSync(path.join(dir, file), 'utf8');
    if (text.length === 0) return false;
    for (const [, spec] of text.matchAll(/from '(\.\/[^']+)'/g)) {
      if (!existsSync(path.join(dir, spec))) return false;
    }
  }
  return true;
}

/**
 * Copies dist/ (or BENCH_DIST_DIR, see distSource) to node_modules/.cache/<name>/dist (by default
 * `nestjs-cancellation-bench`) and returns the file URL of its index.js, for the servers to import. Other work in the same tree (`npm run build`
 * starts with `rm -rf dist`) must not pull the library from under a run that takes minutes. Waits up to a
 * minute for a complete build (isCompleteBuild).
 */
export async function snapshotDist(name = 'nestjs-cancellation-bench', envName = 'BENCH_DIST_DIR') {
  const { dir: dist, cacheName } = distSource(name, envName);
  // Under node_modules/.cache: ignored by git, eslint and prettier, and '@nestjs/*' still resolve from there.
  const cache = path.join(ROOT_DIR, 'node_modules', '.cache', cacheName);
  const target = path.join(cache, 'dist');
  for (let attempt = 0; attempt < 60; attempt++) {
    if (isCompleteBuild(dist)) {
      rmSync(target, { recursive: true, force: true });
      try {
        cpSync(dist, target, { recursive: true });
        // Module scope lookup stops at node_modules: say again that these files are ES modules.
        writeFileSync(path.join(cache, 'package.json'), '{ "type": "module", "private": true }\n');
        if (isCompleteBuild(target)) return pathToFileURL(path.join(target, 'index.js')).href;
      } catch {
        // dist/ changed while copying: try again.
      }
    }
    await sleep(1000);
  }
  throw new Error(
    `${path.relative(ROOT_DIR, dist)}/ is missing or incomplete: run \`npm run build\` first ` +
      '(or `npm run bench`, which builds)',
  );
}

/**
 * CPU time the whole machine has spent busy, in microseconds (Linux /proc/stat; `undefined` elsewhere).
 * Subtracting what the server and this process used tells how much other processes took during a run.
 */
export function machineBusyMicros() {
  try {
    const fields = readFileSync('/proc/stat', 'utf8')
      .split('\n', 1)[0]
      .trim()
      .split(/\s+/)
      .slice(1)
      .map(Number);
    // user nice system idle iowait irq softirq steal (guest time is already counted in user).
    const [user, nice, system, , , irq, softirq, steal] = fields;
    return (user + nice + system + irq + softirq + (steal ?? 0)) * (1e6 / 100); // USER_HZ is 100 on Linux
  } catch {
    return undefined;
  }
}

/**
 * Waits until other processes leave the machine nearly idle (busy below `threshold` cores over 0.5 s), for at
 * most `maxWaitMs`. Returns the last busy figure in cores (`undefined` where it cannot be measured).
 */
export async function waitForQuiet({ threshold = 0.25, maxWaitMs = 60_000 } = {}) {
  const started = Date.now();
  let busy;
  for (;;) {
    const before = machineBusyMicros();
    const own = process.cpuUsage();
    await sleep(500);
    const after = machineBusyMicros();
    if (before === undefined || after === undefined) return undefined;
    const ownUsage = process.cpuUsage(own);
    busy = (after - before - ownUsage.user - ownUsage.system) / 0.5e6;
    if (busy < threshold || Date.now() - started >= maxWaitMs) return busy;
  }
}

/** A positive number from the environment, or `fallback`. */
export function envNumber(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0)
    throw new TypeError(`${name} must be a positive number, got ${raw}`);
  return value;
}

/** A comma-separated list from the environment, or `undefined`. */
export function envList(name) {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return undefined;
  return raw
    .split(',')
    .map((item) => item.trim())
    .filter(Boolean);
}

export function log(message) {
  process.stderr.write(`${message}\n`);
}

/**
 * Starts `script` as a child process with `args`; it must send `{ ready: true, port }` over IPC once it listens
 * and exit on the message 'stop'.
 */
export async function startServer(script, args, { execArgv = [], env, timeoutMs = 30_000 } = {}) {
  const child = fork(script, args, {
    execArgv,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const exited = once(child, 'exit');
  let timer;
  const ready = await Promise.race([
    once(child, 'message').then(([message]) => message),
    exited.then(([code, signal]) => {
      throw new Error(
        `${path.basename(script)} ${args.join(' ')} exited before listening (${code ?? signal})`,
      );
    }),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${script} ${args.join(' ')} did not start`)), timeoutMs);
    }),
  ]).finally(() => clearTimeout(timer));
  return {
    port: ready.port,
    pid: child.pid,
    /** The server's CPU time so far in microseconds (user + system), if it answers the message 'cpu'. */
    async cpuMicros() {
      child.send('cpu');
      for (;;) {
        const [message] = await once(child, 'message');
        if (message?.cpu) return message.cpu.user + message.cpu.system;
      }
    },
    /** Asks the server to close and exit; kills it if it has not exited within 10 s. Resolves on exit. */
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.send('stop');
      const kill = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(kill);
    },
  };
}

/** One GET on a fresh connection: `{ status, body }`. */
export function get(url) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

/** Fails unless `url` answers 200 with `expected`: a benchmark of error responses would be meaningless. */
export async function verify(url, expected) {
  const { status, body } = await get(url);
  if (status !== 200 || body !== expected) {
    throw new Error(
      `GET ${url} answered ${status} ${JSON.stringify(body.slice(0, 200))}, expected 200 ${expected}`,
    );
  }
}

/**
 * Runs autocannon against `url` for `duration` seconds. `rps` counts only 2xx answers over the measured time;
 * any error, timeout or non-2xx answer is reported so the caller can refuse the figure.
 */
export async function load(url, { connections, pipelining, duration }) {
  const result = await autocannon({ url, connections, pipelining, duration });
  return {
    rps: result['2xx'] / result.duration,
    requests: result.requests.total,
    ok: result['2xx'],
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    latencyP50: result.latency.p50,
    latencyP99: result.latency.p99,
    seconds: result.duration,
  };
}

export function median(values) {
  const sorted = values.filter((value) => Number.isFinite(value)).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** What the figures were measured on. */
export function machineInfo() {
  const cpus = os.cpus();
  const version = (pkg) => {
    try {
      return JSON.parse(readFileSync(path.join(ROOT_DIR, 'node_modules', pkg, 'package.json'), 'utf8'))
        .version;
    } catch {
      return undefined;
    }
  };
  return {
    date: new Date().toISOString(),
    node: process.version,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    cpus: cpus.length,
    cpuModel: cpus[0]?.model,
    totalMemoryMB: Math.round(os.totalmem() / 2 ** 20),
    versions: Object.fromEntries(
      [
        '@nestjs/core',
        '@nestjs/platform-express',
        '@nestjs/platform-fastify',
        'express',
        'fastify',
        'rxjs',
        'autocannon',
      ].map((pkg) => [pkg, version(pkg)]),
    ),
  };
}

/**
 * The commit the library was built from, the source files changed since (benchmarks run on the work tree), and
 * which build was measured.
 */
export function libraryInfo() {
  const git = (...args) => {
    try {
      return execFileSync('git', args, { cwd: ROOT_DIR, encoding: 'utf8' }).trim();
    } catch {
      return undefined;
    }
  };
  const changed = git('status', '--porcelain', '--', 'src');
  return {
    commit: git('rev-parse', '--short', 'HEAD'),
    uncommittedSrc: changed ? changed.split('\n').map((line) => line.slice(3)) : [],
    // The build measured: dist/, or BENCH_DIST_DIR.
    dist: path.relative(ROOT_DIR, distSource('').dir),
  };
}

export function writeResults(file, data) {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(data, null, 2)}\n`);
}

/** `12345.6` -> `12,346`. */
export function formatInt(value) {
  return Number.isFinite(value) ? Math.round(value).toLocaleString('en-US') : '–';
}

export function formatRatio(value) {
  return Number.isFinite(value) ? value.toFixed(2) : '–';
}

/** A markdown table from a header row and rows of cells. */
export function markdownTable(header, rows, align) {
  const line = (cells) => `| ${cells.join(' | ')} |`;
  const rule = header.map((_, i) => ((align?.[i] ?? 'l') === 'r' ? '---:' : '---'));
  return [line(header), line(rule), ...rows.map(line)].join('\n');
}
