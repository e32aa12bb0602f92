import 'reflect-metadata';
import type { INestApplication } from '@nestjs/common';
import { Logger } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { ExpressAdapter } from '@nestjs/platform-express';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { readFileSync, readdirSync } from 'node:fs';
import { createServer, request } from 'node:http';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { AppModule } from './readme/quick-start/app.module.js';
import { expectStopsOnHangUp } from 'nestjs-cancellation/testing';
import { CancellationAudit, OperatedAppModule } from './readme/operator.js';
import { AsyncConfiguredModule, OutboundModule, RecipesModule, ReportScheduler } from './readme/recipes.js';
import { LogCapture } from './utils/harness.js';

const root = fileURLToPath(new URL('..', import.meta.url));

/** The README and every page of docs/, as paths from the repository's root (what links and snippets use). */
const pages = [
  'README.md',
  ...readdirSync(`${root}docs`)
    .filter((name) => name.endsWith('.md'))
    .sort()
    .map((name) => `docs/${name}`),
];
const markdown = new Map(pages.map((page) => [page, readFileSync(`${root}${page}`, 'utf8')]));
const readme = markdown.get('README.md') ?? '';

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

/**
 * The blocks marked `<!-- snippet: file#name -->`: [block, file, name, code]. A block ends at the first line
 * that is exactly ``` (as in scripts/sync-readme.mjs), so an empty block cannot reach into the next one.
 */
