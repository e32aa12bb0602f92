// The RxJS recipe of docs/recipes.md, verbatim between the region markers: test/readme.e2e-spec.ts checks the
// copy, and test/rxjs.e2e-spec.ts runs the code against a real HTTP server and a TCP microservice.
import { HttpModule, HttpService } from '@nestjs/axios';
import { Controller, Get, Inject, Injectable, Module, Param } from '@nestjs/common';
import { ClientsModule, Transport } from '@nestjs/microservices';
import type { ClientProxy } from '@nestjs/microservices';
import { lastValueFrom } from 'rxjs';
import { CancellationModule, RequestTimeout, takeUntilCancelled } from 'nestjs-cancellation';

const PRICING_URL = (): string => process.env.PRICING_URL ?? 'http://pricing.internal';

// #region rxjs
@Injectable()
export class QuoteSources {
  constructor(
    private readonly http: HttpService,
    @Inject('INVENTORY') private readonly inventory: ClientProxy,
  ) {}

  /**
   * Rejects with the request's CancellationError when its client hangs up, its budget runs out or the
   * application shuts down (not with RxJS's EmptyError); unsubscribing aborts the HTTP call.
   */
  async price(sku: string): Promise<number> {
    const { data } = await lastValueFrom(
      this.http.get<{ price: number }>(`${PRICING_URL()}/prices/${sku}`).pipe(takeUntilCancelled()),
    );
    return data.price;
  }

  /** The same for a microservice: the reply is no longer waited for. */
  stock(sku: string): Promise<number> {
    return lastValueFrom(this.inventory.send<number>('stock', sku).pipe(takeUntilCancelled()));
  }
}

@Controller('quotes')
export class QuotesController {
  constructor(private readonly sources: QuoteSources) {}

  @Get(':sku')
  @RequestTimeout(2_000)
  async quote(@Param('sku') sku: string): Promise<{ sku: string; price: number; stock: number }> {
    const [price, stock] = await Promise.all([this.sources.price(sku), this.sources.stock(sku)]);
    return { sku, price, stock };
  }
}
// #endregion rxjs

@Module({
  imports: [
    CancellationModule.forRoot(),
    HttpModule,
    ClientsModule.registerAsync([
      {
        name: 'INVENTORY',
        useFactory: () => ({
          transport: Transport.TCP,
          options: { host: '127.0.0.1', port: Number(process.env.INVENTORY_PORT) },
        }),
      },
    ]),
  ],
  controllers: [QuotesController],
  providers: [QuoteSources],
})
export class QuotesModule {}
