import { BadGatewayException, Injectable, Logger } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import type { AddressInfo } from 'node:net';
import { CancellationService, isCancellationError } from 'nestjs-cancellation';
import type { CancellationError } from 'nestjs-cancellation';
import type { DownstreamReply } from './downstream.controller.js';

export interface Aggregate {
  sources: DownstreamReply[];
  total: number;
  elapsedMs: number;
}

const SOURCES = ['inventory', 'pricing', 'reviews'];

@Injectable()
export class AggregateService {
  private readonly logger = new Logger(AggregateService.name);

  constructor(
    private readonly cancellation: CancellationService,
    private readonly adapterHost: HttpAdapterHost,
  ) {}

  /**
   * Calls the downstream service once per source, in parallel. The request's signal goes straight into
   * `fetch`: when the client hangs up, the deadline passes or the application shuts down, every call in
   * flight is aborted (its connection closed, so the downstream stops as well) and `fetch` rejects with
   * the cancellation, which the interceptor answers as such.
   */
  async aggregate(delayMs: number): Promise<Aggregate> {
    const { signal } = this.cancellation;
    const startedAt = performance.now();
    const base = this.downstreamUrl();
    try {
      const sources = await Promise.all(
        SOURCES.map(async (source) => {
          const url = `${base}/downstream/slow?ms=${delayMs}&source=${source}`;
          const response = await fetch(url, { signal });
          if (!response.ok) throw new BadGatewayException(`${url} answered ${response.status}`);
          return (await response.json()) as DownstreamReply;
        }),
      );
      const total = sources.reduce((sum, reply) => sum + reply.value, 0);
      return { sources, total, elapsedMs: Math.round(performance.now() - startedAt) };
    } catch (err) {
      if (isCancellationError(err)) {
        const { kind } = signal.reason as CancellationError;
        this.logger.log(`Aggregate stopped (${kind}): downstream calls aborted`);
        throw err;
      }
      if (err instanceof BadGatewayException) throw err;
      throw new BadGatewayException(`downstream call failed: ${String(err)}`, { cause: err });
    }
  }

  /** DOWNSTREAM_URL (the base URL of a service with `/downstream/slow`), else this application itself. */
  private downstreamUrl(): string {
    const configured = process.env.DOWNSTREAM_URL;
    if (configured) return configured.replace(/\/+$/, '');
    const address = this.adapterHost.httpAdapter.getHttpServer().address() as AddressInfo;
    const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    return `http://${host === '0.0.0.0' || host === '[::]' ? '127.0.0.1' : host}:${address.port}`;
  }
}
