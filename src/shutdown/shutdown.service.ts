import { Inject, Injectable, Logger } from '@nestjs/common';
import type {
  BeforeApplicationShutdown,
  OnApplicationBootstrap,
  OnApplicationShutdown,
} from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import type { Server } from 'node:http';
import { RESOLVED_OPTIONS } from '../module/cancellation.module-definition.js';
import type { ResolvedCancellationOptions } from '../module/cancellation.options.js';
import { InFlightRegistry } from '../registry/in-flight.registry.js';
import { ApplicationSignals } from './application-signals.js';
import { ConnectionTracker } from './connection-tracker.js';

/**
 * The application's shutdown, in two phases: drain (refuse new work, give work in flight
 * `shutdownGracePeriodMs` to finish), then abort what is left; with a hard deadline that ends whatever still
 * holds the HTTP server open.
 *
 * It starts in `beforeApplicationShutdown`: Nest closes the HTTP server after that hook and before
 * `onApplicationShutdown`, and closing the server waits for every request in flight. Cancelling any later
 * would only run once the requests it should stop had finished. `onApplicationShutdown` repeats the abort,
 * which does nothing the second time, for the case where an earlier hook failed.
 * @internal
 */
@Injectable()
export class CancellationShutdown
  implements OnApplicationBootstrap, BeforeApplicationShutdown, OnApplicationShutdown
{
  private readonly logger = new Logger('Cancellation');
  private hardDeadline: NodeJS.Timeout | undefined = undefined;

  constructor(
    @Inject(RESOLVED_OPTIONS) private readonly options: ResolvedCancellationOptions,
    @Inject(ApplicationSignals) private readonly signals: ApplicationSignals,
    @Inject(InFlightRegistry) private readonly registry: InFlightRegistry,
    @Inject(ConnectionTracker) private readonly connections: ConnectionTracker,
    @Inject(HttpAdapterHost) private readonly adapterHost: HttpAdapterHost,
  ) {}

  /** Starts counting the HTTP server's sockets, for the drain and the hard deadline. */
  onApplicationBootstrap(): void {
    const server = this.adapterHost.httpAdapter?.getHttpServer() as Server | undefined;
    if (server !== undefined && typeof server.on === 'function') this.connections.attach(server);
  }

  /**
   * Drains, then aborts what is still running: refuses new work and aborts `drainingSignal`, gives work in
   * flight `shutdownGracePeriodMs` to finish, then aborts `shutdownSignal` and cancels everything still in
   * flight. Arms the hard deadline first. Idempotent.
   */
  async beforeApplicationShutdown(signal?: string): Promise<void> {
    if (!this.signals.beginDrain(signal)) return;
    this.hardDeadline = setTimeout(() => this.connections.forceClose(), this.options.shutdownTimeoutMs);
    this.hardDeadline.unref();
    const grace = this.options.shutdownGracePeriodMs;
    if (grace > 0) await this.drain(grace);
    this.abortInFlight(signal);
  }

  /** The HTTP server is closed: make sure everything was aborted, and disarm the hard deadline. */
  onApplicationShutdown(signal?: string): void {
    this.abortInFlight(signal);
    clearTimeout(this.hardDeadline);
  }

  /** Waits up to `grace` ms for the work in flight and the requests admitted before the drain to end. */
  private async drain(grace: number): Promise<void> {
    const { registry, connections } = this;
    await new Promise<void>((resolve) => {
      const check = (): void => {
        if (registry.size > 0 || connections.openAdmitted > 0) return;
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(resolve, grace);
      connections.admitOpenRequests(check);
      registry.whenUntracked(check);
      const open = Math.max(registry.size, connections.openAdmitted);
      if (open > 0 && this.options.logCancellations) {
        this.logger.log(`Draining ${open} request(s) in flight for up to ${grace} ms`);
      }
      check();
    });
    registry.whenUntracked(undefined);
    connections.stopWatchingAdmitted();
  }

  private abortInFlight(signal: string | undefined): void {
    if (!this.signals.beginShutdown(signal)) return;
    const count = this.registry.cancelAll(this.signals.shutdownReason());
    if (count > 0 && this.options.logCancellations) {
      this.logger.log(`Shutdown cancelled ${count} request${count === 1 ? '' : 's'} in flight`);
    }
  }
}
