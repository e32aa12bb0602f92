import { Inject, Injectable } from '@nestjs/common';
import { requestStorage } from './cancellation.constants.js';
import type { CancellationError } from './cancellation.error.js';
import { CancellationLifecycle } from './cancellation.lifecycle.js';

/**
 * The cancellation state of whatever is running now, for ordinary singleton services: no request-scoped
 * provider is needed. Inside an HTTP request it speaks of that request (found through AsyncLocalStorage, so
 * it stays right after `await`, in timers, in `Promise.all` branches and in callbacks of streams and
 * emitters the request created); outside any request (a cron job, a queue consumer, `onModuleInit` work) it
 * speaks of the application, whose signal aborts when it shuts down.
 *
 * @example
 * ```ts
 * @Injectable()
 * export class ReportService {
 *   constructor(private readonly cancellation: CancellationService) {}
 *
 *   async build(): Promise<Report> {
 *     const rows = await fetch(ROWS_URL, { signal: this.cancellation.signal });
 *     return summarise(await rows.json());
 *   }
 * }
 * ```
 */
@Injectable()
export class CancellationService {
  constructor(@Inject(CancellationLifecycle) private readonly lifecycle: CancellationLifecycle) {}

  /**
   * The current request's AbortSignal; outside a request, the application's shutdown signal. It aborts with
   * a `CancellationError` whose `kind` says why. Pass it to `fetch`, `timers/promises`, `fs/promises`,
   * `child_process`, `stream.pipeline`, `events.once`, axios, or check it in your own loops.
   */
  get signal(): AbortSignal {
    return requestStorage.getStore()?.signal ?? this.lifecycle.shutdownSignal;
  }

  /**
   * Aborts when the application starts shutting down (`app.close()`, or a signal under
   * `enableShutdownHooks()`), whether or not a request is running: what background work should watch.
   */
  get shutdownSignal(): AbortSignal {
    return this.lifecycle.shutdownSignal;
  }

  /**
   * Whether the current request (outside a request: the application) has been cancelled. Cheaper than
   * `signal.aborted`: it creates no AbortController for a request that has none yet.
   */
  get isCancelled(): boolean {
    return this.currentReason() !== undefined;
  }

  /**
   * Throws the `CancellationError` if the current request (outside a request: the application) has been
   * cancelled; does nothing otherwise. Let it propagate: the interceptor answers it as the cancellation it
   * is (503, 504, or nothing for a client that left), never as a 500.
   */
  throwIfCancelled(): void {
    const reason = this.currentReason();
    if (reason !== undefined) throw reason;
  }

  private currentReason(): CancellationError | undefined {
    const scope = requestStorage.getStore();
    if (scope !== undefined) return scope.reason;
    return this.lifecycle.isShuttingDown ? this.lifecycle.shutdownReason() : undefined;
  }
}
