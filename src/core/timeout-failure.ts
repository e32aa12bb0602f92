/** Error codes that say an operation ran out of time: Node's sockets, undici (`fetch`), the `request` library. */
const TIMEOUT_CODES = new Set([
  'ETIMEDOUT',
  'ESOCKETTIMEDOUT',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
]);

const MAX_CAUSE_DEPTH = 8;

/** One error (not its causes) says it ran out of time. */
function isTimeout(err: object): boolean {
  const { name, code, message } = err as { name?: unknown; code?: unknown; message?: unknown };
  if (name === 'TimeoutError') return true;
  if (typeof code === 'string' && TIMEOUT_CODES.has(code)) return true;
  const text = typeof message === 'string' ? message : '';
  // axios without `transitional.clarifyTimeoutError`; PostgreSQL's `statement_timeout`; gRPC's deadline.
  return (
    (code === 'ECONNABORTED' && /timeout/i.test(text)) ||
    (code === '57014' && /statement timeout/.test(text)) ||
    (code === 4 && /DEADLINE_EXCEEDED/.test(text))
  );
}

/**
 * Whether `err` says that something ran out of time: a `TimeoutError` (`AbortSignal.timeout()`, RxJS
 * `timeout()`, p-timeout, got, ky), a socket or `fetch` timeout (`ETIMEDOUT`, undici's `UND_ERR_*_TIMEOUT`),
 * axios's timeout, PostgreSQL's `statement_timeout`, gRPC's `DEADLINE_EXCEEDED`, or an error (an
 * `AbortError`, a wrapper) caused by one of them. What a request whose budget is spent fails with when the work
 * it gave its deadline to (a downstream call) gives up first, which is answered as the request's timeout.
 *
 * An `HttpException` is never one: it is the answer the application chose (a `NotFoundException` stays 404).
 * @internal
 */
export function isTimeoutFailure(err: unknown): boolean {
  if (typeof (err as { getStatus?: unknown } | null)?.getStatus === 'function') return false;
  let current = err;
  for (let depth = 0; depth < MAX_CAUSE_DEPTH && typeof current === 'object' && current !== null; depth++) {
    if (isTimeout(current)) return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}
