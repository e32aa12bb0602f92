import { Inject, Injectable } from '@nestjs/common';
import type { OnApplicationShutdown, OnModuleInit } from '@nestjs/common';
import type { Attributes, BatchObservableCallback, Meter, Observable } from '@opentelemetry/api';
import { RESOLVED_OPTIONS } from '../module/cancellation.module-definition.js';
import type { ResolvedCancellationOptions } from '../module/cancellation.options.js';
import { CancellationEvents } from '../registry/cancellation-events.js';
import { InFlightRegistry } from '../registry/in-flight.registry.js';

/** The instrumentation scope the instruments are created under. @internal */
export const METER_NAME = 'nestjs-cancellation';

/**
 * Bucket boundaries of the abort-to-settle histogram, in seconds: a handler that honours its signal settles
 * within milliseconds; one that does not shows up in the last buckets.
 */
const SETTLE_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/**
 * Records OpenTelemetry metrics when the `metrics` option is on, from the same events `onCancelled()` and
 * `onSettled()` give:
 * - `nestjs_cancellation.cancellations` (counter): cancelled requests, by `cancellation.kind`,
 *   `http.request.method` and `http.route`;
 * - `nestjs_cancellation.settle.duration` (histogram, seconds): from the abort to the handler settling;
 * - `nestjs_cancellation.requests.in_flight` (gauge): requests in flight;
 * - `nestjs_cancellation.handlers.running_after_abort` (gauge): cancelled requests whose handler still runs.
 *
 * `@opentelemetry/api` is loaded only then (it is an optional peer dependency), from the global meter
 * provider the application's OpenTelemetry SDK registers; without one, the API's no-op meter records nothing.
 * @internal
 */
@Injectable()
export class CancellationMetrics implements OnModuleInit, OnApplicationShutdown {
  private readonly teardown: (() => void)[] = [];

  constructor(
    @Inject(RESOLVED_OPTIONS) private readonly options: ResolvedCancellationOptions,
    @Inject(InFlightRegistry) private readonly registry: InFlightRegistry,
    @Inject(CancellationEvents) private readonly events: CancellationEvents,
  ) {}

  async onModuleInit(): Promise<void> {
    if (!this.options.metrics) return;
    let api: typeof import('@opentelemetry/api');
    try {
      api = await import('@opentelemetry/api');
    } catch (err) {
      throw new Error(
        'nestjs-cancellation: option "metrics" is true but @opentelemetry/api cannot be loaded: install it ' +
          '(npm install @opentelemetry/api) or turn the option off',
        { cause: err },
      );
    }
    this.record(api.metrics.getMeter(METER_NAME));
  }

  private record(meter: Meter): void {
    const { registry, events } = this;
    const cancellations = meter.createCounter('nestjs_cancellation.cancellations', {
      description: 'HTTP requests cancelled (client gone, deadline, shutdown, manual)',
      unit: '{request}',
    });
    const settle = meter.createHistogram('nestjs_cancellation.settle.duration', {
      description: 'Time from a request being cancelled to its handler settling',
      unit: 's',
      advice: { explicitBucketBoundaries: SETTLE_BUCKETS },
    });
    const inFlight = meter.createObservableGauge('nestjs_cancellation.requests.in_flight', {
      description: 'HTTP requests in flight',
      unit: '{request}',
    });
    const lingering = meter.createObservableGauge('nestjs_cancellation.handlers.running_after_abort', {
      description: 'Cancelled requests whose handler is still running',
      unit: '{request}',
    });
    const observe: BatchObservableCallback = (result) => {
      result.observe(inFlight, registry.size);
      result.observe(lingering, registry.lingeringCount);
    };
    const observables: Observable[] = [inFlight, lingering];
    meter.addBatchObservableCallback(observe, observables);
    this.teardown.push(
      () => meter.removeBatchObservableCallback(observe, observables),
      events.onCancelled((event) => {
        cancellations.add(1, attributesOf(event));
      }),
      events.onSettled((event) => {
        settle.record(event.settledAfterMs / 1000, attributesOf(event));
      }),
    );
  }

  onApplicationShutdown(): void {
    for (const remove of this.teardown.splice(0)) remove();
  }
}

function attributesOf(event: { kind: string; method: string; route: string }): Attributes {
  return { 'cancellation.kind': event.kind, 'http.request.method': event.method, 'http.route': event.route };
}
