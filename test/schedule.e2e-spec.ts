// Scheduled jobs (@nestjs/schedule's @Cron, @Interval, @Timeout) with nestjs-cancellation/schedule: a scope per
// run whose signal aborts at shutdown after the grace period, on the job's @JobTimeout budget and on cancel(id);
// runs listed by inFlight(); app.close() never resolves before the aborted runs have settled. Real scheduler,
// real timers; the docs/contexts.md examples (test/readme/schedule.ts) run here too; SIGTERM in a child process.
import 'reflect-metadata';
import { Controller, Get, Injectable } from '@nestjs/common';
import type { Type } from '@nestjs/common';
import { Cron, CronExpression, Interval, ScheduleModule, SchedulerRegistry, Timeout } from '@nestjs/schedule';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { CancellationModule, CancellationRegistry, CancellationService } from 'nestjs-cancellation';
import type {
  CancellationError,
  CancellationModuleOptions,
  CancelledEvent,
  SettledEvent,
} from 'nestjs-cancellation';
import { CancellationScheduleModule, JobTimeout } from 'nestjs-cancellation/schedule';
import { JobsModule, reports } from './readme/schedule.js';
import { FixtureApp, fixtureNestVersion, spawnFixture } from './utils/fixture.js';
import { ADAPTERS, createApp, request, rootModule, waitFor } from './utils/harness.js';
import type { AdapterName, TestApp } from './utils/harness.js';

const FIXTURE = fileURLToPath(new URL('./fixtures/schedule-app.mjs', import.meta.url));

/** What one run of a probe job saw. */
interface Run {
  readonly job: string;
  readonly signal: AbortSignal;
  readonly id: string | undefined;
  readonly remaining: number | undefined;
  readonly startedAt: number;
  abortedAt?: number;
  endedAt?: number;
  finished?: boolean;
}

const runs: Run[] = [];

function runsOf(job: string): Run[] {
  return runs.filter((run) => run.job === job);
}

function kindOf(run: Run): string | undefined {
  return (run.signal.reason as CancellationError | undefined)?.kind;
}

/**
 * Records a run of `job` and waits `ms` on its signal (`honours: false`: on a plain timer), then, once its
 * signal aborted, `cleanupMs` more on a plain timer (a job that tidies up before it ends).
 */
async function hold(
  cancellation: CancellationService,
  job: string,
  ms: number,
  { honours = true, cleanupMs = 0 } = {},
): Promise<void> {
  const { signal, requestId, remainingMs } = cancellation;
  const run: Run = { job, signal, id: requestId, remaining: remainingMs, startedAt: performance.now() };
  runs.push(run);
  signal.addEventListener('abort', () => (run.abortedAt = performance.now()), { once: true });
  try {
    await sleep(ms, undefined, honours ? { signal } : {});
    run.finished = true;
  } finally {
    if (signal.aborted && cleanupMs > 0) await sleep(cleanupMs);
    run.endedAt = performance.now();
  }
}

@Injectable()
class CronJobs {
  constructor(private readonly cancellation: CancellationService) {}

  /** Every second, a run that takes 30 s and then 150 ms to tidy up once aborted. */
  @Cron(CronExpression.EVERY_SECOND, { name: 'probe-cron' })
  export(): Promise<void> {
    return hold(this.cancellation, 'probe-cron', 30_000, { cleanupMs: 150 });
  }
}

@Injectable()
class SerialJobs {
  constructor(private readonly cancellation: CancellationService) {}

  /** Started by hand (fireOnTick); cron skips a tick while the previous run is going. */
  @Cron('0 0 1 1 *', { name: 'probe-serial', waitForCompletion: true })
  serial(): Promise<void> {
    return hold(this.cancellation, 'probe-serial', 300);
  }
}

@Injectable()
@JobTimeout(5_000)
class BudgetJobs {
  constructor(private readonly cancellation: CancellationService) {}

  @Timeout('probe-budget', 20)
  @JobTimeout(200)
  limited(): Promise<void> {
    return hold(this.cancellation, 'probe-budget', 10_000);
  }

  /** The class's budget. */
  @Timeout('probe-class-budget', 20)
  classBudget(): Promise<void> {
    return hold(this.cancellation, 'probe-class-budget', 50);
  }

  @Timeout('probe-no-budget', 20)
  @JobTimeout(false)
  unlimited(): Promise<void> {
    return hold(this.cancellation, 'probe-no-budget', 50);
  }
}

@Injectable()
class OverlapJobs {
  constructor(private readonly cancellation: CancellationService) {}

