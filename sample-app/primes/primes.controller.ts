import { BadRequestException, Controller, DefaultValuePipe, Get, ParseIntPipe, Query } from '@nestjs/common';
import { PrimesService } from './primes.service.js';
import type { PrimeCount } from './primes.service.js';

const MAX_LIMIT = 1_000_000_000;

@Controller('primes')
export class PrimesController {
  constructor(private readonly primes: PrimesService) {}

  /**
   * `GET /primes?limit=5000000`: counts the primes up to `limit` by trial division, a few seconds of pure
   * CPU. A large limit runs into the module's 30 s budget and is answered with 504, the loop stopped.
   */
  @Get()
  count(@Query('limit', new DefaultValuePipe(5_000_000), ParseIntPipe) limit: number): Promise<PrimeCount> {
    if (limit < 1 || limit > MAX_LIMIT) throw new BadRequestException(`limit must be from 1 to ${MAX_LIMIT}`);
    return this.primes.countPrimes(limit);
  }
}