function snippets(text: string): RegExpMatchArray[] {
  return [...text.matchAll(/<!-- snippet: (\S+)#(\S+) -->\n\n?```ts\n([\s\S]*?)\n?^```$/gm)];
}

/** The text outside fenced code blocks, line by line. */
function proseLines(text: string): string[] {
  let fenced = false;
  return text.split('\n').filter((line) => {
    if (/^\s*```/.test(line)) fenced = !fenced;
    return !fenced && !/^\s*```/.test(line);
  });
}

/** The anchors GitHub gives a page's headings (as github-slugger: lower case, no punctuation, `-`s). */
function anchors(text: string): Set<string> {
  const seen = new Map<string, number>();
  const result = new Set<string>();
  for (const line of proseLines(text)) {
    const heading = /^#{1,6} (.+)$/.exec(line);
    if (!heading) continue;
    const base = heading[1]
      .trim()
      .toLowerCase()
      .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '')
      .replace(/ /g, '-');
    const count = seen.get(base) ?? 0;
    seen.set(base, count + 1);
    result.add(count === 0 ? base : `${base}-${count}`);
  }
  return result;
}

describe('README and docs/', () => {
  it('the README shows working code within its first 20 lines, main.ts with enableShutdownHooks()', () => {
    const firstBlock = readme.indexOf('```ts');
    expect(readme.slice(0, firstBlock).split('\n').length).toBeLessThanOrEqual(20);
    const [appModule, main] = snippets(readme);
    expect(appModule?.[2]).toBe('quick-start');
    expect(main?.[2]).toBe('main');
    expect(main?.[3]).toContain('app.enableShutdownHooks();');
  });

  it("the README stays a newcomer's page: under 400 lines, linking every page of docs/", () => {
    expect(readme.split('\n').length).toBeLessThan(400);
    for (const page of pages.slice(1)) expect(readme).toContain(`](${page}`);
  });

  it('shows at least five checked examples in the README', () => {
    expect(snippets(readme).length).toBeGreaterThanOrEqual(5);
  });

  it.each(pages)('%s copies every example exactly from code that a test suite runs', (page) => {
    for (const [, file, name, code] of snippets(markdown.get(page) ?? '')) {
      expect(file).toMatch(/^test\//);
      expect({ page, name, code }).toEqual({ page, name, code: region(file, name) });
    }
  });

  it.each(pages)('%s has no TypeScript block that is not a checked copy', (page) => {
    const text = markdown.get(page) ?? '';
    const blocks = text.split('\n').filter((line) => /^\s*```ts\s*$/.test(line)).length;
    expect(blocks).toBe(snippets(text).length);
  });

  it.each(pages)('%s links only to pages and headings that exist', (page) => {
    const broken: string[] = [];
    for (const line of proseLines(markdown.get(page) ?? '')) {
      for (const [, target] of line.matchAll(/\]\(([^)\s]+)\)/g)) {
        if (/^[a-z]+:/.test(target)) continue; // https:, mailto:
        const [file, anchor] = target.split('#');
        const linked =
          file === '' ? page : path.posix.normalize(path.posix.join(path.posix.dirname(page), file));
        const text = markdown.get(linked) ?? safeRead(linked);
        if (text === undefined) broken.push(target);
        else if (anchor !== undefined && !anchors(text).has(anchor)) broken.push(target);
      }
    }
    expect(broken).toEqual([]);
  });

  it('shows both set-up commands', () => {
    expect(readme).toContain('npm install && npm start');
    expect(readme).toContain('npm install && npm test');
  });
});

/** A file of the repository linked from the docs (a folder or a source file), or undefined when missing. */
function safeRead(file: string): string | undefined {
  try {
    readdirSync(`${root}${file}`);
    return '';
  } catch {
    try {
      return readFileSync(`${root}${file}`, 'utf8');
    } catch {
      return undefined;
    }
  }
}

/**
 * main.ts as the quick start shows it, on Nest's default platform (Express). Jest gives each suite a copy of
 * `process` that no OS signal reaches, so the test emits SIGTERM on it as Node does when the signal
 * arrives, and stands in for the `process.kill()` with which Nest re-raises the signal once the app is
 * closed (it would end Jest itself).
 */
describe('README quick start main.ts', () => {
  it('listens for SIGTERM; SIGTERM answers the request in flight 503 and closes the app', async () => {
    const port = await freePort();
    const reRaised: string[] = [];
    const kill = process.kill;
    process.kill = ((pid: number, signal?: string | number) => {
      if (pid !== process.pid) return kill.call(process, pid, signal);
      reRaised.push(String(signal));
      return true;
    }) as typeof process.kill;
    process.env.PORT = String(port);
    Logger.overrideLogger(false); // main.ts creates the app with Nest's default logger
    try {
      await import('./readme/quick-start/main.js'); // calls bootstrap()
      await waitForPort(port, true);
      // enableShutdownHooks(), and CancellationModule noting which signal starts the shutdown (for its reason).
      expect(process.listenerCount('SIGTERM')).toBe(2);
      const url = `http://127.0.0.1:${port}`;
      expect(await hangUpAfter(`${url}/reports`, 100)).toBe('hung up');

      const pending = fetch(`${url}/reports`);
      await sleep(100);
      const signalled = Date.now();
      process.emit('SIGTERM', 'SIGTERM');
      const res = await pending;
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBe('1');
      expect(res.headers.get('connection')).toBe('close');
      // Nest re-raises the signal once app.close() has finished: the app did not wait for the 5 s of work.
      await closed();
      expect(reRaised).toEqual(['SIGTERM']);
      expect(await res.json()).toMatchObject({ message: 'The application is shutting down (SIGTERM)' });
      // Both gone before Nest raised the signal again, which now ends the process.
      expect(process.listenerCount('SIGTERM')).toBe(0);
      expect(Date.now() - signalled).toBeLessThan(1_500);
      await waitForPort(port, false);
    } finally {
      // Had the test failed before the signal, the app would still run: close it the same way.
      if (reRaised.length === 0 && process.listenerCount('SIGTERM') > 0) {
        process.emit('SIGTERM', 'SIGTERM');
        await closed();
      }
      process.kill = kill;
      delete process.env.PORT;
    }

    async function closed(): Promise<void> {
      for (const until = Date.now() + 5_000; reRaised.length === 0 && Date.now() < until;) await sleep(10);
    }
  });
});

describe.each(['express', 'fastify'] as const)('README examples on %s', (adapter) => {
  let app: INestApplication;
  let url: string;
  let logs: LogCapture | undefined;

  async function start(module: unknown): Promise<void> {
    logs = new LogCapture();
    app = await NestFactory.create(
      module as never,
      adapter === 'express' ? new ExpressAdapter() : new FastifyAdapter(),
      { logger: logs },
    );
    await app.listen(0, '127.0.0.1');
    url = (await app.getUrl()).replace('[::1]', '127.0.0.1');
  }

  afterEach(async () => {
    await app?.close();
    // Every example answers its cancellations as such: nothing is logged at error level.
    expect(logs?.errors ?? []).toEqual([]);
    logs = undefined;
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

  it('recipes: a cancellation caught and rethrown is answered as one (504), not logged', async () => {
    await start(RecipesModule);
    const res = await fetch(`${url}/stock?upstream=${upstreamUrl}`);
    expect(res.status).toBe(504);
  });

  it.each(['fetch', 'axios'])(
    'outbound (%s): the call carries the remaining budget and stops with the request (504)',
    async (client) => {
      const seen = new Promise<{ budget: unknown; closed: Promise<void> }>((resolve) => {
        upstream.once('request', (req) =>
          resolve({
            budget: req.headers['x-request-timeout-ms'],
            closed: new Promise((closed) => req.on('close', () => closed())),
          }),
        );
      });
      await start(OutboundModule);
      const res = await fetch(`${url}/inventory/${client}?upstream=${upstreamUrl}`);
      expect(res.status).toBe(504);
      const { budget, closed } = await seen;
      expect(Number(budget)).toBeGreaterThan(0);
      expect(Number(budget)).toBeLessThanOrEqual(300);
      await closed; // the upstream saw its client leave
    },
  );

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
      correlationId?: string;
      route: string;
    }[];
    expect(list).toEqual([expect.objectContaining({ correlationId: 'export-42', route: '/exports/slow' })]);
    const cancel = await fetch(`${url}/ops/requests/${list[0].id}/cancel`, {
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

/** A port of 127.0.0.1 that nothing listens on at the moment. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Waits until a TCP connection to the port succeeds (`open`) or is refused (`!open`). */
async function waitForPort(port: number, open: boolean): Promise<void> {
  for (const deadline = Date.now() + 5_000; Date.now() < deadline; await sleep(20)) {
    const connected = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (connected === open) return;
  }
  throw new Error(`port ${port} still ${open ? 'closed' : 'open'} after 5 s`);
}