  /** Every 50 ms, runs of 400 ms: several at once. */
  @Interval('probe-overlap', 50)
  overlap(): Promise<void> {
    return hold(this.cancellation, 'probe-overlap', 400);
  }
}

@Injectable()
class StubbornJobs {
  constructor(private readonly cancellation: CancellationService) {}

  /** Ignores its signal: 600 ms whatever happens. */
  @Timeout('probe-stubborn', 20)
  stubborn(): Promise<void> {
    return hold(this.cancellation, 'probe-stubborn', 600, { honours: false });
  }
}

@Injectable()
class KindJobs {
  constructor(private readonly cancellation: CancellationService) {}

  @Cron(CronExpression.EVERY_SECOND, { name: 'kind-cron' })
  cron(): Promise<void> {
    return hold(this.cancellation, 'kind-cron', 30_000);
  }

  /** Unnamed: listed as `KindJobs.every200`. */
  @Interval(200)
  every200(): Promise<void> {
    return hold(this.cancellation, 'kind-interval', 30_000);
  }

  @Timeout('kind-timeout', 10)
  once(): Promise<void> {
    return hold(this.cancellation, 'kind-timeout', 30_000);
  }
}

/** Each job of `KindJobs` has a run in flight. */
function eachKindRuns(): boolean {
  return ['kind-cron', 'kind-interval', 'kind-timeout'].every((job) => runsOf(job).length > 0);
}

@Injectable()
class QuickJobs {
  constructor(private readonly cancellation: CancellationService) {}

  @Interval('probe-quick', 30)
  quick(): Promise<void> {
    return hold(this.cancellation, 'probe-quick', 10);
  }

  /** Called by hand from other code, inside or outside a scope. */
  @Timeout('probe-direct', 60_000)
  direct(): Promise<void> {
    return hold(this.cancellation, 'probe-direct', 10);
  }
}

@Controller('direct')
class DirectController {
  constructor(
    private readonly jobs: QuickJobs,
    private readonly cancellation: CancellationService,
  ) {}

  @Get()
  async direct(): Promise<string | undefined> {
    await this.jobs.direct();
    return this.cancellation.requestId;
  }
}

async function start(
  adapter: AdapterName,
  jobs: Type<unknown>,
  options: CancellationModuleOptions = {},
  controllers: Type<unknown>[] = [],
): Promise<TestApp> {
  return createApp(
    adapter,
    rootModule({
      imports: [ScheduleModule.forRoot(), CancellationModule.forRoot(options), CancellationScheduleModule],
      controllers,
      providers: [jobs],
    }),
  );
}

