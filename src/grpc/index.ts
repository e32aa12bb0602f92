/**
 * `nestjs-cancellation/grpc`: outgoing gRPC calls (`ClientGrpc` of `@nestjs/microservices`) that carry the
 * cancellation of the work that makes them, as Go's gRPC passes a handler's `ctx` on: the remaining time
 * budget (of an HTTP request, `@RequestTimeout()` or `deadlineHeader`, or of the gRPC call being handled) goes
 * out as the call's deadline, and the call is cancelled when the signal aborts. `@grpc/grpc-js` is an
 * optional peer dependency, typed structurally here: this module imports nothing from it.
 *
 * Incoming gRPC calls need nothing from here: `CancellationModule` gives each its own scope.
 * @module
 */
import { Observable, isObservable } from 'rxjs';
import type { MonoTypeOperatorFunction } from 'rxjs';
import { scopeStorage } from '../core/async-context.js';
import { contextlessCall } from '../core/contextless-call.js';

export { GrpcCancellationStatus } from '../contexts/grpc/grpc-status.js';

/** The options of a grpc-js call (`CallOptions` of `@grpc/grpc-js`), as far as this module sets them. */
export interface GrpcCallOptionsLike {
  /** When the call fails with `DEADLINE_EXCEEDED`: a `Date`, or milliseconds since the epoch. */
  deadline?: Date | number;
  /** grpc-js's other options (`credentials`, `interceptors`, `host`...), passed on as they are. */
  [option: string]: unknown;
}

function deadlineMs(deadline: Date | number | undefined): number | undefined {
  if (deadline === undefined) return undefined;
  return typeof deadline === 'number' ? deadline : deadline.getTime();
}

/**
 * Call options that give an outgoing gRPC call the current scope's remaining budget as its deadline (the
 * earlier of it and `options.deadline`); `options` unchanged when the current scope has no budget or there is
 * none (outside a request). Pass them as the call's third argument, after its metadata:
 * `service.findOne(request, metadata, grpcCallOptions())`, or use {@link propagateCancellation}.
 */
export function grpcCallOptions<O extends GrpcCallOptionsLike>(options?: O): O {
  const remaining = scopeStorage.getStore()?.remainingMs;
  const copy = { ...options } as O;
  if (remaining === undefined) return copy;
  // Rounded up, and a millisecond more: the caller's own timer ends the work first and answers it as the
  // timeout it is, instead of the outgoing call failing a fraction of a millisecond earlier (Date.now() has
  // whole milliseconds, a budget fractions of one).
  const budget = Date.now() + Math.ceil(remaining) + 1;
  const own = deadlineMs(options?.deadline);
  copy.deadline = own === undefined ? budget : Math.min(own, budget);
  return copy;
}

/**
 * RxJS operator: when `signal` aborts (by default the current scope's signal, read when the operator is
 * created), unsubscribes from the source, which for a `ClientGrpc` call cancels the call (the server sees
 * `CANCELLED`), and fails with `signal.reason` (a `CancellationError`, answered as the cancellation it is).
 * Without a signal and outside any scope it changes nothing; outside a request pass e.g.
 * `CancellationService.shutdownSignal`.
 */
export function untilAborted<T>(signal?: AbortSignal): MonoTypeOperatorFunction<T> {
  const watched = signal ?? currentSignal('untilAborted()');
  if (watched === undefined) return (source) => source;
  return (source) =>
    new Observable<T>((subscriber) => {
      if (watched.aborted) {
        subscriber.error(watched.reason);
        return undefined;
      }
      const onAbort = (): void => subscriber.error(watched.reason);
      watched.addEventListener('abort', onAbort, { once: true });
      const inner = source.subscribe(subscriber);
      return () => {
        watched.removeEventListener('abort', onAbort);
        inner.unsubscribe();
      };
    });
}

function currentSignal(call: string): AbortSignal | undefined {
  const scope = scopeStorage.getStore();
  if (scope === undefined) contextlessCall(call);
  return scope?.signal;
}

/** A grpc-js `Metadata` (what `ClientGrpc` passes on as the call's metadata), told from call options. */
function isMetadata(value: unknown): boolean {
  const candidate = value as { getMap?: unknown; set?: unknown } | null | undefined;
  return typeof candidate?.getMap === 'function' && typeof candidate.set === 'function';
}

/**
 * The arguments of a `ClientGrpc` method with the call options added. Nest passes a unary or server-streaming
 * method's arguments on to grpc-js as they are (`request, metadata?, options?`), which takes the options in
 * the metadata's place when there is none; for a client-streaming method (its first argument an Observable)
 * Nest passes on only the second, so the options go there when it is free.
 */
function withOptions(args: readonly unknown[]): unknown[] {
  const [first, second, third] = args;
  const streamsRequests = typeof (first as { subscribe?: unknown } | null)?.subscribe === 'function';
  if (streamsRequests) return second === undefined ? [first, grpcCallOptions()] : [...args];
  if (isMetadata(second)) return [first, second, grpcCallOptions(third as GrpcCallOptionsLike | undefined)];
  const options = (second ?? third) as GrpcCallOptionsLike | undefined;
  return [first, grpcCallOptions(options)];
}

/**
 * Wraps a `ClientGrpc` service (`client.getService<T>(name)`) so that each of its calls carries the
 * cancellation of the scope it is made in: the remaining budget as its deadline ({@link grpcCallOptions})
 * and a cancel when the scope's signal aborts ({@link untilAborted}), whether the handler returns the
 * Observable or awaits it (`lastValueFrom`). A call made outside any scope is passed on unchanged. The
 * service's type is kept. A client-streaming call given its own metadata gets the cancel but not the
 * deadline (Nest passes no call options for it): pass the deadline in `grpcCallOptions()` yourself there.
 *
 * @example
 * ```ts
 * this.heroes = propagateCancellation(this.client.getService<HeroesService>('HeroesService'));
 * ```
 */
export function propagateCancellation<S extends object>(service: S): S {
  const wrapped = new Map<PropertyKey, unknown>();
  return new Proxy(service, {
    get(target, property, receiver) {
      const value: unknown = Reflect.get(target, property, receiver);
      if (typeof value !== 'function') return value;
      let method = wrapped.get(property);
      if (method === undefined) {
        const original = value as (...args: unknown[]) => unknown;
        method = (...args: unknown[]): unknown => {
          const scope = scopeStorage.getStore();
          if (scope === undefined) return original.apply(target, args);
          const result = original.apply(target, withOptions(args));
          return isObservable(result) ? result.pipe(untilAborted(scope.signal)) : result;
        };
        wrapped.set(property, method);
      }
      return method;
    },
  });
}
