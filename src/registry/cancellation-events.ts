import { Inject, Injectable, Logger } from '@nestjs/common';
import type { CancellationError } from '../core/cancellation-error.js';
import { RESOLVED_OPTIONS } from '../module/cancellation.module-definition.js';
import type { ResolvedCancellationOptions } from '../module/cancellation.options.js';
import type { CancelledEvent, CancellationListener, SettledEvent } from './cancellation-events.types.js';
import { describeWork } from './tracked-work.js';
import type { TrackedWork } from './tracked-work.js';

function addListener<L>(listeners: L[], listener: L): () => void {
  if (typeof listener !== 'function')
    throw new TypeError('nestjs-cancellation: a listener must be a function');
  listeners.push(listener);
  return () => {
    const index = listeners.indexOf(listener);
    if (index !== -1) listeners.splice(index, 1);
  };
}

/**
 * Reports cancellations: a log line per cancelled unit of work (never at error level: a cancellation is not a
 * failure of the server) and the `onCancelled()` / `onSettled()` listeners.
 * @internal
 */
@Injectable()
export class CancellationEvents {
  private readonly cancelledListeners: CancellationListener<CancelledEvent>[] = [];
  private readonly settledListeners: CancellationListener<SettledEvent>[] = [];
  private readonly logger = new Logger('Cancellation');

  constructor(@Inject(RESOLVED_OPTIONS) private readonly options: ResolvedCancellationOptions) {}

  /** Adds a listener; returns the function that removes it. */
  onCancelled(listener: CancellationListener<CancelledEvent>): () => void {
    return addListener(this.cancelledListeners, listener);
  }

  /** Adds a listener; returns the function that removes it. */
  onSettled(listener: CancellationListener<SettledEvent>): () => void {
    return addListener(this.settledListeners, listener);
  }

  /** `work` was cancelled: its signal aborted with `reason`. */
  cancelled(work: TrackedWork, reason: CancellationError): void {
    if (this.options.logCancellations) {
      this.logger.verbose(
        `${describeWork(work)} cancelled (${reason.kind}) after ` +
          `${Math.round(work.abortedAt - work.startedAt)} ms`,
      );
    }
    if (this.cancelledListeners.length === 0) return;
    const event = eventOf(work, reason);
    for (const listener of this.cancelledListeners.slice()) this.notify(listener, event);
  }

  /** The handler of cancelled `work` settled, `settledAfterMs` after the abort. */
  settled(work: TrackedWork, reason: CancellationError, settledAfterMs: number): void {
    if (this.settledListeners.length === 0) return;
    const event: SettledEvent = { ...eventOf(work, reason), settledAfterMs };
    for (const listener of this.settledListeners.slice()) this.notify(listener, event);
  }

  /** A listener that throws must not break the work that triggered it, nor the other listeners. */
  private notify<E>(listener: CancellationListener<E>, event: E): void {
    try {
      listener(event);
    } catch (err) {
      this.logger.error('A cancellation listener threw', err instanceof Error ? err.stack : String(err));
    }
  }
}

function eventOf(work: TrackedWork, reason: CancellationError): CancelledEvent {
  const { correlationId } = work;
  return {
    id: work.id,
    ...(correlationId === undefined ? {} : { correlationId }),
    kind: reason.kind,
    reason,
    method: work.method,
    route: work.route,
    elapsedMs: work.abortedAt - work.startedAt,
  };
}
