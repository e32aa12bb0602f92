import { Injectable, Logger } from '@nestjs/common';
import type { OnApplicationShutdown } from '@nestjs/common';
import { availableParallelism } from 'node:os';
import { CancellationService, findCancellationError } from 'nestjs-cancellation';
import { Piscina } from 'piscina';

export interface WorkerPrimeCount {
  limit: number;
  count: number;
  elapsedMs: number;
}

/** CPU-heavy work off the event loop, on a pool of worker threads, cancelled with its request. */
@Injectable()
export class WorkersService implements OnApplicationShutdown {
  private readonly logger = new Logger(WorkersService.name);
  private readonly pool = new Piscina<{ limit: number }, number>({
    filename: new URL('./primes.worker.js', import.meta.url).href,
    maxThreads: Math.max(1, availableParallelism() - 1),
  });

  constructor(private readonly cancellation: CancellationService) {}

  async countPrimes(limit: number): Promise<WorkerPrimeCount> {
    const startedAt = performance.now();
    try {
      // piscina takes the signal: on abort it rejects at once (an AbortError caused by the CancellationError)
      // and terminates the thread running the task; the next task gets a fresh thread.
      const count = await this.pool.run({ limit }, { signal: this.cancellation.signal });
      return { limit, count, elapsedMs: Math.round(performance.now() - startedAt) };
    } catch (err) {
      const cancelled = findCancellationError(err);
      if (cancelled !== undefined) {
        const ms = Math.round(performance.now() - startedAt);
        this.logger.log(
          `Prime count up to ${limit} stopped (${cancelled.kind}) after ${ms} ms: thread terminated`,
        );
      }
      throw err;
    }
  }

  // After the requests in flight were cancelled (and their tasks with them); in onModuleDestroy, before
  // that, destroying the pool would fail those tasks with "Terminating worker thread" instead.
  async onApplicationShutdown(): Promise<void> {
    await this.pool.destroy();
  }
}
