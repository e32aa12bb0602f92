// The fleet over Redis (nestjs-cancellation/fleet, with nestjs-cancellation/bullmq): three app processes of
// test/fixtures/fleet-app.mjs on their own ports (A and C on Express, B on Fastify) against one Redis of the
// suite's own (scripts/redis.sh, in its own folder: the suite stops it). A cancels a request running on B (B's
// handler stops, its client gets the 503) and a job running on C (it fails without retry); a cancel sent
// before its job started still cancels it; SIGTERM to B in the middle of a job puts the job back in its queue
// and C completes it; after kill -9, C drops out of the listing within the lease; with Redis stopped, local
// cancellation still works and the fleet calls fail fast with 503. Short leases, loopback only. In the Nest 11
// job the three run on Nest 11, @nestjs/bullmq 11 and the CommonJS build (test/utils/fixture.ts).
import { fileURLToPath } from 'node:url';
import { FixtureApp, fixtureNestVersion, spawnFixture } from './utils/fixture.js';
import { request, startRequest, waitFor } from './utils/harness.js';
import type { RawResponse } from './utils/harness.js';
import { startPrivateRedis } from './utils/redis.js';
import type { PrivateRedis } from './utils/redis.js';

const FIXTURE = fileURLToPath(new URL('./fixtures/fleet-app.mjs', import.meta.url));
const LEASE_MS = 1_500;

interface Instance {
  readonly app: FixtureApp;
  readonly port: number;
}

interface Listed {
  readonly id: string;
  readonly instanceId: string;
  readonly method: string;
  readonly route: string;
  readonly correlationId?: string;
}

let redis: PrivateRedis;
const instances: Record<'a' | 'b' | 'c', Instance> = {} as never;

async function launch(name: 'a' | 'b' | 'c', env: Record<string, string>): Promise<Instance> {
  const app = new FixtureApp(
    spawnFixture(FIXTURE, {
      ...process.env,
      REDIS_URL: redis.url,
      INSTANCE: name,
      LEASE_MS: String(LEASE_MS),
      GRACE_MS: '300',
      ...env,
    }),
  );
  const { port } = (await app.next('listening', 20_000)) as unknown as { port: number };
  return { app, port };
}

function post(instance: Instance, path: string): Promise<RawResponse> {
  return request(instance.port, path, { method: 'POST' });
}

async function fleetListing(from: Instance): Promise<Listed[]> {
  const response = await request(from.port, '/cancellation/requests?fleet=true');
  expect(response.status).toBe(200);
  return response.json as Listed[];
}

