// BullMQ jobs with nestjs-cancellation/bullmq, in process against a real Redis (scripts/redis.sh): a job's
// processor sees its own signal through CancellationService (singleton and request-scoped processors); the
// worker's cancelJob() and the registry's cancel(id) fail it without retry; its budget fails it as a timeout;
// at shutdown the workers stop taking jobs, a job that ends within the grace period completes, a job cut by
// the shutdown goes back to its queue with no attempt spent, and app.close() never waits on a processor that
// ignores its signal. Both HTTP adapters (a request in flight and a job in flight are listed together).
import 'reflect-metadata';
import { Controller, Get, Inject, Scope } from '@nestjs/common';
import type { DynamicModule, Type } from '@nestjs/common';
import { BullModule, Processor, WorkerHost, getQueueToken } from '@nestjs/bullmq';
import type { Job, Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { setTimeout as delay } from 'node:timers/promises';
import { CancellationModule, CancellationRegistry, CancellationService } from 'nestjs-cancellation';
import type { CancellationError, CancellationModuleOptions } from 'nestjs-cancellation';
import { CancellationBullModule } from 'nestjs-cancellation/bullmq';
import type { JobCancellationOptions } from 'nestjs-cancellation/bullmq';
import { FleetRegistry } from 'nestjs-cancellation/fleet';
import type { FleetWork } from 'nestjs-cancellation/fleet';
import { queuesModule } from './readme/queues.js';
import { ADAPTERS, createApp, request, rootModule, startRequest, waitFor } from './utils/harness.js';
import type { AdapterName, TestApp } from './utils/harness.js';
import { startRedis } from './utils/redis.js';
import type { TestRedis } from './utils/redis.js';

/** What one run of a job's processor saw. */
interface Run {
  readonly queue: string;
  readonly jobId: string;
  readonly signal: AbortSignal;
  readonly remaining: number | undefined;
  readonly attempt: number;
  ended?: 'returned' | 'threw';
}

const runs: Run[] = [];
let redis: TestRedis;
let queueCount = 0;

/** A processor for `queue` that waits `job.data.ms` on its signal (on a plain timer with `ignore: true`). */
function processorFor(queue: string, scope: Scope = Scope.DEFAULT): Type {
  @Processor({ name: queue, scope }, { concurrency: 4 })
  class JobProcessor extends WorkerHost {
    constructor(@Inject(CancellationService) private readonly cancellation: CancellationService) {
      super();
    }

    async process(job: Job<{ ms: number; ignore?: boolean }>): Promise<string> {
      const { signal, remainingMs } = this.cancellation;
      const run: Run = {
        queue,
        jobId: job.id!,
        signal,
        remaining: remainingMs,
        attempt: job.attemptsStarted,
      };
      runs.push(run);
      try {
        await delay(job.data.ms, undefined, job.data.ignore ? {} : { signal });
        run.ended = 'returned';
        return 'done';
      } catch (err) {
        run.ended = 'threw';
        throw err;
      }
    }
  }
  return JobProcessor;
}

@Controller()
class SlowController {
  constructor(@Inject(CancellationService) private readonly cancellation: CancellationService) {}

  @Get('slow')
  async slow(): Promise<string> {
    await delay(10_000, undefined, { signal: this.cancellation.signal });
    return 'late';
  }
}

interface Harness {
  readonly app: TestApp;
  readonly queue: Queue;
  readonly registry: CancellationRegistry;
  readonly connection: Redis;
  readonly processor: Type;
  close(): Promise<number>;
}

async function start(
  adapter: AdapterName,
  options: CancellationModuleOptions = {},
  jobs: JobCancellationOptions = {},
  scope: Scope = Scope.DEFAULT,
): Promise<Harness> {
  const name = `jobs-${process.pid}-${++queueCount}`;
  // In native ESM bullmq cannot load ioredis itself: it is given a client.
  const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
  const processor = processorFor(name, scope);
  const module: DynamicModule = rootModule({
    imports: [
      CancellationModule.forRoot(options),
      CancellationBullModule.forRoot({ settleTimeoutMs: 1_000, ...jobs }),
      BullModule.forRoot({ connection }),
      BullModule.registerQueue({ name }),
    ],
    controllers: [SlowController],
    providers: [processor],
  });
  const app = await createApp(adapter, module).catch((err: unknown) => {
    connection.disconnect();
    throw err;
  });
  const queue = app.app.get<Queue>(getQueueToken(name));
  return {
    app,
    queue,
    registry: app.app.get(CancellationRegistry),
    connection,
    processor,
    close: async () => {
      const took = await app.close();
      connection.disconnect();
      return took;
    },
  };
}

async function runOf(queue: Queue, jobId: string): Promise<Run> {
  return waitFor(() => runs.find((run) => run.queue === queue.name && run.jobId === jobId), {
    timeoutMs: 10_000,
    message: `job ${jobId} to start`,
  });
}

async function stateOf(queue: Queue, jobId: string, wanted: string): Promise<Job> {
  const deadline = performance.now() + 10_000;
  for (;;) {
    const state = await queue.getJobState(jobId);
    if (state === wanted) return (await queue.getJob(jobId))!;
    if (performance.now() > deadline) throw new Error(`job ${jobId} is ${state}, not ${wanted}`);
    await delay(20);
  }
}

function kindOf(run: Run): string | undefined {
  return (run.signal.reason as CancellationError | undefined)?.kind;
}

beforeAll(async () => {
  redis = await startRedis();
});

afterAll(async () => {
  await redis?.stop();
});

describe.each(ADAPTERS)('BullMQ jobs (%s)', (adapter) => {
  let harness: Harness | undefined;

  afterEach(async () => {
    await harness?.close();
    harness = undefined;
  });

  it("gives the processor the job's signal, lists the job with the requests in flight, and cancel(id) fails it without retry", async () => {
    harness = await start(adapter);
    const { queue, registry, app } = harness;
    const job = await queue.add('report', { ms: 20_000 }, { attempts: 3 });
    const run = await runOf(queue, job.id!);
    const slow = startRequest(app.port, '/slow');
    const id = `${queue.name}:${job.id}`;
    const listed = await waitFor(() => {
      const entries = registry.inFlight();
      return entries.some((entry) => entry.method === 'GET') && entries.find((entry) => entry.id === id);
    });
    expect(listed).toMatchObject({ method: 'JOB', route: `${queue.name}/report` });
    expect(run.signal.aborted).toBe(false);

    expect(registry.cancel(id, 'Stopped by an operator')).toBe(1);
    const failed = await stateOf(queue, job.id!, 'failed');
    expect(kindOf(run)).toBe('manual');
    expect(run.ended).toBe('threw');
    expect(failed.failedReason).toBe('Stopped by an operator');
    expect(failed.attemptsMade).toBe(1);
    expect(runs.filter((each) => each.jobId === job.id && each.queue === queue.name)).toHaveLength(1);
    expect(registry.inFlight().find((entry) => entry.id === id)).toBeUndefined();
    slow.abort();
  });

  it("aborts the signal on the worker's cancelJob(), with its reason, and fails the job without retry", async () => {
    harness = await start(adapter);
    const { queue, app } = harness;
    const job = await queue.add('export', { ms: 20_000 }, { attempts: 3 });
    const run = await runOf(queue, job.id!);
    const { worker } = app.app.get<WorkerHost>(harness.processor);
    expect(worker.cancelJob(job.id!, 'Cancelled from the dashboard')).toBe(true);
    const failed = await stateOf(queue, job.id!, 'failed');
    expect(kindOf(run)).toBe('manual');
    expect((run.signal.reason as Error).message).toBe('Cancelled from the dashboard');
    expect(failed.attemptsMade).toBe(1);
  });

  it('aborts the signal when the job budget is spent: the job fails as a timeout', async () => {
    harness = await start(adapter, {}, { jobTimeoutMs: (job) => (job.name === 'short' ? 150 : undefined) });
    const { queue } = harness;
    const job = await queue.add('short', { ms: 20_000 });
    const run = await runOf(queue, job.id!);
    expect(run.remaining).toBeGreaterThan(0);
    expect(run.remaining).toBeLessThanOrEqual(150);
    const failed = await stateOf(queue, job.id!, 'failed');
    expect(kindOf(run)).toBe('timeout');
    expect(failed.failedReason).toBe("The job's time budget was spent");
    const other = await queue.add('long', { ms: 50 });
    const otherRun = await runOf(queue, other.id!);
    expect(otherRun.remaining).toBeUndefined();
    await stateOf(queue, other.id!, 'completed');
  });

  it('gives a request-scoped processor the signal of its job too', async () => {
    harness = await start(adapter, {}, {}, Scope.REQUEST);
    const { queue, registry } = harness;
    const job = await queue.add('scoped', { ms: 20_000 });
    const run = await runOf(queue, job.id!);
    expect(registry.cancel(`${queue.name}:${job.id}`)).toBe(1);
    await stateOf(queue, job.id!, 'failed');
    expect(kindOf(run)).toBe('manual');
    const done = await queue.add('scoped', { ms: 30 });
    await stateOf(queue, done.id!, 'completed');
  });

  it('at shutdown: a job that ends within the grace period completes, and the workers take no new job', async () => {
    harness = await start(adapter, { shutdownGracePeriodMs: 5_000 });
    const { queue } = harness;
    const job = await queue.add('quick', { ms: 600 });
    const run = await runOf(queue, job.id!);
    const closing = harness.close();
    await delay(100);
    const late = await queue.add('late', { ms: 10 });
    await closing;
    expect(run.ended).toBe('returned');
    expect(run.signal.aborted).toBe(false);
    const probe = new Redis(redis.url, { maxRetriesPerRequest: null });
    try {
      const { Queue: QueueClass } = await import('bullmq');
      const reader = new QueueClass(queue.name, { connection: probe });
      expect(await (await reader.getJob(job.id!))!.getState()).toBe('completed');
      expect(await (await reader.getJob(late.id!))!.getState()).toBe('waiting');
      await reader.close();
    } finally {
      probe.disconnect();
    }
    harness = undefined;
  });

  it('at shutdown: a job cut after the grace period goes back to its queue with no attempt spent; app.close() does not wait on a processor that ignores its signal', async () => {
    harness = await start(adapter, { shutdownGracePeriodMs: 200 }, { settleTimeoutMs: 500 });
    const { queue } = harness;
    const honours = await queue.add('honours', { ms: 30_000 }, { attempts: 1 });
    const ignores = await queue.add('ignores', { ms: 4_000, ignore: true }, { attempts: 1 });
    const [honoursRun, ignoresRun] = [await runOf(queue, honours.id!), await runOf(queue, ignores.id!)];
    const took = await harness.close();
    harness = undefined;
    expect(took).toBeLessThan(3_000);
    expect(kindOf(honoursRun)).toBe('shutdown');
    expect(kindOf(ignoresRun)).toBe('shutdown');
    expect(honoursRun.ended).toBe('threw');
    expect(ignoresRun.ended).toBeUndefined();
    const probe = new Redis(redis.url, { maxRetriesPerRequest: null });
    try {
      const { Queue: QueueClass } = await import('bullmq');
      const reader = new QueueClass(queue.name, { connection: probe });
      const back = (await reader.getJob(honours.id!))!;
      expect(await back.getState()).toBe('waiting');
      expect(back.attemptsMade).toBe(0);
      // The ignored one still holds its lock: BullMQ's stalled check hands it on once the lock expires.
      expect(await (await reader.getJob(ignores.id!))!.getState()).toBe('active');
      await reader.obliterate({ force: true });
      await reader.close();
    } finally {
      probe.disconnect();
    }
    // The processor that ignored its signal ends on its own, for nobody: nothing of the closed worker is left.
    await waitFor(() => ignoresRun.ended, { timeoutMs: 6_000, message: 'the ignoring processor to end' });
  });

  it('answers requests as before beside the workers', async () => {
    harness = await start(adapter, { timeoutMs: 100 });
    const response = await request(harness.app.port, '/slow');
    expect(response.status).toBe(504);
  });
});

describe.each(ADAPTERS)('the docs example: a queue and the fleet on one Redis (%s)', (adapter) => {
  it('runs the report job with its progress; the fleet lists it and FleetRegistry.cancel() fails it without retry', async () => {
    const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
    const app = await createApp(adapter, queuesModule(redis.url, connection));
    try {
      const queue = app.app.get<Queue>(getQueueToken('reports'));
      const fleet = app.app.get(FleetRegistry);
      const job = await queue.add('report', { rows: 2_000 }, { attempts: 3 });
      let listed: FleetWork | undefined;
      const deadline = performance.now() + 10_000;
      while (listed === undefined && performance.now() < deadline) {
        listed = (await fleet.inFlight()).find((work) => work.id === `reports:${job.id}`);
        if (listed === undefined) await delay(20);
      }
      expect(listed).toMatchObject({ method: 'JOB', route: 'reports/report', instanceId: fleet.instanceId });
      const progressed = await waitForProgress(queue, job.id!);
      expect(progressed).toBeGreaterThan(0);
      expect(await fleet.cancel(`reports:${job.id}`, 'Not needed any more')).toMatchObject({ cancelled: 1 });
      const failed = await stateOf(queue, job.id!, 'failed');
      expect(failed.failedReason).toBe('Not needed any more');
      expect(failed.attemptsMade).toBe(1);
    } finally {
      await app.close();
      connection.disconnect();
    }
  });
});

async function waitForProgress(queue: Queue, jobId: string): Promise<number> {
  const deadline = performance.now() + 10_000;
  for (;;) {
    const progress = Number((await queue.getJob(jobId))?.progress ?? 0);
    if (progress > 0) return progress;
    if (performance.now() > deadline) throw new Error(`job ${jobId} made no progress`);
    await delay(20);
  }
}