describe.each(ADAPTERS)('scheduled runs (%s)', (adapter) => {
  let t: TestApp | undefined;

  beforeEach(() => {
    runs.length = 0;
  });

  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  it('a cron tick in progress at app.close() is aborted after the grace period; close() resolves once it has ended', async () => {
    t = await start(adapter, CronJobs, { shutdownGracePeriodMs: 300 });
    await waitFor(() => runsOf('probe-cron').length === 1, { timeoutMs: 3000, message: 'a cron tick' });
    const [run] = runsOf('probe-cron');
    const registry = t.app.get(CancellationRegistry);
    expect(registry.inFlight()).toEqual([
      expect.objectContaining({ id: run.id, method: 'CRON', route: 'probe-cron' }),
    ]);

    const closingAt = performance.now();
    const took = await t.close();
    const closedAt = performance.now();
    expect(kindOf(run)).toBe('shutdown');
    // Aborted once the grace period was over, not before; and close() waited for the 150 ms of tidying up.
    expect((run.abortedAt ?? 0) - closingAt).toBeGreaterThanOrEqual(280);
    expect(run.endedAt).toBeDefined();
    expect(run.endedAt ?? Infinity).toBeLessThanOrEqual(closedAt);
    expect((run.endedAt ?? 0) - (run.abortedAt ?? 0)).toBeGreaterThanOrEqual(140);
    expect(took).toBeLessThan(3000);
    // No tick started during the drain, and nothing was logged as an error.
    expect(runsOf('probe-cron')).toHaveLength(1);
    expect(t.logs.errors).toEqual([]);
  });

  it('a tick that fires once shutdown has begun is skipped', async () => {
    t = await start(adapter, CronJobs, { shutdownGracePeriodMs: 1000 });
    await waitFor(() => runsOf('probe-cron').length === 1, { timeoutMs: 3000, message: 'a cron tick' });
    const job = t.app.get(SchedulerRegistry).getCronJob('probe-cron');
    const closing = t.close();
    await sleep(50);
    await job.fireOnTick();
    expect(runsOf('probe-cron')).toHaveLength(1);
    expect(t.logs.dump()).toMatch(/CRON probe-cron skipped: the application is shutting down/);
    await closing;
  });

  it('with no grace period, close() aborts the runs at once and resolves promptly', async () => {
    t = await start(adapter, KindJobs);
    await waitFor(eachKindRuns, { timeoutMs: 3000, message: 'one run of each job' });
    const took = await t.close();
    expect(runs.length).toBeGreaterThanOrEqual(3);
    expect(new Set(runs.map(kindOf))).toEqual(new Set(['shutdown']));
    expect(runs.every((run) => run.endedAt !== undefined)).toBe(true);
    expect(took).toBeLessThan(1000);
  });

  it('close() waits for an aborted run that ignores its signal, up to shutdownTimeoutMs, then names it', async () => {
    t = await start(adapter, StubbornJobs, { shutdownTimeoutMs: 150 });
    const run = await waitFor(() => runsOf('probe-stubborn')[0], { message: 'the run' });
    const took = await t.close();
    expect(kindOf(run)).toBe('shutdown');
    expect(run.endedAt).toBeUndefined(); // 600 ms of work that ignores its signal: still going
    expect(took).toBeGreaterThanOrEqual(100);
    expect(took).toBeLessThan(500);
    const warning = t.logs.lines.find(
      (line) => line.level === 'warn' && line.text.includes('probe-stubborn'),
    );
    expect(warning?.text).toMatch(
      /TIMEOUT probe-stubborn \[[0-9a-f-]{36}\] is still running .* after its signal aborted/,
    );
    await waitFor(() => run.endedAt, { message: 'the run to end after all' });
  });

  it('with the default shutdownTimeoutMs, close() waits until the run that ignores its signal has ended', async () => {
    t = await start(adapter, StubbornJobs);
    const run = await waitFor(() => runsOf('probe-stubborn')[0], { message: 'the run' });
    await t.close();
    const closedAt = performance.now();
    expect(kindOf(run)).toBe('shutdown');
    expect(run.endedAt).toBeDefined();
    expect(run.endedAt ?? Infinity).toBeLessThanOrEqual(closedAt);
    expect(t.logs.lines.filter((line) => line.level === 'warn')).toEqual([]);
  });

  it('inFlight() lists each run with its kind and its job name', async () => {
    t = await start(adapter, KindJobs);
    await waitFor(eachKindRuns, { timeoutMs: 3000, message: 'one run of each job' });
    const listed = t.app
      .get(CancellationRegistry)
      .inFlight()
      .map(({ method, route }) => `${method} ${route}`);
    expect(new Set(listed)).toEqual(
      new Set(['CRON kind-cron', 'INTERVAL KindJobs.every200', 'TIMEOUT kind-timeout']),
    );
    // Ids are the runs' own, as CancellationService.requestId gives them inside the run.
    const ids = new Set(
      t.app
        .get(CancellationRegistry)
        .inFlight()
        .map((work) => work.id),
    );
    expect(new Set(runs.map((run) => run.id))).toEqual(ids);
  });

  it('a run over its @JobTimeout budget is aborted (timeout); the class budget and @JobTimeout(false) apply', async () => {
    t = await start(adapter, BudgetJobs);
    const registry = t.app.get(CancellationRegistry);
    const cancelled: CancelledEvent[] = [];
    const settled: SettledEvent[] = [];
    registry.onCancelled((event) => cancelled.push(event));
    registry.onSettled((event) => settled.push(event));
    await waitFor(() => runsOf('probe-budget')[0]?.endedAt, { timeoutMs: 3000, message: 'the run to end' });
    const [run] = runsOf('probe-budget');
    expect(kindOf(run)).toBe('timeout');
    expect(run.remaining).toBeGreaterThan(100);
    expect(run.remaining).toBeLessThanOrEqual(200);
    const lasted = (run.abortedAt ?? 0) - run.startedAt;
    expect(lasted).toBeGreaterThanOrEqual(150);
    expect(lasted).toBeLessThan(1500);
    expect(cancelled).toEqual([
      expect.objectContaining({ id: run.id, kind: 'timeout', method: 'TIMEOUT', route: 'probe-budget' }),
    ]);
    expect(settled).toEqual([expect.objectContaining({ id: run.id, kind: 'timeout' })]);

    await waitFor(() => runsOf('probe-class-budget')[0]?.finished && runsOf('probe-no-budget')[0]?.finished);
    expect(runsOf('probe-class-budget')[0].remaining).toBeGreaterThan(4000);
    expect(runsOf('probe-no-budget')[0].remaining).toBeUndefined();
    expect(registry.inFlight()).toEqual([]);
    expect(t.logs.errors).toEqual([]);
  });

  it('two runs never share a signal: overlapping runs of one interval each have their own', async () => {
    t = await start(adapter, OverlapJobs);
    await waitFor(() => runsOf('probe-overlap').length >= 4, { message: 'four overlapping runs' });
    const overlapping = runsOf('probe-overlap').slice(0, 4);
    expect(new Set(overlapping.map((run) => run.signal)).size).toBe(4);
    expect(new Set(overlapping.map((run) => run.id)).size).toBe(4);
    const listed = t.app.get(CancellationRegistry).inFlight();
    expect(listed.filter((work) => work.route === 'probe-overlap').length).toBeGreaterThanOrEqual(2);
    await waitFor(() => overlapping.every((run) => run.endedAt !== undefined), {
      message: 'the runs to end',
    });
    expect(overlapping.every((run) => run.finished && !run.signal.aborted)).toBe(true);
  });

  it("cron's waitForCompletion: true skips a tick while the run is going (the run's Promise is the method's)", async () => {
    t = await start(adapter, SerialJobs);
    const job = t.app.get(SchedulerRegistry).getCronJob('probe-serial');
    const first = job.fireOnTick();
    await waitFor(() => runsOf('probe-serial').length === 1, { message: 'the first run' });
    await job.fireOnTick(); // skipped: the first run is still going
    expect(runsOf('probe-serial')).toHaveLength(1);
    await first;
    expect(runsOf('probe-serial')[0].finished).toBe(true);
    await job.fireOnTick();
    expect(runsOf('probe-serial')).toHaveLength(2);
  });

  it('cancel(id) aborts that run only (manual); the others of the same job go on', async () => {
    t = await start(adapter, OverlapJobs);
    await waitFor(() => runsOf('probe-overlap').length >= 3, { message: 'three overlapping runs' });
    const [first, second, third] = runsOf('probe-overlap');
    const registry = t.app.get(CancellationRegistry);
    expect(registry.cancel(second.id ?? '', 'Stopped by an operator')).toBe(1);
    expect(kindOf(second)).toBe('manual');
    expect((second.signal.reason as Error).message).toBe('Stopped by an operator');
    expect(registry.cancel(second.id ?? '')).toBe(0);
    await waitFor(() => first.endedAt && second.endedAt && third.endedAt, { message: 'the runs to end' });
    expect([first.finished, second.finished, third.finished]).toEqual([true, undefined, true]);
    expect([first, third].map((run) => run.signal.aborted)).toEqual([false, false]);
    expect(t.logs.errors).toEqual([]);
  });

  it('a cancelled run that ignores its signal stays listed as cancelled until it settles', async () => {
    t = await start(adapter, StubbornJobs);
    const registry = t.app.get(CancellationRegistry);
    const settled: SettledEvent[] = [];
    registry.onSettled((event) => settled.push(event));
    const run = await waitFor(() => runsOf('probe-stubborn')[0], { message: 'the run' });
    expect(registry.cancel(run.id ?? '')).toBe(1);
    expect(registry.inFlight()).toEqual([
      expect.objectContaining({
        id: run.id,
        method: 'TIMEOUT',
        route: 'probe-stubborn',
        cancelled: 'manual',
      }),
    ]);
    await waitFor(() => run.endedAt, { message: 'the run to end' });
    expect(registry.inFlight()).toEqual([]);
    expect(settled).toEqual([expect.objectContaining({ id: run.id, kind: 'manual' })]);
    expect(settled[0].settledAfterMs).toBeGreaterThan(200);
  });

  it('a run that completes never sees its signal abort, not even at shutdown', async () => {
    t = await start(adapter, QuickJobs);
    const service = t.app.get(CancellationService);
    await waitFor(() => runsOf('probe-quick').filter((run) => run.finished).length >= 3);
    await t.close();
    const done = runsOf('probe-quick').filter((run) => run.finished);
    expect(done.length).toBeGreaterThanOrEqual(3);
    expect(done.some((run) => run.signal.aborted)).toBe(false);
    expect(new Set(done.map((run) => run.signal)).size).toBe(done.length);
    expect(done.every((run) => run.signal !== service.shutdownSignal)).toBe(true);
    // Outside any run, the service still speaks of the application.
    expect(service.signal).toBe(service.shutdownSignal);
  });

  it('runs get their scope with asyncContext: false too (that option concerns requests)', async () => {
    t = await start(adapter, QuickJobs, { asyncContext: false });
    const run = await waitFor(() => runsOf('probe-quick').find((r) => r.finished), { message: 'a run' });
    expect(run.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(run.signal).not.toBe(t.app.get(CancellationService).shutdownSignal);
  });

  it('a scheduled method called by other code runs in the caller’s scope, else in a run of its own', async () => {
    t = await start(adapter, QuickJobs, {}, [DirectController]);
    const response = await request(t.port, '/direct');
    expect(response.status).toBe(200);
    await t.app.get(QuickJobs).direct();
    const [inRequest, alone] = runsOf('probe-direct');
    // The request's own id: the method ran as part of the request, not as a run of its own.
    expect(inRequest.id).toBe(response.body);
    expect(alone.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(alone.signal).not.toBe(t.app.get(CancellationService).shutdownSignal);
  });
});

describe('the docs example (test/readme/schedule.ts)', () => {
  let t: TestApp | undefined;

  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  it('lists a run of the hourly report, cancels it through the jobs controller, then drains the next at close', async () => {
    t = await createApp('express', JobsModule);
    const job = t.app.get(SchedulerRegistry).getCronJob('hourly-report');
    const registry = t.app.get(CancellationRegistry);
    reports.queryMs = 5_000;
    void job.fireOnTick();
    const run = await waitFor(() => registry.inFlight().find((work) => work.route === 'hourly-report'));
    expect(run).toMatchObject({ method: 'CRON' });
    expect(run.remainingMs).toBeGreaterThan(590_000);

    const cancelled = await request(t.port, '/jobs/hourly-report/cancel', { method: 'POST' });
    expect(cancelled.json).toEqual({ cancelled: 1 });
    await waitFor(() => reports.stoppedBy.length === 1);
    expect(reports.stoppedBy).toEqual(['manual']);
    expect(registry.inFlight()).toEqual([]);

    // The next run takes 4 x 100 ms: within the 5 s grace period, close() lets it finish.
    reports.queryMs = 100;
    void job.fireOnTick();
    await waitFor(() => reports.started === 2);
    const took = await t.close();
    expect(reports.totals).toHaveLength(1);
    expect(reports.stoppedBy).toHaveLength(1);
    expect(took).toBeGreaterThan(200);
    expect(took).toBeLessThan(4000);
    expect(t.logs.errors).toEqual([]);
  });
});

describe.each(ADAPTERS)('SIGTERM with runs in flight under enableShutdownHooks (%s)', (adapter) => {
  let app: FixtureApp | undefined;

  afterEach(async () => {
    await app?.kill();
  });

  it('aborts every run after the grace period; each has ended when the process exits', async () => {
    app = new FixtureApp(
      spawnFixture(FIXTURE, { ...process.env, ADAPTER: adapter, PORT: '0', GRACE_MS: '300' }),
    );
    const listening = await app.next('listening', 15_000);
    expect(listening.nest).toBe(fixtureNestVersion());
    // @nestjs/schedule 6 beside Nest 11 (the Nest 11 job), 12 beside Nest 12.
    const schedule = await app.next('schedule');
    expect(String(schedule.version).split('.')[0]).toBe(fixtureNestVersion().startsWith('11.') ? '6' : '12');
    await waitFor(() => (app?.events.filter((line) => line.event === 'tick-start').length ?? 0) >= 3, {
      timeoutMs: 5000,
      message: 'three runs in flight',
    });
    const killedAt = performance.now();
    expect(app.child.kill('SIGTERM')).toBe(true);
    const exit = await app.exited;
    expect(exit).toMatchObject({ code: null, signal: 'SIGTERM' });
    expect(exit.at - killedAt).toBeLessThan(3000);

    const of = (event: string): string[] =>
      (app?.events ?? []).filter((line) => line.event === event).map((line) => String(line.id));
    const started = of('tick-start');
    expect(new Set(started).size).toBe(started.length);
    expect(of('tick-end').sort()).toEqual([...started].sort());
    const aborted = (app.events ?? []).filter((line) => line.event === 'tick-aborted');
    expect(aborted.map((line) => line.kind)).toEqual(started.map(() => 'shutdown'));
    // Aborted once the 300 ms of grace were over.
    const firstAbort = Math.min(...aborted.map((line) => line.receivedAt));
    expect(firstAbort - killedAt).toBeGreaterThanOrEqual(250);
    const levels = app.events.filter((line) => line.event === 'log').map((line) => line.level);
    expect(levels.filter((level) => level !== 'log' && level !== 'verbose')).toEqual([]);
    expect(app.stderr).toBe('');
  });
});
