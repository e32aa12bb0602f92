import { Inject, Injectable } from '@nestjs/common';
import { CancellationError } from '../core/cancellation-error.js';
import type { InFlightRequest } from './cancellation-events.types.js';
import { StillRunningDetector } from './still-running.detector.js';
import type { TrackedWork } from './tracked-work.js';

/**
 * The work in flight: what shutdown walks once (instead of every request subscribing to a shared shutdown
 * subject), what `inFlight()` lists and `cancel(id)` searches; and the cancelled work whose handler still
 * runs (it ignores its signal), listed until it settles.
 * @internal
 */
@Injectable()
export class InFlightRegistry {
  private readonly running = new Set<TrackedWork>();
  /** Cancelled work whose handler has not settled yet: work going on for nobody. */
  private readonly lingering = new Set<TrackedWork>();
  /** Called each time work leaves the registry (the drain waits on it). */
  private onUntrack: (() => void) | undefined = undefined;
  /** Called with each work that enters it (the fleet looks for a cancel that came first). */
  private onTrack: ((work: TrackedWork) => void) | undefined = undefined;
  /** Called each time a cancelled handler settles (shutdown waits on it). */
  private onSettle: (() => void) | undefined = undefined;

  constructor(@Inject(StillRunningDetector) private readonly detector: StillRunningDetector) {}

  /** How much work is in flight. */
  get size(): number {
    return this.running.size;
  }

  /** How much cancelled work has a handler still running. */
  get lingeringCount(): number {
    return this.lingering.size;
  }

  track(work: TrackedWork): void {
    this.running.add(work);
    this.onTrack?.(work);
  }

  /** Calls `listener` with each work that enters the registry, until called again with `undefined`. */
  whenTracked(listener: ((work: TrackedWork) => void) | undefined): void {
    this.onTrack = listener;
  }

  untrack(work: TrackedWork): void {
    this.running.delete(work);
    this.onUntrack?.();
  }

  /** Calls `listener` each time work leaves the registry, until called again with `undefined`. */
  whenUntracked(listener: (() => void) | undefined): void {
    this.onUntrack = listener;
  }

  /** Cancelled `work` whose handler still runs (its Promise is pending). */
  linger(work: TrackedWork): void {
    this.lingering.add(work);
    this.detector.watch(work, () => this.lingering.has(work));
  }

  /** The handler of cancelled work settled. */
  unlinger(work: TrackedWork): void {
    this.lingering.delete(work);
    this.onSettle?.();
  }

  /** Calls `listener` each time a cancelled handler settles, until called again with `undefined`. */
  whenSettled(listener: (() => void) | undefined): void {
    this.onSettle = listener;
  }

  /** Cancels everything in flight with `reason`; returns how much there was. */
  cancelAll(reason: CancellationError): number {
    const count = this.running.size;
    // Cancelling removes the entry: deleting while iterating a Set is safe.
    for (const work of this.running) work.cancel(reason);
    return count;
  }

  /**
   * Cancels the work in flight with this id (`kind: 'manual'`); returns how many were cancelled: 1, or 0 when
   * none has it. Ids are the server's own and unique; a correlation id never matches.
   */
  cancelById(id: string, message: string): number {
    for (const work of this.running) {
      if (work.reason !== undefined || work.id !== id) continue;
      work.cancel(new CancellationError('manual', message));
      return 1;
    }
    return 0;
  }

  /** The work in flight, oldest first, and the cancelled work whose handler still runs. */
  list(): InFlightRequest[] {
    const origin = performance.timeOrigin;
    const now = performance.now();
    const describe = (work: TrackedWork): InFlightRequest => {
      const { remainingMs, correlationId } = work;
      return {
        id: work.id,
        ...(correlationId === undefined ? {} : { correlationId }),
        method: work.method,
        route: work.route,
        startedAt: Math.round(origin + work.startedAt),
        elapsedMs: Math.round(now - work.startedAt),
        ...(remainingMs === undefined ? {} : { remainingMs: Math.round(remainingMs) }),
        ...(work.reason === undefined ? {} : { cancelled: work.reason.kind }),
      };
    };
    const entries = [...this.running].map(describe);
    for (const work of this.lingering) entries.push(describe(work));
    return entries.sort((a, b) => a.startedAt - b.startedAt);
  }
}
