/**
 * Cancellation reaches the real work behind a request: a PostgreSQL query (a real server, started by
 * scripts/postgres.sh), a task on a piscina worker thread and a child process. A client hang-up and a shutdown
 * each stop the work itself, checked where it runs: the query is gone from `pg_stat_activity`, the worker
 * thread has exited, the child's pid no longer exists. The pools stay usable, and the handler's error is
 * answered as the cancellation it is (499 to the dead socket or 503, never 500, nothing logged as an error).
 *
 * The code under test is the README's recipes (test/readme/real-work.ts); the first part tests the
 * `nestjs-cancellation/pg` helper on its own against the same server.
 */
import 'reflect-metadata';
import { Controller, Get, Inject, Query } from '@nestjs/common';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import {
  CancellationError,
  CancellationModule,
  RequestSignal,
  findCancellationError,
} from 'nestjs-cancellation';
import { Client, Pool } from 'pg';
import type { Worker } from 'node:worker_threads';
import { queryWithSignal } from '../src/pg/index.js';
import {
  CommandService,
  PG_POOL,
  PrimesService,
  RealWorkModule,
  ReportsModule,
  ReportsService,
} from './readme/real-work.js';
import { ADAPTERS, createApp, request, rootModule, sleep, startRequest, waitFor } from './utils/harness.js';
import type { AdapterName, RequestHandle, TestApp } from './utils/harness.js';
import { startPostgres } from './utils/postgres.js';
import type { TestPostgres } from './utils/postgres.js';

/** pg_sleep(30) and primes below 10^10 run for far longer than this: stopping sooner means cancelled. */
const STOPPED_WITHIN_MS = 1_000;

let postgres: TestPostgres;
/** A connection of its own that watches the others through pg_stat_activity. */
let monitor: Client;
let appNames = 0;

beforeAll(async () => {
  postgres = await startPostgres();
  monitor = new Client({ connectionString: postgres.url, application_name: 'downstream-e2e-monitor' });
  await monitor.connect();
}, 60_000);

afterAll(async () => {
  await monitor?.end();
  await postgres?.stop();
});

interface Backend {
  pid: number;
  state: string;
  query: string;
}

/** The connections of `applicationName` that are not idle (running a query, or idle in a transaction). */
async function busyBackends(applicationName: string): Promise<Backend[]> {
  const { rows } = await monitor.query<Backend>(
    `SELECT pid, state, query FROM pg_stat_activity WHERE application_name = $1 AND state <> 'idle'`,
    [applicationName],
  );
  return rows;
}

/** Waits for `pg_sleep` to run for `applicationName`, and returns its backend. */
async function sleepingBackend(applicationName: string): Promise<Backend> {
  const [backend] = await waitFor(
    async () => {
      const busy = await busyBackends(applicationName);
      return busy.some((b) => b.state === 'active' && b.query.includes('pg_sleep')) ? busy : undefined;
    },
    { timeoutMs: 5_000, message: `pg_sleep to run for ${applicationName}` },
  );
  return backend;
}

/** Milliseconds from `since` until `applicationName` has no query running any more. */
async function msUntilIdle(applicationName: string, since = performance.now()): Promise<number> {
  await waitFor(async () => (await busyBackends(applicationName)).length === 0, {
    timeoutMs: 5_000,
    message: `${applicationName} to go idle`,
  });
  return performance.now() - since;
}

/** Prints how long something took when E2E_TIMINGS is set (the assertions use generous bounds). */
function timing(what: string, ms: number): number {
  if (process.env.E2E_TIMINGS) {
    process.stderr.write(`${expect.getState().currentTestName}: ${what} ${ms.toFixed(1)} ms\n`);
  }
  return ms;
}

function exists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
}

