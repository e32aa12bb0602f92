/**
 * The test-app zoo (issue #13): the core scenarios (a hang-up, a budget, a shutdown with requests in flight, a
 * drain) against an application built as production ones are (test/fixtures/zoo/production-app.mjs: a
 * catch-all global filter, a global ValidationPipe, helmet and compression, a global prefix with URI
 * versioning, @nestjs/throttler's guard, @nestjs/terminus health routes excluded, a module that ends its real
 * `pg` pool in `onModuleDestroy`), on Express and Fastify, over HTTP and HTTPS. HTTP/2 is refused at start-up
 * (see the README's Compatibility). The app runs in a child process: @nestjs/throttler 6 is CommonJS and
 * requires Nest 12's ESM-only @nestjs/common, which Node does and Jest's module runtime on Node 20 does not.
 */
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ADAPTERS, request, startRequest, waitFor } from './utils/harness.js';
import type { AdapterName, RawResponse, RequestHandle, RequestOptions } from './utils/harness.js';
import { fixtureNestVersion, spawnFixture } from './utils/fixture.js';
import { startPostgres } from './utils/postgres.js';
import type { TestPostgres } from './utils/postgres.js';
import { testCertificate } from './utils/tls.js';

const FIXTURE = fileURLToPath(new URL('./fixtures/zoo/production-app.mjs', import.meta.url));
const certificate = testCertificate();
const TRANSPORTS = ['http', 'https'] as const;
type Transport = (typeof TRANSPORTS)[number];

interface ZooEvent {
  readonly event: string;
  readonly [field: string]: unknown;
}

/** Every zoo app started, killed at the end whatever happened to the tests (no process outlives the suite). */
const spawned = new Set<Zoo>();

/** The production-like app in its child process, and what it reported. */
class Zoo {
  readonly events: ZooEvent[] = [];
  private readonly exited: Promise<void>;
  private stderr = '';
  port = 0;

  constructor(
    private readonly child: ChildProcess,
    private readonly tls: RequestOptions,
  ) {
    let buffered = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop() ?? '';
      for (const line of lines) if (line.trim() !== '') this.events.push(JSON.parse(line) as ZooEvent);
    });
    child.stderr?.on('data', (chunk: Buffer) => (this.stderr += chunk.toString()));
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    spawned.add(this);
  }

  static async start(adapter: AdapterName, transport: Transport, env: NodeJS.ProcessEnv): Promise<Zoo> {
    const tls = transport === 'https' ? { TLS_KEY: certificate.key, TLS_CERT: certificate.cert } : {};
    const zoo = new Zoo(
      spawnFixture(FIXTURE, { ...process.env, ADAPTER: adapter, ...tls, ...env }),
      transport === 'https' ? { ca: certificate.cert } : {},
    );
    const listening = await zoo.next((e) => e.event === 'listening' || e.event === 'start-failed', 20_000);
    if (listening.event !== 'listening')
      throw new Error(`the zoo app did not start: ${String(listening.message)}`);
    expect(listening.nest).toBe(fixtureNestVersion());
    zoo.port = listening.port as number;
    return zoo;
  }

  /** The first event (already reported or to come) that `match` accepts. */
  next(match: (event: ZooEvent) => boolean, timeoutMs = 5_000): Promise<ZooEvent> {
    return waitFor(() => this.events.find(match), {
      timeoutMs,
      message: `an event from the zoo app (stdout so far: ${JSON.stringify(this.events.slice(-5))}, stderr: ${this.stderr})`,
    });
  }

  /** The handler of `tag` started. */
  started(tag: string): Promise<ZooEvent> {
    return this.next((e) => e.event === 'start' && e.tag === tag);
  }

  /** How the handler of `tag` ended: `end`, or `fail` with the cancellation's `kind`. */
  ended(tag: string): Promise<ZooEvent> {
    return this.next((e) => (e.event === 'end' || e.event === 'fail') && e.tag === tag);
  }

  get(path: string, options: RequestOptions = {}): Promise<RawResponse> {
    return request(this.port, path, { ...this.tls, ...options });
  }

  start(path: string, options: RequestOptions = {}): RequestHandle {
    return startRequest(this.port, path, { ...this.tls, ...options });
  }

  /** Lines the app logged at error or fatal level. */
  get errors(): ZooEvent[] {
    return this.events.filter((e) => e.event === 'log' && (e.level === 'error' || e.level === 'fatal'));
  }

  /** Messages logged in the `Cancellation` context. */
  get cancellationLines(): string[] {
    return this.events
      .filter((e) => e.event === 'log' && e.context === 'Cancellation')
      .map((e) => e.message as string);
  }

  /** Sends SIGTERM, as a deployment does; resolves with how long the shutdown took, once the process exited. */
  async close(): Promise<number> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    const closed = await this.next((e) => e.event === 'closed', 15_000);
    await this.exited;
    return closed.ms as number;
  }

  /** Kills the process if it is still running (after a failed test). */
  async kill(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGKILL');
    await this.exited;
  }
}

