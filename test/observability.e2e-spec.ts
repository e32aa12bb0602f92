import 'reflect-metadata';
import { Controller, Get, Query } from '@nestjs/common';
import { metrics } from '@opentelemetry/api';
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';
import type { DataPoint, Histogram, MetricData } from '@opentelemetry/sdk-metrics';
import { Observable, interval } from 'rxjs';
import { setTimeout as delay } from 'node:timers/promises';
import { CancellationModule, CancellationService, RequestSignal } from 'nestjs-cancellation';
import { expectStopsOnHangUp } from 'nestjs-cancellation/testing';
import { ADAPTERS, createApp, rootModule, sleep, startRequest, waitFor } from './utils/harness.js';
import type { TestApp } from './utils/harness.js';

/** How many ticks each stubborn request (by tag) made after its hang-up. */
const stubbornRuns = new Map<string, number>();

@Controller('work')
class WorkController {
  /** Honours its signal. */
  @Get('polite')
  async polite(@RequestSignal() signal: AbortSignal): Promise<string> {
    await delay(10_000, undefined, { signal });
    return 'done';
  }

  /** Ignores its signal for `ms` milliseconds. */
  @Get('stubborn')
  async stubborn(@Query('ms') ms = '300', @Query('tag') tag = ''): Promise<string> {
    for (let tick = 0; tick < Number(ms) / 20; tick++) {
      await sleep(20);
      stubbornRuns.set(tag, tick + 1);
    }
    return 'late';
  }

  /** An Observable: unsubscribing stops it. */
  @Get('ticks')
  ticks(): Observable<number> {
    return interval(50);
  }

  /** Finishes before anybody can hang up. */
  @Get('quick')
  quick(): string {
    return 'quick';
  }
}

describe.each(ADAPTERS)('metrics (%s)', (adapter) => {
  let t: TestApp;
  let reader: PeriodicExportingMetricReader;
  let provider: MeterProvider;

  beforeAll(async () => {
    const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
    reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 });
    provider = new MeterProvider({ readers: [reader] });
    metrics.setGlobalMeterProvider(provider);
    t = await createApp(
      adapter,
      rootModule({ imports: [CancellationModule.forRoot({ metrics: true })], controllers: [WorkController] }),
    );
  });
  afterAll(async () => {
    await t.close();
    await provider.shutdown();
    metrics.disable();
  });

  async function collect(): Promise<Map<string, MetricData>> {
    const { resourceMetrics } = await reader.collect();
    const found = new Map<string, MetricData>();
    for (const scope of resourceMetrics.scopeMetrics) {
      if (scope.scope.name !== 'nestjs-cancellation') continue;
      for (const metric of scope.metrics) found.set(metric.descriptor.name, metric);
    }
    return found;
  }

  function point(metric: MetricData | undefined, route: string): DataPoint<unknown> | undefined {
    return (metric?.dataPoints as DataPoint<unknown>[] | undefined)?.find(
      (candidate) => candidate.attributes['http.route'] === route,
    );
  }

  it('counts cancellations by kind and route, and times abort to settle', async () => {
    const service = t.app.get(CancellationService);
    const polite = startRequest(t.port, '/work/polite');
    const stubborn = startRequest(t.port, `/work/stubborn?ms=300&tag=metrics-${adapter}`);
    await waitFor(() => service.inFlight().length === 2 && stubbornRuns.get(`metrics-${adapter}`), {
      message: 'both requests in flight',
    });
    const during = await collect();
    expect(during.get('nestjs_cancellation.requests.in_flight')?.dataPoints[0]?.value).toBe(2);
    polite.abort();
    stubborn.abort();
    await waitFor(() => service.inFlight().some((entry) => entry.cancelled !== undefined), {
      message: 'the stubborn handler listed as running after its abort',
    });
    const lingering = await collect();
    expect(lingering.get('nestjs_cancellation.handlers.running_after_abort')?.dataPoints[0]?.value).toBe(1);
    await waitFor(() => stubbornRuns.get(`metrics-${adapter}`) === 15, {
      message: 'the stubborn handler to finish',
    });
    await sleep(20);

    const after = await collect();
    const counter = after.get('nestjs_cancellation.cancellations');
    expect(counter?.descriptor.unit).toBe('{request}');
    expect(point(counter, '/work/polite')).toMatchObject({
      value: 1,
      attributes: {
        'cancellation.kind': 'client-disconnected',
        'http.request.method': 'GET',
        'http.route': '/work/polite',
      },
    });
    expect(point(counter, '/work/stubborn')?.value).toBe(1);

    const settle = after.get('nestjs_cancellation.settle.duration');
    expect(settle?.descriptor.unit).toBe('s');
    const politeSettle = point(settle, '/work/polite')?.value as Histogram;
    const stubbornSettle = point(settle, '/work/stubborn')?.value as Histogram;
    expect(politeSettle.count).toBe(1);
    expect(politeSettle.sum).toBeLessThan(0.1);
    expect(stubbornSettle.count).toBe(1);
    expect(stubbornSettle.sum).toBeGreaterThan(0.1);
    expect(after.get('nestjs_cancellation.handlers.running_after_abort')?.dataPoints[0]?.value).toBe(0);
    expect(after.get('nestjs_cancellation.requests.in_flight')?.dataPoints[0]?.value).toBe(0);
  });
});

