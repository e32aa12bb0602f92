// Shared by the latency, shutdown, memory and checkpoint suites: a private copy of dist/, Nest apps built from
// plain JavaScript, a parent <-> child request/reply channel over IPC, and percentiles.
import 'reflect-metadata';
import { fork } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ROOT_DIR, snapshotDist as snapshotBuild } from '../lib/harness.mjs';

/**
 * A private copy of dist/ (or BENCH_DIST_DIR) for `suite`, under
 * node_modules/.cache/nestjs-cancellation-bench-<suite>/dist: returns the file URL of its index.js, for the child
 * processes to import (as BENCH_DIST). A copy per suite, so that a rebuild of dist/ or another suite taking its
 * own snapshot cannot pull the library from under a run. See snapshotDist in ../lib/harness.mjs.
 */
export function snapshotDist(suite) {
  return snapshotBuild(`nestjs-cancellation-bench-${suite}`);
}

/** The library for a child process: the parent's snapshot (BENCH_DIST), else the built dist/. */
export function libraryUrl(file = 'index.js') {
  const index = process.env.BENCH_DIST ?? pathToFileURL(path.join(ROOT_DIR, 'dist', 'index.js')).href;
  return new URL(file, index).href;
}

/** Whether `meta` (a module's import.meta) is the script node was started with. */
export function isMain(meta) {
  return process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(meta.url);
}

/**
 * The entry of a suite's script, which is also its server: `node <suite>.mjs --serve <args...>` (how the parent
 * starts a child) calls `serve(...args)`; started as itself (`node bench/<suite>.mjs`) it calls `main()`. A
 * failure of either is printed and exits 1.
 */
export function runSuite(meta, { serve, main }) {
  const fail = (err) => {
    console.error(err);
    process.exit(1);
  };
  if (process.argv[2] === '--serve') serve(...process.argv.slice(3)).catch(fail);
  else if (isMain(meta)) main().catch(fail);
}

/**
 * A Nest application on `adapter` ('express' | 'fastify') listening on 127.0.0.1 with an OS-chosen port.
 * Nest's logger is off: the figures must not include writing log lines to a terminal.
 */
export async function startNest(module, adapter, options = {}) {
  const { NestFactory } = await import('@nestjs/core');
  let app;
  if (adapter === 'fastify') {
    const { FastifyAdapter } = await import('@nestjs/platform-fastify');
    app = await NestFactory.create(module, new FastifyAdapter(), { logger: false, ...options });
  } else if (adapter === 'express') {
    app = await NestFactory.create(module, { logger: false, ...options });
  } else {
    throw new TypeError(`unknown adapter ${adapter}`);
  }
  await app.listen(0, '127.0.0.1');
  return { app, server: app.getHttpServer(), port: app.getHttpServer().address().port };
}

/**
 * Child side of the IPC channel: `handlers[cmd](message)` answers the parent's `{ id, cmd, ... }` with
 * `{ id, result }` (or `{ id, error }`). Other messages the child sends on its own (`notify`) are events.
 */
export function serveRequests(handlers) {
  process.on('message', async (message) => {
    if (message === null || typeof message !== 'object' || typeof message.cmd !== 'string') return;
    const { id, cmd } = message;
    if (cmd === 'exit' && handlers.exit === undefined) process.exit(0);
    try {
      const handler = handlers[cmd];
      if (handler === undefined) throw new Error(`unknown command ${cmd}`);
      process.send({ id, result: await handler(message) });
    } catch (err) {
      process.send({ id, error: String(err?.stack ?? err) });
    }
  });
}

export function notify(event) {
  process.send({ event });
}

/**
 * Parent side: forks `script` with `args` (it must `notify({ ready: true, port })` once it listens) and returns
 * `{ child, port, request(cmd, fields), events, stop() }`. `events` is an EventEmitter-like: `child.on('message')`
 * delivers `{ event }` messages; `request` resolves with the child's answer.
 */
export async function startChild(script, args, { execArgv = [], env = {}, timeoutMs = 60_000 } = {}) {
  const child = fork(script, args, {
    execArgv,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const exited = once(child, 'exit');
  const pending = new Map();
  let nextId = 1;
  child.on('message', (message) => {
    if (message?.id === undefined || !pending.has(message.id)) return;
    const { resolve, reject } = pending.get(message.id);
    pending.delete(message.id);
    if (message.error !== undefined) reject(new Error(`child: ${message.error}`));
    else resolve(message.result);
  });
  exited.then(([code, signal]) => {
    for (const { reject } of pending.values()) reject(new Error(`child exited (${code ?? signal})`));
    pending.clear();
  });
  const ready = await waitForEvent(child, (event) => event.ready === true, timeoutMs, exited);
  return {
    child,
    port: ready.port,
    request(cmd, fields = {}) {
      const id = nextId++;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        child.send({ ...fields, id, cmd });
      });
    },
    /** Resolves with the first `{ event }` for which `predicate(event)` holds. */
    waitFor(predicate, ms = timeoutMs) {
      return waitForEvent(child, predicate, ms, exited);
    },
    /** Asks the child to exit; kills it after 10 s. */
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.send({ cmd: 'exit', id: 0 });
      const kill = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(kill);
    },
  };
}

function waitForEvent(child, predicate, ms, exited) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.off('message', onMessage);
      reject(new Error(`timed out after ${ms} ms waiting for the child`));
    }, ms);
    const onMessage = (message) => {
      if (message?.event !== undefined && predicate(message.event)) {
        clearTimeout(timer);
        child.off('message', onMessage);
        resolve(message.event);
      }
    };
    child.on('message', onMessage);
    exited.then(([code, signal]) => {
      clearTimeout(timer);
      child.off('message', onMessage);
      reject(new Error(`child exited (${code ?? signal}) before it was ready`));
    });
  });
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

/** `{ n, min, p50, p90, p99, max, mean }` of `values`. */
export function distribution(values) {
  const sorted = values.filter(Number.isFinite).sort((a, b) => a - b);
  const sum = sorted.reduce((a, b) => a + b, 0);
  return {
    n: sorted.length,
    min: sorted[0] ?? NaN,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: sorted.at(-1) ?? NaN,
    mean: sorted.length === 0 ? NaN : sum / sorted.length,
  };
}

/** Milliseconds with `digits` decimals, '–' when not a number. */
export function ms(value, digits = 3) {
  return Number.isFinite(value) ? value.toFixed(digits) : '–';
}

/** Runs `tasks` (functions returning promises) with at most `limit` at a time. */
export async function pool(count, limit, task) {
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const index = next++;
      await task(index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker));
}
