// The examples of docs/contexts.md#bullmq-jobs and docs/operator-tools.md#across-instances-the-fleet, verbatim
// between the region markers: test/readme.e2e-spec.ts checks each copy, test/bullmq.e2e-spec.ts runs them
// against a real Redis.
import { Injectable } from '@nestjs/common';
import type { DynamicModule } from '@nestjs/common';
import { BullModule, Processor, WorkerHost } from '@nestjs/bullmq';
import type { Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { setTimeout } from 'node:timers/promises';
import { CancellationModule, CancellationService } from 'nestjs-cancellation';
import { CancellationBullModule } from 'nestjs-cancellation/bullmq';
import { CancellationFleetModule } from 'nestjs-cancellation/fleet';
import { OperatorGuard } from './operator.js';

// #region processor
@Processor('reports')
export class ReportsProcessor extends WorkerHost {
  constructor(private readonly cancellation: CancellationService) {
    super();
  }

  async process(job: Job<{ rows: number }>): Promise<number> {
    for (let row = 1; row <= job.data.rows; row++) {
      // The job's own signal: worker.cancelJob(), cancel(id), jobTimeoutMs and shutdown abort it.
      await setTimeout(10, undefined, { signal: this.cancellation.signal });
      await job.updateProgress(Math.round((row / job.data.rows) * 100));
    }
    return job.data.rows;
  }
}
// #endregion processor

@Injectable()
class QueuesModule {}

/** The application's modules, on the Redis at `redisUrl` (BullMQ's connection given as an ioredis client). */
export function queuesModule(redisUrl: string, connection: Redis): DynamicModule {
  // #region modules
  return {
    module: QueuesModule,
    imports: [
      CancellationModule.forRoot({ shutdownGracePeriodMs: 10_000, admin: { guard: OperatorGuard } }),
      CancellationBullModule.forRoot({ jobTimeoutMs: 5 * 60_000 }),
      CancellationFleetModule.forRoot({ redis: redisUrl, leaseMs: 10_000 }),
      // In an ES module bullmq cannot load ioredis itself: give it a client,
      // `new Redis(redisUrl, { maxRetriesPerRequest: null })`.
      BullModule.forRoot({ connection }),
      BullModule.registerQueue({ name: 'reports' }),
    ],
    providers: [ReportsProcessor],
  };
  // #endregion modules
}