let postgres: TestPostgres;

beforeAll(async () => {
  postgres = await startPostgres();
}, 90_000);

afterAll(async () => {
  await Promise.all([...spawned].map((zoo) => zoo.kill()));
  await postgres?.stop();
});

function expect503(response: RawResponse): void {
  expect(response.status).toBe(503);
  expect(response.headers['retry-after']).toBe('5');
  expect(response.json).toMatchObject({ statusCode: 503 });
}

const COMBINATIONS = ADAPTERS.flatMap((adapter) =>
  TRANSPORTS.map((transport) => [adapter, transport] as const),
);

describe.each(COMBINATIONS)('a production-like application on %s over %s', (adapter, transport) => {
  let seq = 0;
  const tag = (name: string) => `${adapter}-${transport}-${name}-${++seq}`;
  const env = (grace = 0): NodeJS.ProcessEnv => ({
    DATABASE_URL: `${postgres.url}?application_name=zoo-${adapter}-${transport}`,
    GRACE_MS: String(grace),
  });
  /** The apps of this combination: all started at once, their start-up (about a second each) overlaps. */
  let apps: Promise<{ shared: Zoo; shutdown: Zoo; drain: Zoo }>;

  beforeAll(() => {
    apps = (async () => {
      const [shared, shutdown, drain] = await Promise.all([
        Zoo.start(adapter, transport, env()),
        Zoo.start(adapter, transport, env()),
        Zoo.start(adapter, transport, env(5_000)),
      ]);
      return { shared, shutdown, drain };
    })();
    apps.catch(() => undefined);
  });

  afterAll(async () => {
    const started = await apps.catch(() => undefined);
    if (started === undefined) return;
    const { shared } = started;
    try {
      await shared.close();
      expect(shared.errors).toEqual([]);
    } finally {
      for (const zoo of Object.values(started)) await zoo.kill();
    }
  });

  it('serves through helmet, compression, validation, the throttler and the global filter', async () => {
    const { shared: zoo } = await apps;
    const quick = await zoo.get('/api/v1/reports/quick');
    expect(quick.json).toEqual({ ok: true });
    expect(quick.headers['x-content-type-options']).toBe('nosniff');
    const big = await zoo.get('/api/v1/reports/big', { headers: { 'accept-encoding': 'gzip' } });
    expect(big.headers['content-encoding']).toBe('gzip');
    const invalid = await zoo.get('/api/v1/reports', { method: 'POST', body: { tag: 'x', ms: 'soon' } });
    expect(invalid.status).toBe(400);
    expect(invalid.json).toMatchObject({ statusCode: 400, filter: 'app' });
    const limited = [];
    for (let i = 0; i < 3; i++) limited.push((await zoo.get('/api/v1/reports/limited')).status);
    expect(limited).toEqual([200, 200, 429]);
    expect((await zoo.get('/api/health/live')).json).toMatchObject({ status: 'ok' });
  });

  it('a hang-up during a validated POST cancels its handler, logged as a cancellation only', async () => {
    const { shared: zoo } = await apps;
    const id = tag('hang-up');
    const client = zoo.start('/api/v1/reports', { method: 'POST', body: { tag: id, ms: 10_000 } });
    await zoo.started(id);
    client.abort();
    expect(await zoo.ended(id)).toMatchObject({ event: 'fail', kind: 'client-disconnected' });
    await waitFor(
      () =>
        zoo.cancellationLines.some((line) =>
          /^POST \/api\/v1\/reports .*cancelled \(client-disconnected\)/.test(line),
        ),
      { message: 'the verbose line' },
    );
  });

  it('a spent budget is answered 504 through the catch-all filter', async () => {
    const { shared: zoo } = await apps;
    const id = tag('budget');
    const response = await zoo.get(`/api/v1/reports/budget?tag=${id}`);
    // The module's DeadlineExceededException, which the app's catch-all filter shapes as it shapes any.
    expect(response.status).toBe(504);
    expect(response.json).toMatchObject({ statusCode: 504, filter: 'app' });
    expect(await zoo.ended(id)).toMatchObject({ event: 'fail', kind: 'timeout' });
  });

  it('a hang-up cancels a PostgreSQL query; the pool serves the next one', async () => {
    const { shared: zoo } = await apps;
    const id = tag('db');
    const client = zoo.start(`/api/v1/reports/db?tag=${id}&seconds=10`);
    await zoo.started(id);
    await new Promise((resolve) => setTimeout(resolve, 100));
    client.abort();
    expect(await zoo.ended(id)).toMatchObject({ event: 'fail', kind: 'client-disconnected' });
    expect((await zoo.get(`/api/v1/reports/db?tag=${tag('db-next')}&seconds=0`)).json).toEqual({ slept: 0 });
  });

  it('a shutdown answers the requests in flight 503, a query among them, and the pool ends at once', async () => {
    const { shutdown: zoo } = await apps;
    const ids = [tag('shutdown-a'), tag('shutdown-b')];
    const dbId = tag('shutdown-db');
    const clients = [
      ...ids.map((id) => zoo.start(`/api/v1/reports/slow?tag=${id}`)),
      zoo.start(`/api/v1/reports/db?tag=${dbId}&seconds=10`),
    ];
    for (const id of [...ids, dbId]) await zoo.started(id);
    await new Promise((resolve) => setTimeout(resolve, 100));

    expect(await zoo.close()).toBeLessThan(3_000);
    for (const client of clients) expect503(await client.response());
    for (const id of [...ids, dbId])
      expect(await zoo.ended(id)).toMatchObject({ event: 'fail', kind: 'shutdown' });
    // The pool ended without waiting for pg_sleep(10): the query was cancelled before onModuleDestroy ended it.
    const poolEnded = await zoo.next((e) => e.event === 'pool-ended');
    expect(poolEnded.ms).toBeLessThan(2_000);
    expect(zoo.errors).toEqual([]);
  });

  it('drains: the request in flight finishes, new ones get 503, the excluded health routes answer', async () => {
    const { drain: zoo } = await apps;
    const id = tag('drain');
    const inFlight = zoo.start(`/api/v1/reports/slow?tag=${id}&ms=800`);
    await zoo.started(id);
    const closing = zoo.close();
    await waitFor(() => zoo.cancellationLines.some((line) => line.startsWith('Draining')), {
      message: 'the drain to begin',
    });

    expect503(await zoo.get('/api/v1/reports/quick'));
    // Excluded from cancellation: terminus answers, and says the instance is no longer ready.
    expect((await zoo.get('/api/health/live')).status).toBe(200);
    const ready = await zoo.get('/api/health/ready');
    expect(ready.status).toBe(503);
    expect(ready.json).toMatchObject({
      filter: 'app',
      error: { status: 'error', error: { shutdown: { status: 'down' } } },
    });

    const response = await inFlight.response();
    expect(response.status).toBe(200);
    expect(response.json).toEqual({ tag: id });
    expect(await zoo.ended(id)).toMatchObject({ event: 'end' });
    expect(await closing).toBeLessThan(3_000);
    expect(zoo.errors).toEqual([]);
  });
});

describe('HTTP/2', () => {
  it('the production-like application on Fastify with http2: true does not start, and says why', async () => {
    const zoo = Zoo.start('fastify', 'http', {
      DATABASE_URL: `${postgres.url}?application_name=zoo-http2`,
      HTTP2: '1',
    });
    await expect(zoo).rejects.toThrow(/does not support HTTP\/2/);
  });
});
