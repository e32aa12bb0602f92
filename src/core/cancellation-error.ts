/**
 * Why a request (or the application) was cancelled.
 * - `'client-disconnected'`: the client closed the connection before the response was complete.
 * - `'shutdown'`: the application is shutting down (`app.close()`, or SIGTERM under `enableShutdownHooks()`).
 * - `'timeout'`: the request's time budget (`@RequestTimeout()` or the `timeoutMs` option) ran out.
 * - `'manual'`: user code cancelled it.
 */
export type CancellationKind = 'client-disconnected' | 'shutdown' | 'timeout' | 'manual';

const DEFAULT_MESSAGES: Record<CancellationKind, string> = {
  'client-disconnected': 'The client closed the connection before the response was sent',
  shutdown: 'The application is shutting down',
  timeout: 'The request ran out of time',
  manual: 'The request was cancelled',
};

/**
 * The `reason` of every AbortSignal this package aborts. `fetch`, `timers/promises`, `events.once` and the
 * other signal-aware APIs reject with it (or with an `AbortError` whose `cause` is it), so a handler may
 * simply let it propagate: the interceptor turns it into the right response (503, 504, or nothing for a
 * client that is gone) and never into a 500.
 *
 * @example
 * ```ts
 * try {
 *   await fetch(url, { signal });
 * } catch (err) {
 *   if (isCancellationError(err)) this.logger.log(`stopped: ${err.kind}`);
 *   throw err;
 * }
 * ```
 */
export class CancellationError extends Error {
  /** Why the work was cancelled. */
  readonly kind: CancellationKind;

  /**
   * @param kind why the work was cancelled
   * @param message a human-readable explanation; defaults to one that names the kind
   * @param options standard `ErrorOptions` (e.g. a `cause`)
   */
  constructor(kind: CancellationKind, message?: string, options?: ErrorOptions) {
    super(message ?? DEFAULT_MESSAGES[kind], options);
    this.kind = kind;
  }

  /** `'CancellationError'`, subclasses included: what stack traces and log lines name the error. */
  override get name(): string {
    return 'CancellationError';
  }
}

/**
 * Brand on the prototype, so that an error made by the other (ESM or CommonJS) copy of this package is
 * recognised too: `instanceof` cannot see across copies.
 */
const BRAND = Symbol.for('nestjs-cancellation.CancellationError');
Object.defineProperty(CancellationError.prototype, BRAND, { value: true });

function isBranded(err: unknown): err is CancellationError {
  return typeof err === 'object' && err !== null && (err as Record<symbol, unknown>)[BRAND] === true;
}

const MAX_CAUSE_DEPTH = 8;

/**
 * Finds the `CancellationError` behind an error: the error itself, or one in its `cause` chain (as in the
 * `AbortError` that `timers/promises` rejects with). Returns `undefined` for anything else.
 */
export function findCancellationError(err: unknown): CancellationError | undefined {
  let current = err;
  for (let depth = 0; depth < MAX_CAUSE_DEPTH && current != null; depth++) {
    if (isBranded(current)) return current;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

/**
 * Whether `err` is a {@link CancellationError}, or an error caused by one (for example the `AbortError` that
 * `timers/promises` or `events.once` reject with when the request's signal aborts).
 *
 * @example
 * ```ts
 * catch (err) {
 *   if (!isCancellationError(err)) this.logger.error(err);
 *   throw err;
 * }
 * ```
 */
export function isCancellationError(err: unknown): boolean {
  return findCancellationError(err) !== undefined;
}
