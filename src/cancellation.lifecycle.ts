import { Inject, Injectable, Logger } from '@nestjs/common';
import type { BeforeApplicationShutdown, OnApplicationShutdown } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import { CancellationError } from './cancellation.error.js';
import { RESOLVED_OPTIONS } from './cancellation.module-definition.js';
import type { ResolvedCancellationOptions } from './cancellation.options.js';
import { platformFor } from './cancellation.platform.js';
import type { HttpPlatform } from './cancellation.platform.js';
import type { RequestScope } from './cancellation.scope.js';

/**
 * The application's side of cancellation: its shutdown signal and the registry of requests in flight, which
 * shutdown walks once instead of every request subscribing to a shared shutdown subject.
 *
 * Shutdown starts in `beforeApplicationShutdown`: Nest closes the HTTP server after that hook and before
 * `onApplicationShutdown`, and closing the server waits for every request in flight. Cancelling any later
 * would only run once the requests it should stop had finished. `onApplicationShutdown` repeats the call,
 * which does nothing the second time, for the case where an earlier hook failed.
 * @internal
 */
@Injectable()
export class CancellationLifecycle implements BeforeApplicationShutdown, OnApplicationShutdown {
  private readonly shutdownController = new AbortController();
  private readonly inFlight = new Set<RequestScope>();
  private readonly logger = new Logger('Cancellation');
  private httpPlatform: HttpPlatform | undefined;

  constructor(
    @Inject(RESOLVED_OPTIONS) readonly options: ResolvedCancellationOptions,
    @Inject(HttpAdapterHost) private readonly adapterHost: HttpAdapterHost,
  ) {}

  /** Aborts with a `CancellationError` of kind `'shutdown'` when the application starts shutting down. */
  get shutdownSignal(): AbortSignal {
    return this.shutdownController.signal;
  }

  get isShuttingDown(): boolean {
    return this.shutdownController.signal.aborted;
  }

  /** The reason the shutdown signal aborted with (only meaningful once `isShuttingDown`). */
  shutdownReason(): CancellationError {
    return this.shutdownController.signal.reason as CancellationError;
  }

  /** Express or Fastify, known once the HTTP adapter exists. */
  get platform(): HttpPlatform {
    return (this.httpPlatform ??= platformFor(this.adapterHost.httpAdapter?.getType()));
  }

  /** How many requests are in flight. */
  get inFlightCount(): number {
    return this.inFlight.size;
  }

  track(scope: RequestScope): void {
    this.inFlight.add(scope);
  }

  untrack(scope: RequestScope): void {
    this.inFlight.delete(scope);
  }

  /** One line per cancelled request, never at error level: a cancellation is not a failure of the server. */
  reportCancelled(scope: RequestScope, reason: CancellationError): void {
    if (!this.options.logCancellations) return;
    const { platform } = this;
    this.logger.verbose(
      `${platform.method(scope.request)} ${platform.route(scope.request)} cancelled (${reason.kind}) ` +
        `after ${Math.round(scope.elapsedMs)} ms`,
    );
  }

  beforeApplicationShutdown(signal?: string): void {
    this.shutdown(signal);
  }

  onApplicationShutdown(signal?: string): void {
    this.shutdown(signal);
  }

  /** Aborts the shutdown signal, then every request in flight. Idempotent. */
  private shutdown(signal: string | undefined): void {
    if (this.isShuttingDown) return;
    const reason = new CancellationError(
      'shutdown',
      signal === undefined ? undefined : `The application is shutting down (${signal})`,
    );
    this.shutdownController.abort(reason);
    const count = this.inFlight.size;
    // Cancelling removes the entry: deleting while iterating a Set is safe.
    for (const scope of this.inFlight) scope.cancel(reason);
    if (count > 0 && this.options.logCancellations) {
      this.logger.log(`Shutdown cancelled ${count} request${count === 1 ? '' : 's'} in flight`);
    }
  }
}
