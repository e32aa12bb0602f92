import { Observable } from 'rxjs';
import type { MonoTypeOperatorFunction } from 'rxjs';
import { scopeStorage } from '../core/async-context.js';
import { contextlessCall } from '../core/contextless-call.js';
import { abortReasonOf } from './from-abort-signal.js';

/**
 * An RxJS operator that ends an Observable when `signal` aborts, by erroring it with the abort reason: for
 * this package's signals the `CancellationError` of the cancellation, so that `lastValueFrom()` /
 * `firstValueFrom()` reject with it (not with RxJS's `EmptyError`, as `takeUntil()` would make them), and
 * unsubscribing from the source, which stops its work (`HttpService` aborts its request, `ClientProxy`
 * forgets its reply).
 *
 * @param signal what to watch; by default the signal of the request (message, call, job) current where the
 * operator is applied, or else where the Observable is subscribed. Outside any, it passes everything through:
 * pass `CancellationService.signal` (the shutdown signal there) to stop on shutdown. With `asyncContext:
 * false` there is no current request: pass `@RequestSignal()`'s signal (applied without one, it warns once).
 *
 * @example
 * ```ts
 * async quote(sku: string): Promise<Quote> {
 *   // Rejects with the request's CancellationError when its client hangs up, its budget runs out or the
 *   // application shuts down; the HTTP call to the pricing service is aborted.
 *   const { data } = await lastValueFrom(this.http.get<Quote>(`${PRICING}/${sku}`).pipe(takeUntilCancelled()));
 *   return data;
 * }
 * ```
 */
export function takeUntilCancelled<T>(signal?: AbortSignal): MonoTypeOperatorFunction<T> {
  // The request's signal where the pipe is built, which is where the call is made.
  const applied = signal ?? scopeStorage.getStore()?.signal;
  return (source) =>
    new Observable<T>((subscriber) => {
      const watched = applied ?? currentSignal();
      if (watched === undefined) return source.subscribe(subscriber);
      if (watched.aborted) {
        subscriber.error(abortReasonOf(watched));
        return undefined;
      }
      const onAbort = (): void => subscriber.error(abortReasonOf(watched));
      watched.addEventListener('abort', onAbort, { once: true });
      const subscription = source.subscribe(subscriber);
      return () => {
        watched.removeEventListener('abort', onAbort);
        subscription.unsubscribe();
      };
    });
}

function currentSignal(): AbortSignal | undefined {
  const store = scopeStorage.getStore();
  if (store === undefined) contextlessCall('takeUntilCancelled()');
  return store?.signal;
}
