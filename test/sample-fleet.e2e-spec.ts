// The sample app's render queue and fleet panel (sample-app/queue), as real processes of the compiled app
// (`npm run build:sample`, which `npm test` runs before jest): without REDIS_URL both are off and the app says
// so; with it, two instances on one Redis of the suite's own show each other's work in the demo page's
// in-flight panel (GET /demo/in-flight), each entry with its instance, and a render job queued on one is
// cancelled from the other wherever it runs.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { waitFor } from './utils/harness.js';
import { startPrivateRedis } from './utils/redis.js';
import type { PrivateRedis } from './utils/redis.js';

const ENTRY = fileURLToPath(new URL('../dist-sample/main.js', import.meta.url));

interface Sample {
  readonly child: ChildProcess;
  readonly url: string;
  readonly lines: string[];
}

async function startSample(env: NodeJS.ProcessEnv): Promise<Sample> {
  if (!existsSync(ENTRY)) throw new Error(`${ENTRY} is missing: run \`npm run build:sample\` first`);
  const full: NodeJS.ProcessEnv = { ...process.env, PORT: '0', HOST: '127.0.0.1', NO_COLOR: '1', ...env };
  delete full.NODE_OPTIONS;
  delete full.DOWNSTREAM_URL;
  if (env.REDIS_URL === undefined) delete full.REDIS_URL;
  full.DIGEST_EVERY_MS = '3600000';
  const child = spawn(process.execPath, [ENTRY], { env: full, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`the sample app did not start:\n${lines.join('\n')}`)),
      20_000,
    );
    for (const stream of [child.stdout!, child.stderr!]) {
      createInterface({ input: stream }).on('line', (raw) => {
        // eslint-disable-next-line no-control-regex
        const line = raw.replace(/\x1b\[[0-9;]*m/g, '');
        lines.push(line);
        const found = /Listening on (http:\/\/\S+)/.exec(line);
        if (found) {
          clearTimeout(timer);
          resolve(found[1]);
        }
      });
    }
    child.once('exit', () => reject(new Error(`the sample app exited:\n${lines.join('\n')}`)));
  });
  return { child, url, lines };
}

async function stop(sample: Sample | undefined): Promise<void> {
  if (sample === undefined || sample.child.exitCode !== null || sample.child.signalCode !== null) return;
  const exited = new Promise((resolve) => sample.child.once('exit', resolve));
  sample.child.kill('SIGTERM');
  await exited;
}

async function json<T>(url: string, init?: RequestInit): Promise<T> {
  const response = await fetch(url, init);
  if (!response.ok)
    throw new Error(`${init?.method ?? 'GET'} ${url}: ${response.status} ${await response.text()}`);
  return (await response.json()) as T;
}

describe('the sample app without REDIS_URL', () => {
  let sample: Sample | undefined;
  afterAll(() => stop(sample));

  it('starts with the queue and the fleet off, and says so', async () => {
    sample = await startSample({});
    expect(sample.lines.some((line) => line.includes('REDIS_URL is not set: the render queue'))).toBe(true);
    expect(await json(`${sample.url}/demo/features`)).toEqual({ queue: false });
    expect(await json(`${sample.url}/demo/in-flight`)).toEqual([]);
  });
});

describe('two instances of the sample app on one Redis', () => {
  let redis: PrivateRedis;
  const samples: Sample[] = [];

  beforeAll(async () => {
    redis = await startPrivateRedis('sample');
    samples.push(
      ...(await Promise.all([
        startSample({ REDIS_URL: redis.url, INSTANCE_ID: 'one' }),
        startSample({ REDIS_URL: redis.url, INSTANCE_ID: 'two' }),
      ])),
    );
  }, 60_000);

  afterAll(async () => {
    await Promise.all(samples.map(stop));
    await redis?.stop();
  });

  it("lists each other's render jobs in the in-flight panel, and cancels one from the other instance", async () => {
    const [one, two] = samples;
    expect(await json(`${one.url}/demo/features`)).toEqual({ queue: true, instanceId: 'one' });
    const queued: string[] = [];
    for (let i = 0; i < 4; i++) {
      const { id } = await json<{ id: string }>(`${one.url}/queue/jobs`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ steps: 200, stepMs: 100 }),
      });
      queued.push(id);
    }
    type Entry = { id: string; method: string; instanceId: string };
    // Whichever instance took each job, the panel of either lists all four, each with its instance.
    const listed = await waitFor(
      async () => {
        const entries = await json<Entry[]>(`${two.url}/demo/in-flight`);
        const jobs = entries.filter((entry) => entry.method === 'JOB');
        return jobs.length === 4 ? jobs : undefined;
      },
      { timeoutMs: 10_000, intervalMs: 50, message: 'the four jobs in the panel' },
    );
    expect(listed.map((entry) => entry.id).sort()).toEqual(queued.map((id) => `renders:${id}`).sort());
    for (const entry of listed) expect(['one', 'two']).toContain(entry.instanceId);

    const target = listed.find((entry) => entry.instanceId === 'one') ?? listed[0];
    const jobId = target.id.slice('renders:'.length);
    const result = await json<{ cancelled: number }>(`${two.url}/queue/jobs/${jobId}/cancel`, {
      method: 'POST',
    });
    expect(result.cancelled).toBe(1);
    const failed = await waitFor(
      async () => {
        const jobs = await json<Array<{ id: string; state: string; failedReason?: string }>>(
          `${one.url}/queue/jobs`,
        );
        return jobs.find((job) => job.id === jobId && job.state === 'failed');
      },
      { timeoutMs: 10_000, intervalMs: 50, message: 'the cancelled job to fail' },
    );
    expect(failed.failedReason).toBe('Cancelled from the demo page');
  });
});