describe('metrics option', () => {
  it('rejects a value that is not a boolean, naming the option', () => {
    return expect(
      createApp(
        'express',
        rootModule({ imports: [CancellationModule.forRoot({ metrics: 'yes' as never })] }),
      ),
    ).rejects.toThrow(/invalid option "metrics": "yes" \(expected true or false\)/);
  });
});

describe.each(ADAPTERS)('still-running detector (%s)', (adapter) => {
  let t: TestApp;

  beforeAll(async () => {
    t = await createApp(
      adapter,
      rootModule({
        imports: [CancellationModule.forRoot({ stillRunningWarningMs: 100 })],
        controllers: [WorkController],
      }),
    );
  });
  afterAll(() => t.close());

  const warnings = (): string[] =>
    t.logs.lines.filter((line) => line.level === 'warn').map((line) => line.message);

  it('reports a handler still running after its abort once per route, naming it', async () => {
    t.logs.clear();
    for (const tag of ['first', 'second']) {
      const handle = startRequest(t.port, `/work/stubborn?ms=300&tag=detector-${adapter}-${tag}`, {
        headers: { 'x-request-id': `detector-${tag}` },
      });
      await waitFor(() => stubbornRuns.get(`detector-${adapter}-${tag}`));
      handle.abort();
      await waitFor(() => stubbornRuns.get(`detector-${adapter}-${tag}`) === 15, {
        message: 'the stubborn handler to finish',
      });
    }
    expect(warnings()).toEqual([
      expect.stringMatching(
        /^GET \/work\/stubborn \[[0-9a-f-]{36}\] \(correlation id detector-first\) is still running 100 ms after its signal aborted \(client-disconnected\)/,
      ),
    ]);
    expect(t.logs.errors).toEqual([]);
  });

  it('stays quiet for handlers that stop: a signal-aware Promise, an Observable', async () => {
    t.logs.clear();
    const polite = startRequest(t.port, '/work/polite');
    const ticks = startRequest(t.port, '/work/ticks');
    await sleep(100);
    polite.abort();
    ticks.abort();
    await sleep(250);
    expect(warnings()).toEqual([]);
  });
});

describe.each(ADAPTERS)('nestjs-cancellation/testing: expectStopsOnHangUp (%s)', (adapter) => {
  let t: TestApp;

  beforeAll(async () => {
    t = await createApp(
      adapter,
      rootModule({ imports: [CancellationModule.forRoot()], controllers: [WorkController] }),
    );
  });
  afterAll(() => t.close());

  it('resolves for a handler that honours its signal', async () => {
    const result = await expectStopsOnHangUp(t.app, {
      path: '/work/polite',
      hangUpAfterMs: 20,
      settleWithinMs: 200,
    });
    expect(result.kind).toBe('client-disconnected');
    expect(result.settledAfterMs).toBeLessThan(200);
  });

  it('resolves for an Observable handler (unsubscribing stops it)', async () => {
    const result = await expectStopsOnHangUp(t.app, { path: '/work/ticks', hangUpAfterMs: 60 });
    expect(result.settledAfterMs).toBeLessThan(50);
  });

  it('rejects, naming the route, when the handler goes on after the hang-up', async () => {
    await expect(
      expectStopsOnHangUp(t.app, { path: '/work/stubborn?ms=400&tag=helper', settleWithinMs: 100 }),
    ).rejects.toThrow(
      /^GET \/work\/stubborn\?ms=400&tag=helper was still running 100 ms after its client hung up/,
    );
  });

  it('rejects when the request finishes before it can be hung up on', async () => {
    await expect(expectStopsOnHangUp(t.app, { path: '/work/quick' })).rejects.toThrow(
      /^GET \/work\/quick (answered 200 before it could be hung up on|did not reach its handler)/,
    );
  });
});
