// How long a fleet-wide cancel takes: from `FleetRegistry.cancel(id)` called on one instance to the signal of
// the request it names aborting on another, over Redis pub/sub on loopback; and how long `cancel()` takes to
// resolve (every listening instance's answer collected).
//
//   npm run build && node bench/fleet-cancel.mjs        writes bench/results/fleet-cancel.json
//   FLEET_CANCELS=50 node bench/fleet-cancel.mjs        smoke run
//
// A throw-away Redis (scripts/redis.sh, in .tmp/redis-bench; REDIS_URL to use your own) and one instance of
// test/fixtures/fleet-app.mjs in a child process (Express) holding the requests; the cancelling instance is
// this process (CancellationModule + CancellationFleetModule in an application context). Each round starts a
// request on the child, waits for its handler to start, cancels it from here and reads, from the child's
// `handler-aborted` line, when its signal aborted (the child reports its clock's origin, so both sides are
// compared on the same epoch). Rounds run one at a time. Environment: FLEET_CANCELS (300), BENCH_OUT.
import 'reflect-metadata';
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { execFileSync, spawn } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import {
  RESULTS_DIR,
  ROOT_DIR,
  envNumber,
  libraryInfo,
  log,
  machineInfo,
  writeResults,
} from './lib/harness.mjs';
import { distribution, isMain, ms } from './support/common.mjs';

const FIXTURE = path.join(ROOT_DIR, 'test', 'fixtures', 'fleet-app.mjs');
const REDIS_ROOT = path.join(ROOT_DIR, '.tmp', 'redis-bench');

function redis(command) {
  return execFileSync('bash', [path.join(ROOT_DIR, 'scripts', 'redis.sh'), command], {
    env: { ...process.env, REDIS_ROOT },
    encoding: 'utf8',
  }).trim();
}

/** The child's stdout as JSON lines, with a way to wait for the first line that matches. */
function lines(child) {
  const seen = [];
  const waiters = new Set();
  let buffered = '';
  child.stdout.setEncoding('utf8').on('data', (chunk) => {
    buffered += chunk;
    const parts = buffered.split('\n');
    buffered = parts.pop();
    for (const part of parts) {
      if (!part.startsWith('{')) continue;
      const line = JSON.parse(part);
      seen.push(line);
      for (const waiter of waiters) if (waiter.match(line)) waiter.resolve(line);
    }
  });
  return (match, timeoutMs = 10_000) =>
    new Promise((resolve, reject) => {
      const found = seen.find(match);
      if (found) return resolve(found);
      const waiter = {
        match,
        resolve: (line) => (waiters.delete(waiter), clearTimeout(timer), resolve(line)),
      };
      const timer = setTimeout(
        () => (waiters.delete(waiter), reject(new Error('no such line from the app'))),
        timeoutMs,
      );
      waiters.add(waiter);
    });
}

function slowRequest(port, correlationId) {
  const request = http.get({
    host: '127.0.0.1',
    port,
    path: '/work/slow?ms=60000',
    headers: { 'x-request-id': correlationId },
  });
  request.on('response', (response) => response.resume());
  request.on('error', () => undefined);
  return request;
}

export async function fleetCancel() {
  const rounds = envNumber('FLEET_CANCELS', 300);
  const started = process.env.REDIS_URL === undefined;
  const url = process.env.REDIS_URL ?? redis('start').split('\n').at(-1);
  const child = spawn(process.execPath, [FIXTURE], {
    env: { ...process.env, REDIS_URL: url, INSTANCE: 'holder', ADAPTER: 'express', LEASE_MS: '5000' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const next = lines(child);
  const { CancellationModule } = await import(path.join(ROOT_DIR, 'dist', 'index.js'));
  const { CancellationFleetModule, FleetRegistry } = await import(
    path.join(ROOT_DIR, 'dist', 'fleet', 'index.js')
  );
  class BenchModule {}
  Module({
    imports: [
      CancellationModule.forRoot(),
      CancellationFleetModule.forRoot({ redis: url, instanceId: 'canceller', leaseMs: 5000 }),
    ],
  })(BenchModule);
  const context = await NestFactory.createApplicationContext(BenchModule, { logger: ['error', 'warn'] });
  try {
    const { port } = await next((line) => line.event === 'listening', 30_000);
    const { origin } = await next((line) => line.event === 'clock');
    const fleet = context.get(FleetRegistry);
    // Both instances subscribed and published.
    for (let tries = 0; (await fleet.instances()).length < 2 && tries < 100; tries++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const toAbort = [];
    const toResolve = [];
    for (let round = 0; round < rounds; round++) {
      const correlationId = `bench-${round}`;
      const request = slowRequest(port, correlationId);
      const { id } = await next((line) => line.event === 'handler-start' && !line.used && (line.used = true));
      const t0 = performance.timeOrigin + performance.now();
      const result = await fleet.cancel(id, 'bench');
      const resolvedAt = performance.timeOrigin + performance.now();
      const aborted = await next((line) => line.event === 'handler-aborted' && line.id === id);
      if (result.cancelled !== 1) throw new Error(`round ${round}: cancel() found ${result.cancelled}`);
      toAbort.push(origin + aborted.at - t0);
      toResolve.push(resolvedAt - t0);
      request.destroy();
    }
    const results = {
      suite: 'fleet-cancel',
      date: new Date().toISOString(),
      machine: machineInfo(),
      library: libraryInfo(),
      rounds,
      cancelToAbortMs: distribution(toAbort),
      cancelResolvedMs: distribution(toResolve),
    };
    const file = process.env.BENCH_OUT ?? path.join(RESULTS_DIR, 'fleet-cancel.json');
    writeResults(file, results);
    const { cancelToAbortMs: a, cancelResolvedMs: r } = results;
    log(
      `fleet cancel, ${rounds} rounds: cancel(id) -> signal aborted on the other instance p50 ${ms(a.p50)} ms, p99 ${ms(a.p99)} ms; cancel() resolved p50 ${ms(r.p50)} ms, p99 ${ms(r.p99)} ms`,
    );
    log(`written to ${path.relative(ROOT_DIR, file)}`);
  } finally {
    await context.close();
    child.kill('SIGKILL');
    if (started) redis('stop');
  }
}

export { fleetCancel as 'fleet-cancel' };

if (isMain(import.meta)) {
  fleetCancel().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
