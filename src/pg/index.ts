/**
 * `nestjs-cancellation/pg`: PostgreSQL queries (node-postgres, `pg`) that stop on the server when the request
 * that asked for them is cancelled. `pg` is an optional peer dependency and is typed structurally here: this
 * module imports nothing from it, and the core package keeps no runtime dependency.
 * @module
 */
import { scopeStorage } from '../core/async-context.js';
import { contextlessCall } from '../core/contextless-call.js';
import { CANCEL_CONFIRM_TIMEOUT_MS, cancelAndConfirm } from './cancel-request.js';

/** A query as `pg` takes it besides its text: `{ text, values, name, rowMode }`. */
export interface PgQueryConfig {
  /** The SQL text, with `$1`, `$2`... placeholders. */
  readonly text: string;
  /** The placeholders' values. */
  readonly values?: readonly unknown[];
  /** A prepared statement's name. */
  readonly name?: string;
  /** `'array'`: rows as arrays instead of objects. */
  readonly rowMode?: 'array';
}

/** What a query resolves to (a subset of `pg`'s `QueryResult<R>`). */
export interface PgQueryResult<R> {
  /** The rows returned. */
  readonly rows: R[];
  /** Rows returned or affected (`null` for commands that report none). */
  readonly rowCount: number | null;
  /** The SQL command that ran (`SELECT`, `UPDATE`...). */
  readonly command: string;
  /** The returned columns: their names and type OIDs. */
  readonly fields: ReadonlyArray<{ readonly name: string; readonly dataTypeID: number }>;
}

/**
 * A connected `pg.Client`, or a `PoolClient` you checked out yourself. Only the pure-JavaScript client will do:
 * `pg.native` does not expose the key that a cancel request needs.
 */
export interface PgClientLike {
  /** `pg`'s `client.query()`; the Promise form is the one used. */
  query(query: string | PgQueryConfig, values?: unknown[]): Promise<unknown>;
}

/** A `pg.Pool`. */
export interface PgPoolLike {
  /** Idle clients in the pool (with `connect`, how a pool is told from a client). */
  readonly idleCount: number;
  /** Checks a client out; it is released after the query, and destroyed if its cancellation went wrong. */
  connect(): Promise<PgClientLike & { release(destroy?: boolean): void }>;
}

/**
 * Runs a query that stops when `signal` aborts: the running query is cancelled on the server, the promise
 * rejects with `signal.reason` (for a request's signal a `CancellationError`, which the interceptor answers
 * with 503, 504 or nothing for a client that left, never 500), and a pooled connection returns to the pool
 * healthy.
 *
 * On abort it sends the protocol's cancel request (what `psql`'s Ctrl+C, libpq's `PQcancel` and Go's pgx send):
 * a separate short connection to the same server carrying the backend's process id and secret key; no
 * authentication, no pool slot, so it works when the pool is exhausted too. The server interrupts the
 * statement (`ERROR: canceling statement due to user request`, SQLSTATE 57014), and the connection is ready
 * for the next query. The promise rejects once the server has confirmed that (a few milliseconds after the
 * abort; after at most 1 s if it does not). Inside a transaction, a cancelled statement leaves the transaction
 * aborted: roll it back.
 *
 * - Given a **pool**, it checks out a connection (a wait for a free one is abandoned on abort too) and gives it
 *   back only once the cancelled query has ended with `57014`; a connection whose query ended otherwise (it
 *   finished at the very moment of the abort, or did not answer within 1 s) is destroyed rather than
 *   reused, so a late cancel can never hit somebody else's query.
 * - Given a **client** (a `pg.Client` or a `PoolClient` you hold for a transaction), it runs the query on it;
 *   the client must not run other queries at the same time (a cancel stops whatever the connection runs).
 *
 * Closing the connection instead would not stop the query: the server notices a vanished client only when it
 * next writes to it.
 *
 * @param target a `pg.Pool`, or a connected `pg.Client` / `PoolClient`
 * @param query the SQL text, or a query config (`{ text, values, name, rowMode }`); not a `Submittable`
 *   (cursor, stream)
 * @param values the query's parameters (`$1`, `$2`, ...)
 * @param signal what cancels the query; by default the current request's signal (none outside a request:
 *   pass `CancellationService.signal` there to stop at shutdown; none with `asyncContext: false`, where it
 *   warns once: pass `@RequestSignal()`'s signal)
 *
 * @example
 * ```ts
 * import { queryWithSignal } from 'nestjs-cancellation/pg';
 *
 * const { rows } = await queryWithSignal<{ day: string; total: number }>(
 *   this.pool,
 *   'SELECT day, sum(amount) AS total FROM orders WHERE shop = $1 GROUP BY day',
 *   [shopId],
 * );
 * ```
 */
