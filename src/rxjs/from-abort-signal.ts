import { Observable } from 'rxjs';

/**
 * The reason `signal` aborted with, or an `AbortError` for a signal aborted without one.
 * @internal
 */
export function abortReasonOf(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('This operation was aborted', 'AbortError');
}

/**
 * An Observable of `signal`'s abort: emits the abort reason (for this package's signals, the
 * `CancellationError`) once, and completes; at once for a signal already aborted, never for one that never
 * aborts. Unsubscribing removes its listener. For `takeUntil()`, `race()` and the like, where an Observable
 * must end when a request is cancelled.
 *
 * @example
 * ```ts
 * // Polls until the job is done or the request is cancelled, whichever comes first.
 * return interval(1_000).pipe(
 *   switchMap(() => this.jobs.status(id)),
 *   takeUntil(fromAbortSignal(this.cancellation.signal)),
 * );
 * ```
 */
export function fromAbortSignal(signal: AbortSignal): Observable<unknown> {
  return new Observable<unknown>((subscriber) => {
    const onAbort = (): void => {
      subscriber.next(abortReasonOf(signal));
      subscriber.complete();
    };
    if (signal.aborted) {
      onAbort();
      return undefined;
    }
    signal.addEventListener('abort', onAbort, { once: true });
    return () => signal.removeEventListener('abort', onAbort);
  });
}