async function jobState(
  from: Instance,
  queue: string,
  id: string,
  wanted: string,
): Promise<Record<string, unknown>> {
  const deadline = performance.now() + 15_000;
  for (;;) {
    const state = (await request(from.port, `/work/jobs/${queue}/${id}`)).json as Record<string, unknown>;
    if (state.state === wanted) return state;
    if (performance.now() > deadline)
      throw new Error(`job ${queue}:${id} is ${JSON.stringify(state)}, not ${wanted}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function enqueue(from: Instance, queue: string, query: string): Promise<string> {
  const response = await post(from, `/work/jobs/${queue}?${query}`);
  expect(response.status).toBe(201);
  return (response.json as { id: string }).id;
}

beforeAll(async () => {
  redis = await startPrivateRedis('fleet');
  [instances.a, instances.b, instances.c] = await Promise.all([
    launch('a', { ADAPTER: 'express' }),
    launch('b', { ADAPTER: 'fastify', WORKERS: 'shared' }),
    launch('c', { ADAPTER: 'express', WORKERS: 'shared,own', SHARED_AUTORUN: '0' }),
  ]);
}, 60_000);

afterAll(async () => {
  await Promise.all(Object.values(instances).map((instance) => instance?.app.kill()));
  await redis?.stop();
});

describe('a fleet of three instances on one Redis', () => {
  it("runs on the job's Nest, with the @nestjs/bullmq of that Nest and one bullmq in each process", async () => {
    const nest = fixtureNestVersion();
    for (const { app } of Object.values(instances)) {
      expect((await app.next('listening')).nest).toBe(nest);
      const bullmq = await app.next('bullmq');
      expect(String(bullmq.nestBullmq).split('.')[0]).toBe(nest.split('.')[0]);
      expect(bullmq.oneBullmq).toBe(true);
    }
  });

  it('lists every instance and cancels from A a request running on B: B stops it, its client gets the 503', async () => {
    const { a, b } = instances;
    const listed = await waitFor(
      async () => {
        const live = (await request(a.port, '/work/instances')).json as Array<{ instanceId: string }>;
        return live.length === 3 ? live : undefined;
      },
      { timeoutMs: 5_000, intervalMs: 50, message: 'three instances' },
    );
    expect(listed.map((each) => each.instanceId)).toEqual(['a', 'b', 'c']);

    const slow = startRequest(b.port, '/work/slow?ms=20000', { headers: { 'x-request-id': 'report-42' } });
    const started = await b.app.next('handler-start');
    const entry = await waitFor(
      async () => (await fleetListing(a)).find((each) => each.correlationId === 'report-42'),
      { timeoutMs: 5_000, intervalMs: 50, message: "B's request in A's listing" },
    );
    expect(entry).toMatchObject({ id: started.id, instanceId: 'b', method: 'GET', route: '/work/slow' });

    const cancel = await post(a, `/cancellation/requests/${entry.id}/cancel?fleet=true`);
    expect(cancel.status).toBe(200);
    expect(cancel.json).toMatchObject({ cancelled: 1 });
    expect(
      (cancel.json as { instances: Array<{ instanceId: string; cancelled: number }> }).instances,
    ).toEqual(expect.arrayContaining([{ instanceId: 'b', cancelled: 1 }]));
    expect((await b.app.next('handler-aborted')).kind).toBe('manual');
    const answer = await slow.settled();
    expect('response' in answer && answer.response.status).toBe(503);
  });

  it('cancels from A a job running on C: it fails without retry', async () => {
    const { a, c } = instances;
    const id = await enqueue(a, 'own', 'ms=20000');
    await waitFor(() => c.app.events.find((line) => line.event === 'job-start' && line.id === id), {
      timeoutMs: 10_000,
      message: 'the job to start on C',
    });
    const listed = await waitFor(
      async () => (await fleetListing(a)).find((each) => each.id === `own:${id}`),
      { timeoutMs: 5_000, intervalMs: 50, message: 'the job in the listing' },
    );
    expect(listed).toMatchObject({ instanceId: 'c', method: 'JOB', route: 'own/work' });
    const cancel = await post(a, `/cancellation/requests/own:${id}/cancel?fleet=true`);
    expect(cancel.json).toMatchObject({ cancelled: 1 });
    const failed = await jobState(a, 'own', id, 'failed');
    expect(failed).toMatchObject({
      attemptsMade: 1,
      failedReason: 'The work was cancelled by an operator',
    });
    expect(c.app.events.find((line) => line.event === 'job-aborted' && line.id === id)?.kind).toBe('manual');
  });

  it('cancels a job whose cancel was sent before it started', async () => {
    const { a, c } = instances;
    const id = await enqueue(a, 'own', 'ms=20000&delayMs=1500');
    const cancel = await post(a, `/cancellation/requests/own:${id}/cancel?fleet=true`);
    expect(cancel.status).toBe(404);
    const failed = await jobState(a, 'own', id, 'failed');
    expect(failed).toMatchObject({ attemptsMade: 1 });
    expect(c.app.events.find((line) => line.event === 'job-aborted' && line.id === id)?.kind).toBe('manual');
  });

  it('SIGTERM to B in the middle of a job: the job goes back to its queue and C completes it', async () => {
    const { a, b, c } = instances;
    const id = await enqueue(a, 'shared', 'ms=20000&retryMs=200');
    await waitFor(() => b.app.events.find((line) => line.event === 'job-start' && line.id === id), {
      timeoutMs: 10_000,
      message: 'the job to start on B',
    });
    b.app.child.kill('SIGTERM');
    // enableShutdownHooks(): once app.close() resolved, Nest re-sends the signal to the process.
    expect((await b.app.exited).signal).toBe('SIGTERM');
    expect(b.app.events.find((line) => line.event === 'job-aborted' && line.id === id)?.kind).toBe(
      'shutdown',
    );
    expect((await jobState(a, 'shared', id, 'waiting')).attemptsMade).toBe(0);
    expect((await request(c.port, '/work/start-shared')).status).toBe(200);
    const done = await jobState(a, 'shared', id, 'completed');
    expect(done.returnvalue).toEqual({ doneBy: 'c' });
    const live = (await request(a.port, '/work/instances')).json as Array<{ instanceId: string }>;
    expect(live.map((each) => each.instanceId)).toEqual(['a', 'c']);
  });

  it('kill -9 C: it drops out of the listing within the lease', async () => {
    const { a, c } = instances;
    const slow = startRequest(c.port, '/work/slow?ms=20000');
    await c.app.next('handler-start');
    await waitFor(async () => (await fleetListing(a)).some((each) => each.instanceId === 'c'), {
      timeoutMs: 5_000,
      intervalMs: 50,
      message: "C's request in the listing",
    });
    c.app.child.kill('SIGKILL');
    await c.app.exited;
    const killedAt = performance.now();
    await slow.settled();
    for (;;) {
      const live = (await request(a.port, '/work/instances')).json as Array<{ instanceId: string }>;
      if (!live.some((each) => each.instanceId === 'c')) break;
      expect(performance.now() - killedAt).toBeLessThan(LEASE_MS + 1_000);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect((await fleetListing(a)).some((each) => each.instanceId === 'c')).toBe(false);
  });

  it('with Redis stopped: local cancellation still works, fleet calls fail fast with 503, nothing crashes', async () => {
    const { a } = instances;
    await redis.stop();
    const slow = startRequest(a.port, '/work/slow?ms=20000');
    const started = await a.app.next('handler-start');
    const local = await post(a, `/cancellation/requests/${String(started.id)}/cancel`);
    expect(local.status).toBe(200);
    const answer = await slow.settled();
    expect('response' in answer && answer.response.status).toBe(503);

    const before = performance.now();
    const listing = await request(a.port, '/cancellation/requests?fleet=true');
    const cancel = await post(a, '/cancellation/requests/anything/cancel?fleet=true');
    expect(performance.now() - before).toBeLessThan(3_000);
    expect(listing.status).toBe(503);
    expect(String((listing.json as { message: string }).message)).toMatch(/fleet's Redis is unreachable/);
    expect(cancel.status).toBe(503);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(a.app.child.exitCode).toBeNull();
    expect((await request(a.port, '/cancellation/requests')).status).toBe(200);
    expect(a.app.events.filter((line) => line.event === 'log' && line.level === 'error')).toEqual([]);
  });
});