export async function queryWithSignal<R = Record<string, unknown>>(
  target: PgPoolLike | PgClientLike,
  query: string | PgQueryConfig,
  values?: readonly unknown[],
  signal: AbortSignal | undefined = signalOfScope(),
): Promise<PgQueryResult<R>> {
  if (!isClient(target) && !isPool(target)) {
    throw new TypeError(
      'queryWithSignal: expected a pg.Pool, or a pg.Client / PoolClient of the pure-JavaScript client ' +
        '(pg.native has no backend key to cancel with)',
    );
  }
  signal?.throwIfAborted();
  if (isClient(target)) return run<R>(target, query, values, signal);
  const client = await checkOut(target, signal);
  return run<R>(client, query, values, signal, (destroy) => client.release(destroy));
}

/** The current scope's signal, the default of `queryWithSignal()`'s. */
function signalOfScope(): AbortSignal | undefined {
  const store = scopeStorage.getStore();
  if (store === undefined) contextlessCall('queryWithSignal()');
  return store?.signal;
}

/** A pg client has `processID` from its constructor on (null until it is connected). */
function isClient(target: object): target is PgClientLike {
  return 'processID' in target && typeof (target as Partial<PgClientLike>).query === 'function';
}

function isPool(target: object): target is PgPoolLike {
  return 'idleCount' in target && typeof (target as Partial<PgPoolLike>).connect === 'function';
}

/** `pool.connect()`, abandoned on abort: the connection it brings later goes straight back. */
function checkOut(
  pool: PgPoolLike,
  signal: AbortSignal | undefined,
): Promise<PgClientLike & { release(destroy?: boolean): void }> {
  const connecting = pool.connect();
  if (signal === undefined) return connecting;
  return new Promise((resolve, reject) => {
    let abandoned = false;
    const onAbort = (): void => {
      abandoned = true;
      reject(signal.reason);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    connecting.then(
      (client) => {
        signal.removeEventListener('abort', onAbort);
        if (abandoned) client.release();
        else resolve(client);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        if (!abandoned) reject(err);
      },
    );
  });
}

function run<R>(
  client: PgClientLike,
  query: string | PgQueryConfig,
  values: readonly unknown[] | undefined,
  signal: AbortSignal | undefined,
  release?: (destroy?: boolean) => void,
): Promise<PgQueryResult<R>> {
  let running: Promise<PgQueryResult<R>>;
  try {
    running = client.query(query, values as unknown[] | undefined) as Promise<PgQueryResult<R>>;
  } catch (err) {
    release?.();
    throw err;
  }
  if (signal === undefined) return running.finally(() => release?.());

  return new Promise((resolve, reject) => {
    let aborted = false;
    const onAbort = (): void => {
      aborted = true;
      let timer: NodeJS.Timeout | undefined;
      const expired = new Promise<false>((done) => {
        timer = setTimeout(done, CANCEL_CONFIRM_TIMEOUT_MS, false);
      });
      void Promise.race([cancelAndConfirm(client, running), expired]).then((clean) => {
        clearTimeout(timer);
        // Only a connection whose query was stopped by our cancel is known to be idle and clean.
        release?.(!clean);
        reject(signal.reason);
      });
    };
    signal.addEventListener('abort', onAbort, { once: true });
    running.then(
      (result) => {
        if (aborted) return;
        signal.removeEventListener('abort', onAbort);
        release?.();
        resolve(result);
      },
      (err: unknown) => {
        if (aborted) return;
        signal.removeEventListener('abort', onAbort);
        release?.();
        reject(err);
      },
    );
  });
}
