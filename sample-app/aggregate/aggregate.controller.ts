import { BadRequestException, Controller, DefaultValuePipe, Get, ParseIntPipe, Query } from '@nestjs/common';
import { RequestTimeout } from 'nestjs-cancellation';
import { AggregateService } from './aggregate.service.js';
import type { Aggregate } from './aggregate.service.js';

@Controller('aggregate')
export class AggregateController {
  constructor(private readonly aggregates: AggregateService) {}

  /**
   * `GET /aggregate?ms=1500`: three downstream calls of `ms` milliseconds each, in parallel. With `ms` above
   * 5000 the route's budget runs out: 504, and the downstream calls are aborted with it.
   */
  @Get()
  @RequestTimeout(5_000)
  aggregate(@Query('ms', new DefaultValuePipe(1500), ParseIntPipe) ms: number): Promise<Aggregate> {
    if (ms < 0 || ms > 60_000) throw new BadRequestException('ms must be from 0 to 60000');
    return this.aggregates.aggregate(ms);
  }
}
