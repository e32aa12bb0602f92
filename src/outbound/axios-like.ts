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
