import { AsyncLocalStorage } from 'node:async_hooks';
import type { CancellationError } from './cancellation-error.js';

/**
 * What code running in a scope (an HTTP request, a message, a resolver's request, a job) reads of it through
 * the AsyncLocalStorage store.
 * @internal
 */
export interface ScopeState {
  /** The scope's AbortSignal (created on first read). */
  readonly signal: AbortSignal;
  /** Why it was cancelled; `undefined` while it is not. */
  readonly reason: CancellationError | undefined;
  /** Milliseconds left of its time budget; `undefined` when it has none. */
  readonly remainingMs: number | undefined;
}

/**
 * Process-wide state lives on `globalThis` under a registered symbol, so that the ESM and the CommonJS copy
 * of this package (the dual-package hazard) share one AsyncLocalStorage instead of splitting the scope
 * between them.
 */
const GLOBAL_STATE_KEY = Symbol.for('nestjs-cancellation.state.v1');

/** @internal */
interface GlobalState {
  /** The store of the scope being run, seen by everything its handler calls. */
  readonly storage: AsyncLocalStorage<ScopeState>;
  /** `performance.now()` when `checkpoint()` last yielded to the event loop. */
  lastYield: number;
  /**
   * How many applications run with `asyncContext: false` (counted by `CancellationModule` from init to
   * shutdown): their requests have no store, so a call that falls back on the store when given no signal
   * says so. Optional: a state made by an older copy of the package has none.
   */
  contextlessApps?: number;
  /** The calls already warned about (`contextlessCall`): once per process each. */
  warnedCalls?: Set<string>;
}

const holder = globalThis as typeof globalThis & { [GLOBAL_STATE_KEY]?: GlobalState };

/** @internal */
export const globalState: GlobalState = (holder[GLOBAL_STATE_KEY] ??= {
  storage: new AsyncLocalStorage<ScopeState>(),
  lastYield: 0,
});

/**
 * The AsyncLocalStorage that carries the current scope.
 * @internal
 */
export const scopeStorage = globalState.storage;
