/** At most ten digits: anything longer is a lie or an attack, and is ignored. */
const MILLISECONDS = /^[0-9]{1,10}$/;

/**
 * The budget a caller propagated in the deadline header, in whole milliseconds; `undefined` for a missing,
 * empty, negative, fractional, exponent, huge or repeated value (Node joins repeated headers with ", ").
 * The caller of this function only ever lets it shorten a budget.
 * @internal
 */
export function parseDeadlineHeader(value: string | string[] | undefined, max: number): number | undefined {
  if (typeof value !== 'string' || !MILLISECONDS.test(value)) return undefined;
  const ms = Number(value);
  return ms <= max ? ms : undefined;
}

/** Mutable view of the headers of an outgoing axios request. */
interface AxiosLikeHeaders {
  set?(name: string, value: string): unknown;
  [name: string]: unknown;
}

/**
 * The part of an axios request config the interceptor touches (structural, so that axios stays an optional
 * peer).
 */
export interface AxiosLikeRequestConfig {
  /** The request's abort signal; set to the current request's signal when the call has none of its own. */
  signal?: unknown;
  /** The outgoing headers; the deadline header is added here. */
  headers?: AxiosLikeHeaders;
}

/**
 * Anything with axios' `interceptors.request.use()`: an `AxiosInstance`, or `HttpService.axiosRef` of
 * `@nestjs/axios`.
 */
export interface AxiosLikeInstance {
  /** axios' interceptor registry: a request interceptor is added to it. */
  interceptors: {
    request: {
      use(onFulfilled: <C extends AxiosLikeRequestConfig>(config: C) => C): number;
    };
  };
}

/** @internal */
export function setAxiosHeader(config: AxiosLikeRequestConfig, name: string, value: string): void {
  const headers = (config.headers ??= {});
  if (typeof headers.set === 'function') headers.set(name, value);
  else headers[name] = value;
}
