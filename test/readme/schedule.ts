// The examples of docs/contexts.md#scheduled-jobs, verbatim between the region markers: test/readme.e2e-spec.ts
// checks each copy and test/schedule.e2e-spec.ts runs the code on a real @nestjs/schedule scheduler.
import { Controller, Injectable, Module, Param, Post } from '@nestjs/common';
import { Cron, CronExpression, Interval, ScheduleModule } from '@nestjs/schedule';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  CancellationModule,
  CancellationRegistry,
  CancellationService,
  checkpoint,
} from 'nestjs-cancellation';
import { CancellationScheduleModule, JobTimeout } from 'nestjs-cancellation/schedule';

/** What the examples' jobs did, for the tests. */
export const reports = {
  queryMs: 100,
  started: 0,
  totals: [] as number[],
  stoppedBy: [] as string[],
  synced: 0,
};

/** Stands for a slow query: rows of one region. */
async function rowsOf(region: string, signal: AbortSignal): Promise<number[]> {
  await sleep(reports.queryMs, undefined, { signal });
  return Array.from({ length: 1_000 }, (_, i) => region.length * i);
}

// #region schedule-job
@Injectable()
export class ReportJob {
  constructor(private readonly cancellation: CancellationService) {}

  @Cron(CronExpression.EVERY_HOUR, { name: 'hourly-report' })
  @JobTimeout(10 * 60_000) // each run may take 10 minutes at most
  async buildReport(): Promise<void> {
    // This run's own signal: it aborts at shutdown (after the grace period), when the run has used its
    // 10 minutes, or when an operator cancels the run by its id. Every run gets a new one.
    const { signal } = this.cancellation;
    reports.started++;
    try {
      let total = 0;
      for (const region of ['north', 'south', 'east', 'west']) {
        const rows = await rowsOf(region, signal); // pass it to what the run awaits
        for (const [i, row] of rows.entries()) {
          if (i % 100 === 0) await checkpoint(signal); // and check it in long loops
          total += row;
        }
      }
      reports.totals.push(total);
    } catch (err) {
      reports.stoppedBy.push(String((signal.reason as { kind?: string } | undefined)?.kind));
      throw err; // a run that fails with its own cancellation ends quietly
    }
  }

  @Interval('sync', 30_000)
  async sync(): Promise<void> {
    // Runs of an interval may overlap when one takes longer than the interval: each has its own signal.
    await sleep(50, undefined, { signal: this.cancellation.signal });
    reports.synced++;
  }
}
// #endregion schedule-job

// #region schedule-operator
@Controller('jobs')
export class JobsController {
  constructor(private readonly registry: CancellationRegistry) {}

  // Cancels every run of a job that is in flight (inFlight() lists runs as CRON / INTERVAL / TIMEOUT, with the
  // job's name as their route).
  @Post(':name/cancel')
  cancel(@Param('name') name: string): { cancelled: number } {
    const runs = this.registry.inFlight().filter((work) => work.route === name && !work.cancelled);
    return { cancelled: runs.reduce((sum, run) => sum + this.registry.cancel(run.id, 'Stopped by hand'), 0) };
  }
}
// #endregion schedule-operator

// #region schedule-module
@Module({
  imports: [
    ScheduleModule.forRoot(),
    CancellationModule.forRoot({ shutdownGracePeriodMs: 5_000 }),
    CancellationScheduleModule, // a scope per run of every @Cron / @Interval / @Timeout method
  ],
  controllers: [JobsController],
  providers: [ReportJob],
})
export class JobsModule {}
// #endregion schedule-module
