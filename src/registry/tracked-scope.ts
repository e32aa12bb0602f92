import type { CancellationError } from '../core/cancellation-error.js';
import { HandlerScope } from '../core/handler-scope.js';
import type { CancellationRuntime } from '../module/cancellation-runtime.js';
import type { TrackedWork } from './tracked-work.js';

/**
 * A handler scope the application keeps track of (an HTTP request, a gRPC call): listed in `inFlight()` while
 * its handler runs, reported to the events when it is cancelled and again when its cancelled handler has
 * settled. Subclasses say what ends their work and how it is answered; this class owns the bookkeeping.
 * @internal
 */
export abstract class TrackedScope extends HandlerScope implements TrackedWork {
  /** The handler's stream emitted a value (a Promise handler's result, an Observable's first value). */
  protected emitted = false;
  /** The settling of the cancelled handler was reported. */
  private settleReported = false;

  constructor(protected readonly runtime: CancellationRuntime) {
    super();
  }

  abstract get id(): string;
  abstract get method(): string;
  abstract get route(): string;
  abstract cancel(reason: CancellationError): void;

  /** Records the reason, aborts the signal (if anybody asked for it) and reports the cancellation. */
  protected abort(reason: CancellationError): void {
    this.abortWith(reason);
    this.runtime.events.cancelled(this, reason);
  }

  /**
   * Lets go of the handler's stream as the interceptor's stream is torn down: a cancelled handler that
   * returned a Promise (`watchesSettlement`) and has not settled is watched until it does, listed as work
   * going on for nobody; otherwise its settling is reported now (when it was cancelled).
   */
  protected releaseTracked(watchesSettlement: boolean, reportNow = true): void {
    if (this.releaseHandler(watchesSettlement && !this.emitted)) this.runtime.registry.linger(this);
    else if (reportNow) this.settle();
  }

  /** The cancelled handler's Promise settled. */
  protected override watchEnded(): void {
    this.runtime.registry.unlinger(this);
    this.settle();
  }

  /** Reports, once, that the handler of cancelled work has settled. */
  protected settle(): void {
    if (this.reason === undefined || this.settleReported) return;
    this.settleReported = true;
    this.runtime.events.settled(this, this.reason, performance.now() - this.abortedAt);
  }
}
