import { Inject, Injectable } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import type { ServerResponse } from 'node:http';
import { platformFor } from '../http/http-platform.js';
import type { HttpPlatform } from '../http/http-platform.js';
import { compileExclusions, RouteExclusions } from '../http/route-exclusion.js';
import { CancellationEvents } from '../registry/cancellation-events.js';
import { InFlightRegistry } from '../registry/in-flight.registry.js';
import { ApplicationSignals } from '../shutdown/application-signals.js';
import { ConnectionTracker } from '../shutdown/connection-tracker.js';
import { RESOLVED_OPTIONS } from './cancellation.module-definition.js';
import type { ResolvedCancellationOptions } from './cancellation.options.js';
import { fail } from './options.validation.js';

/**
 * The application's collaborators that every scope reaches, gathered once so that a scope holds one
 * reference instead of six: the options, the shutdown signals, the registry, the events, the connections and
 * the HTTP platform.
 * @internal
 */
@Injectable()
export class CancellationRuntime {
  private httpPlatform: HttpPlatform | undefined = undefined;
  /** The routes left out of cancellation (`exclude`, `@SkipCancellation()`). */
  readonly exclusions: RouteExclusions;

  constructor(
    @Inject(RESOLVED_OPTIONS) readonly options: ResolvedCancellationOptions,
    @Inject(ApplicationSignals) readonly signals: ApplicationSignals,
    @Inject(InFlightRegistry) readonly registry: InFlightRegistry,
    @Inject(CancellationEvents) readonly events: CancellationEvents,
    @Inject(ConnectionTracker) private readonly connections: ConnectionTracker,
    @Inject(HttpAdapterHost) private readonly adapterHost: HttpAdapterHost,
  ) {
    this.exclusions = new RouteExclusions(compileExclusions(options.exclude ?? [], fail));
  }

  /** Express or Fastify, known once the HTTP adapter exists. */
  get platform(): HttpPlatform {
    return (this.httpPlatform ??= platformFor(this.adapterHost.httpAdapter?.getType()));
  }

  /**
   * Whether a request that reaches the interceptor now must be refused: it arrived after the drain began, or
   * the grace period is over.
   */
  refuses(response: ServerResponse): boolean {
    const { signals } = this;
    return signals.isDraining && (signals.isShuttingDown || !this.connections.isAdmitted(response));
  }
}
