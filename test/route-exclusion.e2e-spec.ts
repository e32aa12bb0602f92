/**
 * Opting routes out of cancellation (issue #13, item 10): `@SkipCancellation()` on a handler or a controller,
 * and the `exclude` option with path patterns. An excluded route gets no scope (the handler sees the
 * application's signals), no time budget, no place in the registry, and keeps answering while the application
 * drains, when every other request is refused at the door.
 */
import 'reflect-metadata';
import { Controller, Get, Module, Post, RequestMethod } from '@nestjs/common';
import {
  CancellationModule,
  CancellationService,
  RequestTimeout,
  SkipCancellation,
} from 'nestjs-cancellation';
import type { CancellationModuleOptions } from 'nestjs-cancellation';
import { ADAPTERS, createApp, request, sleep, startRequest, waitFor } from './utils/harness.js';
import type { TestApp } from './utils/harness.js';

/** What a handler saw of its request. */
function sight(cancellation: CancellationService) {
  return {
    requestId: cancellation.requestId ?? null,
    remainingMs: cancellation.remainingMs ?? null,
    appSignal: cancellation.signal === cancellation.shutdownSignal,
    inFlight: cancellation.inFlight().length,
  };
}

let slowStarted = 0;

@Controller('work')
class WorkController {
  constructor(private readonly cancellation: CancellationService) {}

  @Get()
  work() {
    return sight(this.cancellation);
  }

  @Get('skipped')
  @SkipCancellation()
  async skipped() {
    await sleep(300); // longer than the module's budget
    return sight(this.cancellation);
  }

  @Get('slow')
  @RequestTimeout(10_000)
  async slow() {
    slowStarted++;
    await sleep(1_500);
    return { done: true };
  }
}

@Controller('health')
@SkipCancellation()
class HealthController {
  constructor(private readonly cancellation: CancellationService) {}

  @Get()
  async check() {
    await sleep(300);
    return sight(this.cancellation);
  }

  @Get('deep')
  @SkipCancellation(false)
  async deep() {
    await sleep(300); // over budget: this route was taken back
    return sight(this.cancellation);
  }
}

@Controller('ready')
class ReadyController {
  constructor(private readonly cancellation: CancellationService) {}

  @Get()
  async ready() {
    await sleep(300);
    return sight(this.cancellation);
  }

  @Post()
  async poke() {
    await sleep(300);
    return sight(this.cancellation);
  }
}

@Controller('metrics')
class MetricsController {
  constructor(private readonly cancellation: CancellationService) {}

  @Get(':name')
  async metric() {
    await sleep(300);
    return sight(this.cancellation);
  }
}

@Module({
  imports: [
    // #region exclude
    CancellationModule.forRoot({
      timeoutMs: 100,
      shutdownGracePeriodMs: 5_000,
      // Left out by path, global prefix included: no scope, no budget, answered while draining.
      exclude: [{ path: '/api/ready', method: RequestMethod.GET }, 'api/metrics/*'],
    }),
    // #endregion exclude
  ],
  controllers: [WorkController, HealthController, ReadyController, MetricsController],
})
class AppModule {}

const OUTSIDE = { requestId: null, remainingMs: null, appSignal: true, inFlight: 0 };

describe.each(ADAPTERS)('route exclusion on %s', (adapter) => {
  let t: TestApp | undefined;

  afterEach(async () => {
    if (t === undefined) return;
    await t.close();
    expect(t.logs.errors).toEqual([]);
    t = undefined;
  });

  async function start(): Promise<TestApp> {
    return createApp(adapter, AppModule, { configure: (app) => void app.setGlobalPrefix('api') });
  }

  it('runs an ordinary route in its scope, with the budget', async () => {
    t = await start();
    const ok = await request(t.port, '/api/work');
    expect(ok.status).toBe(200);
    expect(ok.json).toMatchObject({ appSignal: false, inFlight: 1 });
    expect(typeof (ok.json as { requestId: unknown }).requestId).toBe('string');
  });

  it('@SkipCancellation() on a handler: no scope, no budget, not in flight', async () => {
    t = await start();
    const skipped = await request(t.port, '/api/work/skipped');
    expect(skipped.status).toBe(200);
    expect(skipped.json).toEqual(OUTSIDE);
  });

  it('@SkipCancellation() on a controller, and @SkipCancellation(false) taking one route back', async () => {
    t = await start();
    const health = await request(t.port, '/api/health');
    expect(health.status).toBe(200);
    expect(health.json).toEqual(OUTSIDE);
    const deep = await request(t.port, '/api/health/deep');
    expect(deep.status).toBe(504);
  });

  it('exclude: a path with a method, and a wildcard', async () => {
    t = await start();
    const ready = await request(t.port, '/api/ready');
    expect(ready.status).toBe(200);
    expect(ready.json).toEqual(OUTSIDE);
    // The exclusion names GET: a POST to the same path keeps its budget.
    const poke = await request(t.port, '/api/ready', { method: 'POST' });
    expect(poke.status).toBe(504);
    const metric = await request(t.port, '/api/metrics/heap?format=json');
    expect(metric.status).toBe(200);
    expect(metric.json).toEqual(OUTSIDE);
  });

  it('while draining, excluded routes keep answering and every other request is refused at the door', async () => {
    t = await start();
    const before = slowStarted;
    const inFlight = startRequest(t.port, '/api/work/slow');
    await waitFor(() => slowStarted > before, { message: 'the slow handler to start' });
    const closed = t.close();
    await sleep(100);

    const [skipped, health, ready, metric, work, unknown] = await Promise.all([
      request(t.port, '/api/work/skipped'),
      request(t.port, '/api/health'),
      request(t.port, '/api/ready'),
      request(t.port, '/api/metrics/heap'),
      request(t.port, '/api/work'),
      request(t.port, '/nowhere'),
    ]);
    expect([skipped.status, health.status, ready.status, metric.status]).toEqual([200, 200, 200, 200]);
    // The request in flight is the only one the registry knows.
    expect(health.json).toEqual({ ...OUTSIDE, inFlight: 1 });
    for (const refused of [work, unknown]) {
      expect(refused.status).toBe(503);
      expect(refused.headers['retry-after']).toBe('1');
      expect(refused.headers.connection).toBe('close');
      expect(refused.json).toMatchObject({ statusCode: 503, error: 'Service Unavailable' });
    }
    // The request admitted before the drain finishes normally.
    expect((await inFlight.response()).status).toBe(200);
    await closed;
  });
});

describe('the exclude option at start-up', () => {
  it.each([
    [['health/(.*)'], 'exclude[0]'],
    [['ok', { path: 'a/*/b' }], 'exclude[1].path'],
    [[{ path: 'ready', method: 'FETCH' }], 'exclude[0].method'],
    [[{ path: 'ready', verb: 'GET' }], 'exclude[0].verb'],
    ['health', 'exclude'],
  ])('refuses %j, naming %s', async (exclude, name) => {
    @Module({
      imports: [CancellationModule.forRoot({ exclude } as unknown as CancellationModuleOptions)],
    })
    class BadModule {}
    await expect(createApp('express', BadModule)).rejects.toThrow(`invalid option "${name}"`);
  });
});
