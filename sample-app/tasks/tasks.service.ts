import { Injectable, Logger } from '@nestjs/common';
import { setTimeout as sleep } from 'node:timers/promises';
import { CancellationService, isCancellationError } from 'nestjs-cancellation';
import type { CancellationError } from 'nestjs-cancellation';

export interface LongTaskResult {
  task: number;
  steps: number;
  elapsedMs: number;
}

/**
 * The Go question's `longTask`, in Nest: one step a second, and it stops as soon as its request is cancelled,
 * whatever the reason (the client left, the deadline passed, the application is shutting down).
 */
@Injectable()
export class TasksService {
  private readonly logger = new Logger(TasksService.name);
  private lastTaskId = 0;

  // A plain singleton: CancellationService finds the current request's signal through AsyncLocalStorage,
  // so neither a request-scoped provider nor a signal parameter has to be threaded through every call.
  constructor(private readonly cancellation: CancellationService) {}

  async runLongTask(steps: number): Promise<LongTaskResult> {
    const task = ++this.lastTaskId;
    const { signal } = this.cancellation;
    const startedAt = performance.now();
    let step = 0;
    try {
      for (; step < steps; step++) {
        // The wait itself is cancelled: it rejects the moment the signal aborts instead of finishing its
        // second, which is what Go's `time.Sleep` in the question could not do.
        await sleep(1000, undefined, { signal });
        this.logger.log(`Working on long task ${step} (task #${task})`);
      }
    } catch (err) {
      if (isCancellationError(err)) {
        const { kind } = signal.reason as CancellationError;
        this.logger.log(`Long task #${task} stopped (${kind}) after ${step} step${step === 1 ? '' : 's'}`);
      }
      // Let it propagate: the interceptor answers it (503 at shutdown, 504 at the deadline, nothing to a
      // client that is gone), never with a 500.
      throw err;
    }
    return { task, steps, elapsedMs: Math.round(performance.now() - startedAt) };
  }
}
