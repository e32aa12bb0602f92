// The recipes of the README and of docs/*.md, verbatim between the region markers: test/readme.e2e-spec.ts
// checks each copy and runs the code against a real server.
import { HttpModule, HttpService } from '@nestjs/axios';
import { Controller, Get, Injectable, Logger, Module, Query } from '@nestjs/common';
import type { OnApplicationBootstrap, OnModuleInit } from '@nestjs/common';
import { execFile } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { firstValueFrom } from 'rxjs';
import {
  CancellationModule,
  CancellationService,
  OutboundCancellation,
  RequestSignal,
  RequestTimeout,
  checkpoint,
  isCancellationError,
} from 'nestjs-cancellation';

const execFileAsync = promisify(execFile);

// #region service
@Injectable()
export class PricesService {
  constructor(private readonly cancellation: CancellationService) {}

  async quote(upstream: string): Promise<unknown> {
    // `signal` is the current request's: no need to pass it down from the controller.
    const res = await fetch(upstream, { signal: this.cancellation.signal });
    return res.json();
  }
}
// #endregion service

@Injectable()
export class StockService {
  private readonly logger = new Logger(StockService.name);

  constructor(private readonly cancellation: CancellationService) {}

  async level(url: string): Promise<unknown> {
    const signal = this.cancellation.signal;
    // #region is-cancellation-error
    try {
      const res = await fetch(url, { signal });
      return await res.json();
    } catch (err) {
      if (!isCancellationError(err)) this.logger.error(err);
      throw err; // answered as the cancellation it is: 503, 504, or nothing for a client that left
    }
    // #endregion is-cancellation-error
  }
}

// #region cpu-loop
export async function countPrimes(limit: number): Promise<number> {
  let count = 0;
  for (let n = 2; n < limit; n++) {
    await checkpoint(); // cheap; yields every few ms; throws once the request is cancelled
    let prime = true;
    for (let d = 2; d * d <= n; d++) {
      if (n % d === 0) {
        prime = false;
        break;
      }
    }
    if (prime) count++;
  }
  return count;
}
// #endregion cpu-loop

// #region child-process
@Injectable()
export class ArchiveService {
  constructor(private readonly cancellation: CancellationService) {}

  async checksum(path: string): Promise<string> {
    // The child is killed (SIGTERM) when the request is cancelled.
    const { stdout } = await execFileAsync('sha256sum', [path], { signal: this.cancellation.signal });
    return stdout.split(' ')[0];
  }
}
// #endregion child-process

@Controller()
export class RecipesController {
  constructor(
    private readonly prices: PricesService,
    private readonly archive: ArchiveService,
    private readonly stock: StockService,
  ) {}

  @Get('quote')
  quote(@Query('upstream') upstream: string) {
    return this.prices.quote(upstream);
  }

  @Get('primes')
  async primes(@Query('limit') limit: string) {
    return { count: await countPrimes(Number(limit)) };
  }

  @Get('stock')
  @RequestTimeout(200)
  stockLevel(@Query('upstream') upstream: string) {
    return this.stock.level(upstream);
  }

  @Get('checksum')
  async checksum(@Query('path') path: string) {
    return { sha256: await this.archive.checksum(path) };
  }

  // #region timeout
  @Get('export')
  @RequestTimeout(200) // 504 after 200 ms; the signal aborts with kind 'timeout'
  async export(@RequestSignal() signal: AbortSignal) {
    await sleep(10_000, undefined, { signal });
    return 'never sent';
  }
  // #endregion timeout
}

// #region draining
@Injectable()
export class ReportScheduler implements OnApplicationBootstrap {
  running = 0;

  constructor(private readonly cancellation: CancellationService) {}

  onApplicationBootstrap() {
    const timer = setInterval(() => void this.runReport(), 50);
    // Take no new work once shutdown begins; the reports already running go on until shutdownSignal.
    this.cancellation.drainingSignal.addEventListener('abort', () => clearInterval(timer), { once: true });
  }

  private async runReport() {
    this.running++;
    try {
      // Outside a request, `signal` is the application's shutdown signal.
      await sleep(1_000, undefined, { signal: this.cancellation.signal });
    } catch {
      // stopped by shutdown
    } finally {
      this.running--;
    }
  }
}
// #endregion draining

// #region module
@Module({
  imports: [
    CancellationModule.forRoot({
      timeoutMs: 30_000, // every route's budget, unless it says otherwise
      shutdownGracePeriodMs: 200, // requests in flight may finish for 200 ms; then they are aborted
      retryAfterSeconds: 5, // sent with the 503 that answers requests cut by shutdown
      deadlineHeader: 'x-request-timeout-ms', // accept (and send) the caller's remaining budget
    }),
  ],
  controllers: [RecipesController],
  providers: [PricesService, ArchiveService, StockService, ReportScheduler],
})
export class RecipesModule {}
// #endregion module

// #region for-root-async
export const SETTINGS = Symbol('settings');

@Module({ providers: [{ provide: SETTINGS, useValue: { requestTimeoutMs: 10_000 } }], exports: [SETTINGS] })
export class SettingsModule {}

@Module({
  imports: [
    CancellationModule.forRootAsync({
      imports: [SettingsModule],
      inject: [SETTINGS],
      useFactory: (settings: { requestTimeoutMs: number }) => ({ timeoutMs: settings.requestTimeoutMs }),
    }),
  ],
})
export class AsyncConfiguredModule {}
// #endregion for-root-async

// #region outbound
@Injectable()
export class InventoryClient implements OnModuleInit {
  constructor(
    private readonly outbound: OutboundCancellation,
    private readonly http: HttpService,
  ) {}

  onModuleInit() {
    // Every call of this axios instance now carries the request's signal and what is left of its budget.
    this.outbound.instrumentAxios(this.http.axiosRef);
  }

  // fetch() that aborts with the request and sends its remaining budget in `deadlineHeader`.
  viaFetch(url: string): Promise<unknown> {
    return this.outbound.fetch(url).then((res) => res.json());
  }

  viaAxios(url: string): Promise<unknown> {
    return firstValueFrom(this.http.get<unknown>(url)).then((res) => res.data);
  }
}
// #endregion outbound

@Controller('inventory')
export class InventoryController {
  constructor(private readonly inventory: InventoryClient) {}

  @Get('fetch')
  @RequestTimeout(300)
  viaFetch(@Query('upstream') upstream: string) {
    return this.inventory.viaFetch(upstream);
  }

  @Get('axios')
  @RequestTimeout(300)
  viaAxios(@Query('upstream') upstream: string) {
    return this.inventory.viaAxios(upstream);
  }
}

@Module({
  imports: [CancellationModule.forRoot({ deadlineHeader: 'x-request-timeout-ms' }), HttpModule],
  controllers: [InventoryController],
  providers: [InventoryClient],
})
export class OutboundModule {}
