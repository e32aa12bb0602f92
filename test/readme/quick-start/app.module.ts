// The README's quick start (with main.ts beside it), verbatim between the region markers:
// test/readme.e2e-spec.ts checks the copy and runs this code against a real server.
// #region quick-start
// app.module.ts
import { Controller, Get, Module } from '@nestjs/common';
import { setTimeout } from 'node:timers/promises';
import { CancellationModule, RequestSignal } from 'nestjs-cancellation';

@Controller('reports')
export class ReportsController {
  @Get()
  async build(@RequestSignal() signal: AbortSignal) {
    // Rejects as soon as the client hangs up or the app shuts down: the work stops, no 500 is logged.
    await setTimeout(5_000, undefined, { signal });
    return { ready: true };
  }
}

@Module({ imports: [CancellationModule.forRoot()], controllers: [ReportsController] })
export class AppModule {}
// #endregion quick-start