describe('queryWithSignal (nestjs-cancellation/pg) against PostgreSQL', () => {
  let pool: Pool;
  let name: string;

  beforeEach(() => {
    name = `helper-${++appNames}`;
    pool = new Pool({ connectionString: postgres.url, application_name: name, max: 1 });
  });

  afterEach(async () => {
    await pool.end();
  });

  it('cancels the running query on the server, rejects with the reason, and the connection serves the next query', async () => {
    const { rows: before } = await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    const controller = new AbortController();
    const reason = new CancellationError('manual');
    const running = queryWithSignal(pool, 'SELECT pg_sleep(30)', [], controller.signal);
    const backend = await sleepingBackend(name);
    expect(backend.pid).toBe(before[0].pid);

    const aborted = performance.now();
    controller.abort(reason);
    await expect(running).rejects.toBe(reason);
    expect(timing('rejected', performance.now() - aborted)).toBeLessThan(STOPPED_WITHIN_MS);
    expect(await busyBackends(name)).toEqual([]);

    // The same connection (max: 1), back in the pool, healthy.
    const { rows: after } = await queryWithSignal<{ pid: number; one: number }>(
      pool,
      'SELECT pg_backend_pid() AS pid, $1::int AS one',
      [1],
      new AbortController().signal,
    );
    expect(after).toEqual([{ pid: before[0].pid, one: 1 }]);
    expect([pool.totalCount, pool.idleCount, pool.waitingCount]).toEqual([1, 1, 0]);
  });

  it('needs no free connection to cancel: every query of an exhausted pool stops', async () => {
    const wide = new Pool({ connectionString: postgres.url, application_name: `${name}-wide`, max: 2 });
    try {
      const controller = new AbortController();
      // Two run, four wait for a connection.
      const queries = Array.from({ length: 6 }, () =>
        queryWithSignal(wide, 'SELECT pg_sleep(30)', undefined, controller.signal).catch(
          (err: unknown) => err,
        ),
      );
      await waitFor(async () => (await busyBackends(`${name}-wide`)).length === 2, {
        timeoutMs: 5_000,
        message: 'two queries to run',
      });
      expect(wide.waitingCount).toBe(4);
      const aborted = performance.now();
      controller.abort(new CancellationError('shutdown'));
      const outcomes = await Promise.all(queries);
      expect(outcomes.map((err) => (err as CancellationError).kind)).toEqual(Array(6).fill('shutdown'));
      expect(timing('all gone', await msUntilIdle(`${name}-wide`, aborted))).toBeLessThan(STOPPED_WITHIN_MS);
      await waitFor(() => wide.waitingCount === 0 && wide.idleCount === wide.totalCount, {
        timeoutMs: 5_000,
        message: 'the pool to settle',
      });
      expect((await wide.query('SELECT 1 AS ok')).rows).toEqual([{ ok: 1 }]);
    } finally {
      await wide.end();
    }
  });

  it('abandons the wait for a connection on abort, and gives the connection back when it comes', async () => {
    const holder = await pool.connect();
    const controller = new AbortController();
    const waiting = queryWithSignal(pool, 'SELECT 1', undefined, controller.signal);
    await waitFor(() => pool.waitingCount === 1, { message: 'the query to wait for a connection' });
    controller.abort(new CancellationError('timeout'));
    await expect(waiting).rejects.toMatchObject({ kind: 'timeout' });
    holder.release();
    await waitFor(() => pool.waitingCount === 0 && pool.idleCount === 1, {
      message: 'the connection to return',
    });
    expect((await pool.query('SELECT 2 AS two')).rows).toEqual([{ two: 2 }]);
  });

  it('cancels a query on a client of its own, which then runs the next query', async () => {
    const client = new Client({ connectionString: postgres.url, application_name: name });
    await client.connect();
    try {
      const controller = new AbortController();
      const running = queryWithSignal(
        client,
        { text: 'SELECT pg_sleep($1)', values: [30] },
        undefined,
        controller.signal,
      );
      await sleepingBackend(name);
      controller.abort(new CancellationError('client-disconnected'));
      await expect(running).rejects.toMatchObject({ kind: 'client-disconnected' });
      expect(await busyBackends(name)).toEqual([]);
      expect((await client.query('SELECT 3 AS three')).rows).toEqual([{ three: 3 }]);
    } finally {
      await client.end();
    }
  });

  it('rolls back cleanly after a statement of a transaction was cancelled', async () => {
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      const controller = new AbortController();
      const running = queryWithSignal(client, 'SELECT pg_sleep(30)', undefined, controller.signal);
      await sleepingBackend(name);
      controller.abort(new CancellationError('shutdown'));
      await expect(running).rejects.toMatchObject({ kind: 'shutdown' });
      await expect(client.query('SELECT 1')).rejects.toMatchObject({ code: '25P02' }); // in failed transaction
      await client.query('ROLLBACK');
      expect((await client.query('SELECT 4 AS four')).rows).toEqual([{ four: 4 }]);
    } finally {
      client.release();
    }
  });

  it('rejects at once, without a connection, when the signal is already aborted', async () => {
    const reason = new CancellationError('shutdown');
    await expect(queryWithSignal(pool, 'SELECT 1', undefined, AbortSignal.abort(reason))).rejects.toBe(
      reason,
    );
    expect(pool.totalCount).toBe(0);
  });

  it('passes SQL errors through and keeps the connection', async () => {
    await expect(
      queryWithSignal(pool, 'SELECT * FROM no_such_table', undefined, new AbortController().signal),
    ).rejects.toMatchObject({ code: '42P01' });
    // Outside a request and without a signal it is a plain query.
    expect((await queryWithSignal(pool, 'SELECT 5 AS five')).rows).toEqual([{ five: 5 }]);
    expect([pool.totalCount, pool.idleCount]).toEqual([1, 1]);
  });
});

