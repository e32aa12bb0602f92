import { Injectable, Logger } from '@nestjs/common';
import type { MessageEvent } from '@nestjs/common';
import { setTimeout as sleep } from 'node:timers/promises';
import { checkpoint, findCancellationError } from 'nestjs-cancellation';
import type { CancellationKind } from 'nestjs-cancellation';
import { Observable } from 'rxjs';

/** How a job ended, or `'running'` while it has not. */
export type JobOutcome = 'running' | 'completed' | 'cancelled' | 'failed';

/** What the server remembers of a job: `GET /jobs` lists these. */
export interface JobRecord {
  id: number;
  /** The id of the request running it, as `CancellationService.inFlight()` lists it. */
  requestId?: string;
  /** Epoch milliseconds. */
  startedAt: number;
  /** Epoch milliseconds, once it ended. */
  endedAt?: number;
  steps: number;
  stepMs: number;
  stepsDone: number;
  /** The primes found so far: the work the steps do. */
  primes: number;
  outcome: JobOutcome;
  /** Why it was cancelled (the `CancellationError`'s kind), when it was. */
  kind?: CancellationKind;
  /** The cancellation's or the failure's message. */
  message?: string;
}

/** What a job is asked to do. */
export interface JobSpec {
  steps: number;
  /** Pause after each step, so that a person watching can follow the progress bar. */
  stepMs: number;
}

/** How many numbers each step checks for primality. */
const NUMBERS_PER_STEP = 20_000;
/** How many jobs `GET /jobs` remembers. */
const HISTORY = 50;

function isPrime(n: number): boolean {
  if (n < 4) return n > 1;
  if (n % 2 === 0) return false;
  for (let d = 3; d * d <= n; d += 2) if (n % d === 0) return false;
  return true;
}

/**
 * The demo page's long job: step by step, it counts the primes in the next block of numbers (CPU work, with
 * `checkpoint()` so that a cancellation is seen in the middle of a block) and then pauses (`timers/promises`
 * with the signal, so the pause ends the moment the signal aborts). Every job is recorded with how it ended,
 * so the page, the e2e test and a curious user can check on the server's side that a cancelled job really
 * stopped, and not only its progress bar.
 */
@Injectable()
export class JobsService {
  private readonly logger = new Logger(JobsService.name);
  private readonly jobs: JobRecord[] = [];
  private lastId = 0;

  /** The jobs run so far, newest first (the last 50). */
  list(): JobRecord[] {
    return this.jobs.map((job) => ({ ...job })).reverse();
  }

  /**
   * Runs a job when the returned stream is subscribed to, as server-sent events: `started` (the record),
   * `progress` after every step (the record), `done` (the record) when it completed. A cancellation ends the
   * stream with the `CancellationError`, for the interceptor to answer (nothing, to a client that left).
   *
   * The signal is a parameter (the controller takes it with `@RequestSignal()`), so the job does not depend
   * on being subscribed to inside the request's context.
   *
   * @param signal the request's signal: the job stops when it aborts
   * @param requestId the request's id, recorded with the job
   */
  run(spec: JobSpec, signal: AbortSignal, requestId?: string): Observable<MessageEvent> {
    return new Observable<MessageEvent>((subscriber) => {
      const job = this.start(spec, requestId);
      subscriber.next({ type: 'started', data: { ...job } });
      this.work(job, signal, () => subscriber.next({ type: 'progress', data: { ...job } })).then(
        () => {
          subscriber.next({ type: 'done', data: { ...job } });
          subscriber.complete();
        },
        (err: unknown) => subscriber.error(err),
      );
      // No teardown of its own: when the stream is torn down because the client left, the request's signal
      // aborts, and that is what stops the work.
    });
  }

  private start(spec: JobSpec, requestId: string | undefined): JobRecord {
    const job: JobRecord = {
      id: ++this.lastId,
      requestId,
      startedAt: Date.now(),
      steps: spec.steps,
      stepMs: spec.stepMs,
      stepsDone: 0,
      primes: 0,
      outcome: 'running',
    };
    this.jobs.push(job);
    if (this.jobs.length > HISTORY) this.jobs.shift();
    const by = requestId === undefined ? '' : ` by request ${requestId}`;
    this.logger.log(`Job #${job.id} started${by}: ${job.steps} steps of ${job.stepMs} ms`);
    return job;
  }

  private async work(job: JobRecord, signal: AbortSignal, onProgress: () => void): Promise<void> {
    try {
      for (let step = 0; step < job.steps; step++) {
        const from = step * NUMBERS_PER_STEP;
        for (let n = from; n < from + NUMBERS_PER_STEP; n++) {
          // Yields to the event loop every few milliseconds and throws once the signal aborted.
          await checkpoint(signal);
          if (isPrime(n)) job.primes++;
        }
        job.stepsDone++;
        onProgress();
        if (step + 1 < job.steps) await sleep(job.stepMs, undefined, { signal });
      }
      this.end(job, 'completed');
      this.logger.log(`Job #${job.id} completed: ${job.primes} primes below ${job.steps * NUMBERS_PER_STEP}`);
    } catch (err) {
      // timers/promises rejects with an AbortError whose cause is the CancellationError; checkpoint() with
      // the CancellationError itself.
      const cancelled = findCancellationError(err);
      if (cancelled === undefined) {
        this.end(job, 'failed', String(err));
        throw err;
      }
      this.end(job, 'cancelled', cancelled.message, cancelled.kind);
      this.logger.log(
        `Job #${job.id} stopped (${cancelled.kind}) after ${job.stepsDone} of ${job.steps} steps`,
      );
      throw err;
    }
  }

  private end(job: JobRecord, outcome: JobOutcome, message?: string, kind?: CancellationKind): void {
    job.outcome = outcome;
    job.endedAt = Date.now();
    if (kind !== undefined) job.kind = kind;
    if (message !== undefined) job.message = message;
  }
}
