import { Inject, Injectable } from '@nestjs/common';
import { scopeStorage } from '../core/async-context.js';
import { RESOLVED_OPTIONS } from '../module/cancellation.module-definition.js';
import type { ResolvedCancellationOptions } from '../module/cancellation.options.js';
import { ApplicationSignals } from '../shutdown/application-signals.js';
import { setAxiosHeader } from './axios-like.js';
import type { AxiosLikeInstance } from './axios-like.js';

/**
 * Carries the current request's cancellation to the services it calls over HTTP: its signal, so that the
 * outgoing call stops with it, and, when `deadlineHeader` is set, what is left of its budget, so that the
 * service called stops in time too. Outside a request, calls stop on shutdown.
 *
 * @example
 * ```ts
 * @Injectable()
 * export class InventoryClient {
 *   constructor(private readonly outbound: OutboundCancellation) {}
 *
 *   stock(sku: string): Promise<Response> {
 *     return this.outbound.fetch(`${INVENTORY_URL}/stock/${sku}`);
 *   }
 * }
 * ```
 */
@Injectable()
export class OutboundCancellation {
  constructor(
    @Inject(RESOLVED_OPTIONS) private readonly options: ResolvedCancellationOptions,
    @Inject(ApplicationSignals) private readonly signals: ApplicationSignals,
  ) {}

  /**
   * `fetch()` that aborts with the current request's signal (and with the signal of `init` or of a `Request`
   * given as `input`, whichever aborts first) and sends the remaining budget in `deadlineHeader`. A `Request`'s
   * own headers are kept; `init.headers` are added to them, as `fetch()` itself would.
   */
  fetch(input: string | URL | Request, init: RequestInit = {}): Promise<Response> {
    const base = input instanceof Request ? input : undefined;
    const headers = new Headers(base?.headers);
    new Headers(init.headers).forEach((value, name) => headers.set(name, value));
    const scope = scopeStorage.getStore();
    const header = this.options.deadlineHeader;
    const remaining = scope?.remainingMs;
    if (header !== false && remaining !== undefined) headers.set(header, String(Math.ceil(remaining)));
    const own = scope?.signal ?? this.signals.shutdownSignal;
    const signals = [own];
    if (base !== undefined) signals.push(base.signal);
    if (init.signal) signals.push(init.signal);
    const signal = signals.length === 1 ? own : AbortSignal.any(signals);
    return fetch(input, { ...init, headers, signal });
  }

  /**
   * Makes every request of an axios instance (e.g. `HttpService.axiosRef` of `@nestjs/axios`) carry the
   * cancellation of the request it is made for: its signal, unless the call passes its own, and, when
   * `deadlineHeader` is set, the remaining budget. Register it once, e.g. in `onModuleInit()`.
   *
   * @returns the id of the axios request interceptor (for `interceptors.request.eject(id)`)
   */
  instrumentAxios(axios: AxiosLikeInstance): number {
    return axios.interceptors.request.use((config) => {
      const scope = scopeStorage.getStore();
      config.signal ??= scope?.signal ?? this.signals.shutdownSignal;
      const header = this.options.deadlineHeader;
      const remaining = scope?.remainingMs;
      if (header !== false && remaining !== undefined)
        setAxiosHeader(config, header, String(Math.ceil(remaining)));
      return config;
    });
  }
}
