import { globalState, scopeStorage } from './async-context.js';
import { contextlessCall } from './contextless-call.js';

/**
 * How long a loop that calls `checkpoint()` may hold the event loop before it yields: short enough that a
 * disconnect or a shutdown is noticed within a few milliseconds, long enough that calling `checkpoint()` on
 * every iteration of a tight loop costs almost nothing.
 */
const YIELD_INTERVAL_MS = 5;

const RESOLVED: Promise<void> = Promise.resolve();

/** The reason to throw, if the work is cancelled. */
function abortReason(signal: AbortSignal | undefined): unknown {
  if (signal !== undefined) return signal.aborted ? (signal.reason ?? new Error('Aborted')) : undefined;
  const store = scopeStorage.getStore();
  if (store === undefined) contextlessCall('checkpoint()');
  return store?.reason;
}

function yieldToEventLoop(resolve: () => void): void {
  setImmediate(resolve);
}

/**
 * For CPU-bound loops: `await checkpoint()` rejects with the abort reason once the work is cancelled, and
 * lets the event loop run now and then so that the cancellation can be noticed at all (a socket closing
 * or a shutdown signal are events, and a loop that never yields never sees them).
 *
 * It yields at most once every few milliseconds and otherwise only checks a flag, so it is cheap enough to
 * call on every iteration.
 *
 * @param signal what to watch; by default the current request's signal (inside an HTTP request handled by
 * `CancellationModule`). Outside a request, pass `cancellationService.signal` to stop on shutdown. With
 * `asyncContext: false` there is no current request: pass `@RequestSignal()`'s signal (called without one,
 * it warns once).
 *
 * @example
 * ```ts
 * for (const row of rows) {
 *   await checkpoint();
 *   total += expensive(row);
 * }
 * ```
 */
export function checkpoint(signal?: AbortSignal): Promise<void> {
  const before = abortReason(signal);
  if (before !== undefined) return Promise.reject(before);
  if (performance.now() - globalState.lastYield < YIELD_INTERVAL_MS) return RESOLVED;
  return new Promise<void>(yieldToEventLoop).then(() => {
    globalState.lastYield = performance.now();
    const after = abortReason(signal);
    if (after !== undefined) throw after;
  });
}
