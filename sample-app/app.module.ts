import { Logger, Module } from '@nestjs/common';
import type { OnApplicationShutdown } from '@nestjs/common';
import { CancellationModule, CancellationService } from 'nestjs-cancellation';
import { AggregateModule } from './aggregate/aggregate.module.js';
import { CommandsModule } from './commands/commands.module.js';
import { DemoModule } from './demo/demo.module.js';
import { DigestModule } from './digest/digest.module.js';
import { PrimesModule } from './primes/primes.module.js';
import { ProcessingModule } from './processing/processing.module.js';
import { QueueModule } from './queue/queue.module.js';
import { RenderModule } from './render/render.module.js';
import { ReportsModule } from './reports/reports.module.js';
import { TasksModule } from './tasks/tasks.module.js';
import { WorkersModule } from './workers/workers.module.js';

@Module({
  imports: [
    // One import makes every route cancellable: a request's AbortSignal aborts when its client disconnects,
    // when its time budget runs out and when the application shuts down.
    CancellationModule.forRoot({
      // No request runs longer than 30 s unless its route says otherwise (@RequestTimeout): 504 after that.
      timeoutMs: 30_000,
      // Requests cut short by a shutdown get 503 + Retry-After: 5, so a client or a load balancer retries
      // on another instance instead of reporting an error.
      retryAfterSeconds: 5,
    }),
    TasksModule,
    PrimesModule,
    ProcessingModule,
    AggregateModule,
    // Cancellation reaching real work: a PostgreSQL query, a worker thread, an external program.
    ReportsModule,
    WorkersModule,
    CommandsModule,
    // The demo page (GET /demo): a long job followed over SSE, cancelled from the browser.
    DemoModule,
    // Beyond HTTP: a gRPC service (cancelled by its caller, its deadline, shutdown) and a scheduled job
    // (stopped by its budget, an operator, shutdown).
    RenderModule,
    DigestModule,
    // With REDIS_URL: a BullMQ queue of long jobs that stop on their signal, and the fleet (every instance on
    // that Redis lists and cancels the others' work). Without it, off, with a log line that says so.
    QueueModule.fromEnv(),
  ],
})
export class AppModule implements OnApplicationShutdown {
  private readonly logger = new Logger('App');

  // Marks in the log where shutdown began: the drain, which CancellationModule starts before any module's
  // shutdown hook (this module's onModuleDestroy would run after the requests in flight were aborted).
  constructor(cancellation: CancellationService) {
    cancellation.drainingSignal.addEventListener('abort', () => this.logger.log('Shutting down'), {
      once: true,
    });
  }

  // The last one, after the HTTP server has closed: nothing the application started is still running.
  onApplicationShutdown(signal?: string): void {
    this.logger.log(`HTTP server closed${signal === undefined ? '' : ` (${signal})`}; exiting`);
  }
}
