/**
 * The drain begins before any other module's shutdown work (issue #14, item 1): in an application whose feature
 * module closes a real `pg` pool in `onModuleDestroy` and whose queue worker takes a second in
 * `beforeApplicationShutdown`, a request in flight has its query cancelled with the shutdown's reason (not
 * failed on a closed pool) and is answered 503 before either of those hooks runs; the listener is closed by
 * then, so that a new connection is refused instead of served. On `app.close()` and on SIGTERM under
 * `enableShutdownHooks()` alike (SIGTERM over HTTPS too), each on Express and Fastify, in a child process
 * (test/fixtures/shutdown-order-app.mjs) on the built package.
 */
import { Client } from 'pg';
import { ADAPTERS, request, startRequest } from './utils/harness.js';
import type { AdapterName, RequestOptions } from './utils/harness.js';
import { FixtureApp, fixtureNestVersion, spawnFixture } from './utils/fixture.js';
import type { FixtureEvent } from './utils/fixture.js';
import { startPostgres } from './utils/postgres.js';
import { testCertificate } from './utils/tls.js';
import type { TestPostgres } from './utils/postgres.js';

const FIXTURE = new URL('./fixtures/shutdown-order-app.mjs', import.meta.url).pathname;

let postgres: TestPostgres;
let monitor: Client;
let names = 0;

beforeAll(async () => {
  postgres = await startPostgres();
  monitor = new Client({ connectionString: postgres.url, application_name: 'shutdown-order-monitor' });
  await monitor.connect();
}, 60_000);

afterAll(async () => {
  await monitor?.end();
  await postgres?.stop();
});

/** Queries of `applicationName` still running on the server. */
async function running(applicationName: string): Promise<number> {
  const { rows } = await monitor.query<{ count: string }>(
    `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'`,
    [applicationName],
  );
  return Number(rows[0].count);
}

/** Waits for pg_sleep to run on the server for `applicationName`. */
async function queryRunning(applicationName: string): Promise<void> {
  const deadline = performance.now() + 10_000;
  while ((await running(applicationName)) === 0) {
    if (performance.now() > deadline) throw new Error(`no query of ${applicationName} ran`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

type Via = 'close' | 'SIGTERM';
const CASES = ADAPTERS.flatMap((adapter) => [
  [adapter, 'close', 'http'] as const,
  [adapter, 'SIGTERM', 'http'] as const,
  [adapter, 'SIGTERM', 'https'] as const,
]);

describe.each(CASES)(
  'shutdown order on %s, by %s, over %s',
  (adapter: AdapterName, via: Via, scheme: 'http' | 'https') => {
    const certificate = scheme === 'https' ? testCertificate() : undefined;
    const tls: RequestOptions = certificate === undefined ? {} : { ca: certificate.cert };
    let app: FixtureApp | undefined;

    afterEach(async () => {
      await app?.kill();
      app = undefined;
    });

    it('cancels and answers the request in flight, and closes the listener, before other modules shut down', async () => {
      const appName = `shutdown-order-${process.pid}-${++names}`;
      app = new FixtureApp(
        spawnFixture(FIXTURE, {
          ...process.env,
          ADAPTER: adapter,
          DATABASE_URL: postgres.url,
          APP_NAME: appName,
          ...(certificate === undefined ? {} : { TLS_KEY: certificate.key, TLS_CERT: certificate.cert }),
        }),
      );
      const listening = await app.next('listening', 20_000);
      expect(listening.nest).toBe(fixtureNestVersion());
      const port = listening.port as number;
      const report = startRequest(port, '/reports/report', tls);
      await queryRunning(appName);

      expect(app.child.kill(via === 'close' ? 'SIGHUP' : 'SIGTERM')).toBe(true);
      const response = await report.response();
      expect(response.status).toBe(503);
      expect(response.headers['retry-after']).toBe('1');
      expect(response.headers.connection).toBe('close');
      const message = `The application is shutting down${via === 'SIGTERM' ? ' (SIGTERM)' : ''}`;
      expect(response.json).toMatchObject({ statusCode: 503, message });

      // While the queue worker still takes its second: a new connection is refused by the kernel, not served.
      await app.next('queue-closing');
      const late = await request(port, '/reports/quick', tls).then(
        (ok) => `served ${ok.status}`,
        (err: NodeJS.ErrnoException) => err.code,
      );
      expect(late).toBe('ECONNREFUSED');

      const exit = await app.exited;
      expect(exit).toEqual(
        via === 'close'
          ? expect.objectContaining({ code: 0, signal: null })
          : expect.objectContaining({ code: null, signal: 'SIGTERM' }),
      );
      const at = (event: string): number => {
        const line = app?.find(event);
        if (line === undefined) throw new Error(`no "${event}": ${app?.dump()}`);
        return line.at;
      };
      // The query was cancelled with the shutdown's reason, on an open pool, and is gone from the server; the
      // pool closed without an error once its connection came back.
      expect(app.find('report-error')).toMatchObject({ kind: 'shutdown', message });
      expect(await running(appName)).toBe(0);

      const order = app.events
        .filter((line) => line.event !== 'log')
        .map((line: FixtureEvent) =>
          line.event === 'response' ? `response ${String(line.status)}` : line.event,
        );
      // The answer goes out at the abort; the handler settles once the server has cancelled its query: both
      // before the pool closes.
      expect(order.slice(5, 7).sort()).toEqual(['report-error', 'response 503']);
      expect(order.toSpliced(5, 2)).toEqual([
        'listening',
        'report-start',
        'close-begins',
        'draining',
        'shutdown',
        'pool-closing',
        'pool-closed',
        'queue-closing',
        'queue-closed',
        'app-shutdown',
        ...(via === 'close' ? ['closed'] : []),
      ]);
      // Answered at once, not after the queue worker's second.
      expect(at('response') - at('close-begins')).toBeLessThan(500);
      expect(at('queue-closed') - at('queue-closing')).toBeGreaterThanOrEqual(990);
      const levels = app.events.filter((line) => line.event === 'log').map((line) => line.level);
      expect(levels.filter((level) => level !== 'log' && level !== 'verbose')).toEqual([]);
      expect(app.stderr).toBe('');
    }, 30_000);
  },
);
