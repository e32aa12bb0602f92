import 'reflect-metadata';
import type { INestApplication } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { ExpressAdapter } from '@nestjs/platform-express';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { readFileSync } from 'node:fs';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { AppModule } from './readme/quick-start.js';
import { expectStopsOnHangUp } from 'nestjs-cancellation/testing';
import { CancellationAudit, OperatedAppModule } from './readme/operator.js';
import { AsyncConfiguredModule, RecipesModule, ReportScheduler } from './readme/recipes.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const readme = readFileSync(`${root}README.md`, 'utf8');

/** The code between `// #region name` and `// #endregion name` of a file. */
function region(file: string, name: string): string {
  const text = readFileSync(`${root}${file}`, 'utf8');
  const start = text.indexOf(`// #region ${name}\n`);
  const end = text.indexOf(`// #endregion ${name}`);
  if (start < 0 || end < 0) throw new Error(`no region ${name} in ${file}`);
  const lines = text.slice(start + `// #region ${name}\n`.length, end).split('\n');
  lines.pop(); // the indentation before the end marker
  const indent = Math.min(...lines.filter((l) => l.trim()).map((l) => l.length - l.trimStart().length));
  return lines.map((l) => l.slice(indent)).join('\n');
}

describe('README', () => {
  const snippets = [...readme.matchAll(/<!-- snippet: (\S+)#(\S+) -->\n\n?```ts\n([\s\S]*?)\n```/g)];

  it('shows working code within its first 20 lines', () => {
    const firstBlock = readme.indexOf('```ts');
    expect(readme.slice(0, firstBlock).split('\n').length).toBeLessThanOrEqual(20);
    expect(snippets[0]?.[2]).toBe('quick-start');
  });

  it('copies every example exactly from code that this suite runs', () => {
    expect(snippets.length).toBeGreaterThanOrEqual(5);
    for (const [, file, name, code] of snippets) {
      expect({ name, code }).toEqual({ name, code: region(file, name) });
    }
  });

  it('shows both set-up commands', () => {
    expect(readme).toContain('npm install && npm start');
    expect(readme).toContain('npm install && npm test');
  });
});

describe.each(['express', 'fastify'] as const)('README examples on %s', (adapter) => {
  let app: INestApplication;
  let url: string;

  async function start(module: unknown): Promise<void> {
    app = await NestFactory.create(
      module as never,
      adapter === 'express' ? new ExpressAdapter() : new FastifyAdapter(),
      { logger: false },
    );
    await app.listen(0, '127.0.0.1');
    url = (await app.getUrl()).replace('[::1]', '127.0.0.1');
  }

  afterEach(async () => {
    await app?.close();
  });

  it('quick start: a hang-up stops the work; a shutdown answers 503', async () => {
    await start(AppModule);
    expect(await hangUpAfter(`${url}/reports`, 100)).toBe('hung up');

    const pending = fetch(`${url}/reports`);
    await sleep(100);
    const closing = Date.now();
    await app.close();
    const res = await pending;
    expect(res.status).toBe(503);
    expect(Date.now() - closing).toBeLessThan(1_500);
  });

  it('recipes: the service passes the request signal to fetch', async () => {
    const upstreamAborted = new Promise<boolean>((resolve) => {
      upstream.once('request', (req) => req.on('close', () => resolve(true)));
    });
    await start(RecipesModule);
    await hangUpAfter(`${url}/quote?upstream=${upstreamUrl}`, 150);
    // The upstream sees its connection closed: the outgoing fetch was aborted with the request.
    expect(await upstreamAborted).toBe(true);
  });

  it('recipes: a CPU loop with checkpoint() stops at shutdown', async () => {
    await start(RecipesModule);
    const pending = fetch(`${url}/primes?limit=100000000`);
    await sleep(200);
    const closing = Date.now();
    await app.close();
    expect((await pending).status).toBe(503);
    expect(Date.now() - closing).toBeLessThan(1_500);
  });

  it('recipes: a scheduler stops taking work when draining begins and its work stops at shutdown', async () => {
    await start(RecipesModule);
    const scheduler = app.get(ReportScheduler);
    await sleep(200);
    expect(scheduler.running).toBeGreaterThan(0);
    const closing = Date.now();
    await app.close();
    // No request was in flight, so nothing waited for the grace period: shutdownSignal stopped the reports.
    expect(scheduler.running).toBe(0);
    expect(Date.now() - closing).toBeLessThan(1_500);
    await sleep(150);
    expect(scheduler.running).toBe(0); // and the interval started no new one
  });

  it('recipes: a child process runs to completion when nothing cancels it', async () => {
    await start(RecipesModule);
    const res = await fetch(`${url}/checksum?path=${encodeURIComponent(`${root}package.json`)}`);
    expect(res.status).toBe(200);
    expect(((await res.json()) as { sha256: string }).sha256).toMatch(/^[0-9a-f]{64}$/);
  });

  it('recipes: @RequestTimeout answers 504', async () => {
    await start(RecipesModule);
    const started = Date.now();
    const res = await fetch(`${url}/export`);
    expect(res.status).toBe(504);
    expect(Date.now() - started).toBeGreaterThanOrEqual(150);
  });

  it('recipes: forRootAsync takes options from another module', async () => {
    await start(AsyncConfiguredModule);
    expect(app).toBeDefined();
  });

  it('operator tools: the admin controller lists and cancels requests for the guard only', async () => {
    process.env.OPERATOR_TOKEN = 'readme-token';
    await start(OperatedAppModule);
    const slow = fetch(`${url}/exports/slow`, { headers: { 'x-request-id': 'export-42' } });
    await sleep(100);
    expect((await fetch(`${url}/ops/requests`)).status).toBe(403);
    const operator = { 'x-operator-token': 'readme-token' };
    const list = (await (await fetch(`${url}/ops/requests`, { headers: operator })).json()) as {
      id: string;
      route: string;
    }[];
    expect(list).toEqual([expect.objectContaining({ id: 'export-42', route: '/exports/slow' })]);
    const cancel = await fetch(`${url}/ops/requests/export-42/cancel`, {
      method: 'POST',
      headers: { ...operator, 'content-type': 'application/json' },
      body: JSON.stringify({ message: 'Cancelled by the on-call engineer' }),
    });
    expect(await cancel.json()).toEqual({ cancelled: 1 });
    const res = await slow;
    expect(res.status).toBe(503);
    expect(((await res.json()) as { message: string }).message).toBe('Cancelled by the on-call engineer');
    expect(app.get(CancellationAudit).stubborn).toEqual([]);
  });

  // #region hang-up-test
  it('stops the export when the client hangs up', async () => {
    app = await NestFactory.create(OperatedAppModule, new ExpressAdapter(), { logger: false });
    await app.init();
    const { settledAfterMs } = await expectStopsOnHangUp(app, {
      path: '/exports/slow',
      hangUpAfterMs: 50,
      settleWithinMs: 200,
    });
    expect(settledAfterMs).toBeLessThan(200);
  });
  // #endregion hang-up-test
});

/**
 * A client that sends a GET and closes its socket after `ms`, before any response. (Node's http client rather
 * than fetch: undici opens a spare connection after an abort, which then holds `server.close()` until its
 * keep-alive timeout.)
 */
function hangUpAfter(target: string, ms: number): Promise<string> {
  return new Promise((resolve) => {
    const req = request(target, { agent: false }, (res) => resolve(`answered ${res.statusCode}`));
    req.on('error', () => resolve('hung up'));
    req.end();
    setTimeout(() => req.destroy(), ms);
  });
}

// A downstream that never answers, so that only an abort ends the outgoing request.
const upstream = createServer(() => undefined);
let upstreamUrl = '';
beforeAll(async () => {
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/`;
});
afterAll(async () => {
  upstream.closeAllConnections();
  await new Promise((resolve) => upstream.close(resolve));
});
