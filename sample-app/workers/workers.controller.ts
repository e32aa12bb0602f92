import { BadRequestException, Controller, DefaultValuePipe, Get, ParseIntPipe, Query } from '@nestjs/common';
import { WorkersService } from './workers.service.js';
import type { WorkerPrimeCount } from './workers.service.js';

const MAX_LIMIT = 10_000_000_000;

@Controller('workers')
export class WorkersController {
  constructor(private readonly workers: WorkersService) {}

  /**
   * `GET /workers/primes?limit=20000000`: the prime count of `GET /primes`, on a worker thread (piscina): the
   * event loop stays free for other requests. A hang-up, a shutdown or the 30 s budget terminates the thread.
   */
  @Get('primes')
  primes(
    @Query('limit', new DefaultValuePipe(20_000_000), ParseIntPipe) limit: number,
  ): Promise<WorkerPrimeCount> {
    if (limit < 1 || limit > MAX_LIMIT) throw new BadRequestException(`limit must be from 1 to ${MAX_LIMIT}`);
    return this.workers.countPrimes(limit);
  }
}
