import { Processor, WorkerHost } from '@nestjs/bullmq';
import type { Job } from 'bullmq';
import { setTimeout as sleep } from 'node:timers/promises';
import { CancellationService } from 'nestjs-cancellation';

/** What a render job is asked to do. */
export interface RenderJob {
  readonly steps: number;
  readonly stepMs: number;
}

/** The queue's name: its jobs' ids in the registry are `renders:<job id>`. */
export const RENDERS = 'renders';

/**
 * A long job: `steps` steps of `stepMs` each, reporting its progress. It waits on the job's own signal, so it
 * stops when an operator cancels it (from any instance of the fleet), when its budget is spent and when this
 * instance shuts down (the job then goes back to the queue for another instance).
 */
@Processor(RENDERS, { concurrency: 4 })
export class RenderProcessor extends WorkerHost {
  constructor(private readonly cancellation: CancellationService) {
    super();
  }

  async process(job: Job<RenderJob>): Promise<{ steps: number }> {
    const { steps, stepMs } = job.data;
    for (let step = 1; step <= steps; step++) {
      await sleep(stepMs, undefined, { signal: this.cancellation.signal });
      await job.updateProgress(Math.round((step / steps) * 100));
    }
    return { steps };
  }
}
