import { Controller, Delete, Get, NotFoundException, Param } from '@nestjs/common';
import { CancellationRegistry } from 'nestjs-cancellation';
import type { InFlightRequest } from 'nestjs-cancellation';

/** What an operator sees of the digest job's runs, and how to stop one. */
@Controller('digest')
export class DigestController {
  constructor(private readonly registry: CancellationRegistry) {}

  /** `GET /digest`: the digest runs in flight (inFlight() lists them with method `INTERVAL`, route `digest`). */
  @Get()
  runs(): InFlightRequest[] {
    return this.registry.inFlight().filter((work) => work.route === 'digest');
  }

  /** `DELETE /digest/runs/:id`: cancels that run; its signal aborts with kind `manual`. */
  @Delete('runs/:id')
  cancel(@Param('id') id: string): { cancelled: number } {
    const cancelled = this.registry.cancel(id, 'Cancelled from DELETE /digest/runs/:id');
    if (cancelled === 0) throw new NotFoundException(`No digest run ${id} in flight`);
    return { cancelled };
  }
}
