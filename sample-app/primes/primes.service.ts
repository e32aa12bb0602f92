import { Injectable, Logger } from '@nestjs/common';
import { checkpoint, isCancellationError } from 'nestjs-cancellation';
import type { CancellationError } from 'nestjs-cancellation';

export interface PrimeCount {
  limit: number;
  count: number;
  elapsedMs: number;
}

function isPrime(n: number): boolean {
  if (n < 4) return n > 1;
  if (n % 2 === 0) return false;
  for (let d = 3; d * d <= n; d += 2) if (n % d === 0) return false;
  return true;
}

/** CPU-bound work: the kind that no signal listener can interrupt unless the loop lets it. */
@Injectable()
export class PrimesService {
  private readonly logger = new Logger(PrimesService.name);

  async countPrimes(limit: number): Promise<PrimeCount> {
    this.logger.log(`Counting primes up to ${limit}`);
    const startedAt = performance.now();
    let count = 0;
    let n = 2;
    try {
      for (; n <= limit; n++) {
        // A loop that never yields holds the event loop: the socket's 'close' and SIGTERM are events, so
        // neither could even be noticed before the loop ended. checkpoint() yields every few milliseconds
        // (between yields it only checks a flag) and throws the reason once this request is cancelled.
        await checkpoint();
        if (isPrime(n)) count++;
      }
    } catch (err) {
      if (isCancellationError(err)) {
        const { kind } = err as CancellationError;
        this.logger.log(`Prime count up to ${limit} stopped (${kind}) at ${n}`);
      }
      throw err;
    }
    const elapsedMs = Math.round(performance.now() - startedAt);
    this.logger.log(`Counted ${count} primes up to ${limit} in ${elapsedMs} ms`);
    return { limit, count, elapsedMs };
  }
}