/** The pids of the children that `GET /spawn` started. */
const spawned: number[] = [];
/** The routes whose work has been started, and what it rejected with. */
const started = new Set<string>();
const failures = new Map<string, unknown>();

/** The work's own outcome, with its error recorded: to check that the signal stopped it, not something else. */
async function recorded<T>(route: string, work: Promise<T>): Promise<T> {
  started.add(route);
  try {
    return await work;
  } catch (err) {
    failures.set(route, err);
    throw err;
  }
}

/** Routes over the README's recipes, plus `spawn` and a probe of the pool. */
@Controller()
class DownstreamController {
  constructor(
    @Inject(ReportsService) private readonly reports: ReportsService,
    @Inject(PrimesService) private readonly primes: PrimesService,
    @Inject(CommandService) private readonly commands: CommandService,
    @Inject(PG_POOL) private readonly pool: Pool,
  ) {}

  @Get('report')
  report(@Query('seconds') seconds: string) {
    return recorded('report', this.reports.slowReport(Number(seconds)));
  }

  /** Which backend serves the next query of the pool (the default signal: the request's). */
  @Get('backend')
  async backend() {
    const { rows } = await queryWithSignal<{ pid: number }>(this.pool, 'SELECT pg_backend_pid() AS pid');
    return rows[0];
  }

  @Get('primes')
  async countPrimes(@Query('limit') limit: string) {
    return { count: await recorded('primes', this.primes.count(Number(limit))) };
  }

  @Get('command')
  async command(@Query('seconds') seconds: string) {
    return { output: await recorded('command', this.commands.run('sleep', [seconds])) };
  }

  @Get('spawn')
  async spawn(@Query('seconds') seconds: string, @RequestSignal() signal: AbortSignal) {
    const child = spawn('sleep', [seconds], { signal, stdio: 'ignore' });
    spawned.push(child.pid!);
    // Rejects with an AbortError caused by the reason on abort.
    const [code] = await recorded('spawn', once(child, 'exit'));
    return { pid: child.pid, code };
  }
}

