import { Injectable, Logger } from '@nestjs/common';
import { Interval } from '@nestjs/schedule';
import { setTimeout as sleep } from 'node:timers/promises';
import { CancellationService, findCancellationError } from 'nestjs-cancellation';
import { JobTimeout } from 'nestjs-cancellation/schedule';

/** A whole number of milliseconds from the environment (the tests run the job faster). */
function msFromEnv(name: string, fallback: number): number {
  const value = Number(process.env[name] ?? fallback);
  if (!Number.isInteger(value) || value < 1)
    throw new Error(`${name} must be a whole number of ms, got ${value}`);
  return value;
}

/** Every DIGEST_EVERY_MS (20 s), a digest of DIGEST_ITEMS (10) items, DIGEST_STEP_MS (1 s) each. */
const EVERY_MS = msFromEnv('DIGEST_EVERY_MS', 20_000);
const ITEMS = msFromEnv('DIGEST_ITEMS', 10);
const STEP_MS = msFromEnv('DIGEST_STEP_MS', 1_000);
/** Each run's budget: DIGEST_BUDGET_MS (15 s). */
const BUDGET_MS = msFromEnv('DIGEST_BUDGET_MS', 15_000);

/**
 * A scheduled job. `CancellationScheduleModule` gives each of its runs its own signal, which aborts when the
 * run has used its `@JobTimeout` budget (`timeout`), when an operator cancels it by id (`manual`: `GET /digest`
 * lists the runs, `DELETE /digest/runs/:id` cancels one) and at shutdown (`shutdown`).
 */
@Injectable()
export class DigestJob {
  private readonly logger = new Logger('Digest');

  constructor(private readonly cancellation: CancellationService) {}

  @Interval('digest', EVERY_MS)
  @JobTimeout(BUDGET_MS)
  async digest(): Promise<void> {
    // Inside a run, requestId is the run's id (what inFlight() lists and cancel() takes).
    const { signal, requestId: run } = this.cancellation;
    this.logger.log(`Digest run ${run} started: ${ITEMS} items`);
    let done = 0;
    try {
      for (; done < ITEMS; done++) await sleep(STEP_MS, undefined, { signal });
      this.logger.log(`Digest run ${run} done: ${done} items`);
    } catch (err) {
      const cancelled = findCancellationError(err);
      if (cancelled === undefined) throw err;
      this.logger.log(`Digest run ${run} stopped (${cancelled.kind}) after ${done} items`);
    }
  }
}
