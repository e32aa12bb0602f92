// The examples of docs/operator-tools.md, verbatim between the region markers: test/readme.e2e-spec.ts checks
// each copy and runs the code against a real server.
import { Controller, Get, Injectable, Module } from '@nestjs/common';
import type { CanActivate, ExecutionContext, OnModuleInit } from '@nestjs/common';
import { setTimeout as sleep } from 'node:timers/promises';
import { CancellationModule, CancellationRegistry, RequestSignal } from 'nestjs-cancellation';
import type { SettledEvent } from 'nestjs-cancellation';

@Controller('exports')
export class ExportsController {
  @Get('slow')
  async slow(@RequestSignal() signal: AbortSignal): Promise<string> {
    await sleep(10_000, undefined, { signal });
    return 'exported';
  }
}

// #region audit
@Injectable()
export class CancellationAudit implements OnModuleInit {
  readonly stubborn: SettledEvent[] = [];

  constructor(private readonly registry: CancellationRegistry) {}

  onModuleInit() {
    // Handlers that went on for more than a second after their request was cancelled: work done for nobody.
    this.registry.onSettled((event) => {
      if (event.settledAfterMs > 1_000) this.stubborn.push(event);
    });
  }
}
// #endregion audit

// #region admin
/** Lets operators in: whatever your authentication is (here a shared token). */
@Injectable()
export class OperatorGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const request = context.switchToHttp().getRequest<{ headers: Record<string, string | undefined> }>();
    return request.headers['x-operator-token'] === process.env.OPERATOR_TOKEN;
  }
}

@Module({
  imports: [
    CancellationModule.forRoot({
      // GET /ops/requests lists the requests in flight; POST /ops/requests/:id/cancel cancels one.
      // Off unless configured, and the application does not start without a guard.
      admin: { guard: OperatorGuard, path: 'ops' },
      requestIdHeader: 'x-request-id', // the default: your gateway's id shows up as correlationId
      metrics: true, // OpenTelemetry metrics (install @opentelemetry/api)
      stillRunningWarningMs: process.env.NODE_ENV === 'production' ? false : 2_000,
    }),
  ],
  controllers: [ExportsController],
  providers: [CancellationAudit],
})
export class OperatedAppModule {}
// #endregion admin