describe.each(ADAPTERS)('real work behind a request on %s', (adapter: AdapterName) => {
  let t: TestApp;
  let name: string;
  const savedUrl = process.env.DATABASE_URL;

  beforeEach(async () => {
    started.clear();
    failures.clear();
    name = `${adapter}-app-${++appNames}`;
    // ReportsModule reads DATABASE_URL, as an application does.
    process.env.DATABASE_URL = `${postgres.url}?application_name=${name}`;
    t = await createApp(
      adapter,
      rootModule({
        imports: [CancellationModule.forRoot(), ReportsModule, RealWorkModule],
        controllers: [DownstreamController],
      }),
    );
  });

  afterEach(async () => {
    await t?.close();
    if (savedUrl === undefined) delete process.env.DATABASE_URL;
    else process.env.DATABASE_URL = savedUrl;
  });

  /** The server's response to `path`, once the application has written it (even to a dead socket). */
  async function serverStatus(path: string): Promise<number> {
    const res = await waitFor(() => t.responses.find((r) => r.req.url?.startsWith(path)), { message: path });
    await waitFor(() => res.writableEnded || res.destroyed, { message: `${path} to be answered` });
    await waitFor(() => res.statusCode !== 200, { message: `the outcome of ${path}` });
    return res.statusCode;
  }

  /** The request was answered as a cancellation: `kind` in the verbose log, nothing at error level. */
  function expectCancellation(path: string, kind: string): void {
    expect(t.logs.errors).toEqual([]);
    const lines = t.logs.inContext('Cancellation').map((line) => line.message);
    expect(lines).toEqual(
      expect.arrayContaining([expect.stringMatching(new RegExp(`GET ${path}.*\\(${kind}\\)`))]),
    );
  }

  /** The route's work failed because of the cancellation (its signal aborted), not for another reason. */
  async function expectStoppedBy(route: string, kind: string): Promise<void> {
    const error = await waitFor(() => failures.get(route), { message: `the work of /${route} to fail` });
    expect(findCancellationError(error)?.kind).toBe(kind);
  }

  async function expect503(pending: RequestHandle): Promise<void> {
    const res = await pending.response();
    expect(res.status).toBe(503);
    expect(res.headers['retry-after']).toBe('1');
  }

  describe('PostgreSQL', () => {
    it('a hang-up cancels the query on the server; the connection goes back to the pool healthy', async () => {
      const { pid } = (await request(t.port, '/backend')).json as { pid: number };
      const pending = startRequest(t.port, '/report?seconds=30');
      expect((await sleepingBackend(name)).pid).toBe(pid);

      const aborted = performance.now();
      pending.abort();
      expect(timing('query gone', await msUntilIdle(name, aborted))).toBeLessThan(STOPPED_WITHIN_MS);
      expect(await serverStatus('/report')).toBe(499);
      expectCancellation('/report', 'client-disconnected');
      await expectStoppedBy('report', 'client-disconnected');

      // The pool's only connection was reused, not replaced: the cancel left it clean.
      expect((await request(t.port, '/backend')).json).toEqual({ pid });
      expect((await request(t.port, '/report?seconds=0.01')).json).toEqual([{ seconds: 0.01, pg_sleep: '' }]);
      const pool = t.app.get<Pool>(PG_POOL);
      expect([pool.totalCount, pool.idleCount]).toEqual([1, 1]);
    });

    it('a shutdown cancels the query: 503 at once, and the pool ends without waiting for pg_sleep', async () => {
      const pending = startRequest(t.port, '/report?seconds=30');
      await sleepingBackend(name);

      const closing = performance.now();
      const closed = t.close();
      await expect503(pending);
      expect(timing('query gone', await msUntilIdle(name, closing))).toBeLessThan(STOPPED_WITHIN_MS);
      // onApplicationShutdown's pool.end() got the connection back at once.
      expect(timing('app.close()', await closed)).toBeLessThan(STOPPED_WITHIN_MS);
      expectCancellation('/report', 'shutdown');
      await expectStoppedBy('report', 'shutdown');
      // The pool closed its connection (the backend leaves pg_stat_activity a moment after the socket closes).
      let backends: unknown[] = [];
      for (let tries = 0; tries < 50; tries++) {
        ({ rows: backends } = await monitor.query(
          'SELECT pid FROM pg_stat_activity WHERE application_name = $1',
          [name],
        ));
        if (backends.length === 0) break;
        await sleep(20);
      }
      expect(backends).toEqual([]);
    });
  });

  describe('worker threads (piscina)', () => {
    /** Resolves with the threads of the pool that exit from now on. */
    function watchThreads(): { exited: Worker[] } {
      const seen = { exited: [] as Worker[] };
      for (const thread of t.app.get(PrimesService).pool.threads) {
        thread.once('exit', () => seen.exited.push(thread));
      }
      return seen;
    }

    it('a hang-up terminates the thread running the task; the next task gets a fresh one', async () => {
      const primes = t.app.get(PrimesService);
      const pending = startRequest(t.port, '/primes?limit=10000000000');
      await waitFor(() => started.has('primes'), { message: 'the task to be submitted' });
      await sleep(50); // the thread is counting
      const threads = watchThreads();
      expect(threads.exited).toEqual([]);

      const aborted = performance.now();
      pending.abort();
      await waitFor(() => threads.exited.length > 0, { message: 'the thread to exit' });
      expect(timing('thread exited', performance.now() - aborted)).toBeLessThan(STOPPED_WITHIN_MS);
      expect(await serverStatus('/primes')).toBe(499);
      expectCancellation('/primes', 'client-disconnected');
      await expectStoppedBy('primes', 'client-disconnected');

      expect((await request(t.port, '/primes?limit=10000')).json).toEqual({ count: 1229 });
      expect(primes.pool.threads).not.toContain(threads.exited[0]);
    });

    it('a shutdown terminates the thread: 503 at once, and the pool is destroyed without waiting', async () => {
      const pending = startRequest(t.port, '/primes?limit=10000000000');
      await waitFor(() => started.has('primes'), { message: 'the task to be submitted' });
      await sleep(50); // the thread is counting
      const threads = watchThreads();

      const closing = performance.now();
      const closed = t.close();
      await expect503(pending);
      await waitFor(() => threads.exited.length > 0, { message: 'the thread to exit' });
      timing('thread exited', performance.now() - closing);
      expect(timing('app.close()', await closed)).toBeLessThan(STOPPED_WITHIN_MS);
      expectCancellation('/primes', 'shutdown');
      await expectStoppedBy('primes', 'shutdown');
    });
  });

  describe('child processes', () => {
    function childPid(): number | undefined {
      const line = t.logs.lines.find((l) => /sleep started, pid \d+/.test(l.message));
      return line ? Number(/pid (\d+)/.exec(line.message)![1]) : undefined;
    }

    it('execFile: a hang-up kills the child; its pid is gone', async () => {
      const pending = startRequest(t.port, '/command?seconds=30');
      const pid = await waitFor(childPid, { message: 'the child to start' });
      expect(exists(pid)).toBe(true);

      const aborted = performance.now();
      pending.abort();
      await waitFor(() => !exists(pid), { message: `pid ${pid} to be gone` });
      expect(timing('pid gone', performance.now() - aborted)).toBeLessThan(STOPPED_WITHIN_MS);
      expect(await serverStatus('/command')).toBe(499);
      expectCancellation('/command', 'client-disconnected');
      await expectStoppedBy('command', 'client-disconnected');
      expect((await request(t.port, '/command?seconds=0')).json).toEqual({ output: '' });
    });

    it('execFile: a shutdown kills the child: 503 at once, pid gone', async () => {
      const pending = startRequest(t.port, '/command?seconds=30');
      const pid = await waitFor(childPid, { message: 'the child to start' });

      const closing = performance.now();
      const closed = t.close();
      await expect503(pending);
      await waitFor(() => !exists(pid), { message: `pid ${pid} to be gone` });
      timing('pid gone', performance.now() - closing);
      expect(timing('app.close()', await closed)).toBeLessThan(STOPPED_WITHIN_MS);
      expectCancellation('/command', 'shutdown');
      await expectStoppedBy('command', 'shutdown');
    });

    it('spawn: a hang-up kills the child; its pid is gone', async () => {
      const count = spawned.length;
      const pending = startRequest(t.port, '/spawn?seconds=30');
      const pid = await waitFor(() => spawned[count], { message: 'the child to start' });
      expect(exists(pid)).toBe(true);

      const aborted = performance.now();
      pending.abort();
      await waitFor(() => !exists(pid), { message: `pid ${pid} to be gone` });
      expect(timing('pid gone', performance.now() - aborted)).toBeLessThan(STOPPED_WITHIN_MS);
      expect(await serverStatus('/spawn')).toBe(499);
      expectCancellation('/spawn', 'client-disconnected');
      await expectStoppedBy('spawn', 'client-disconnected');
    });
  });
});
