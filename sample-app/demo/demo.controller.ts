import { Controller, Get, Header, HttpCode, HttpStatus, Param, Post } from '@nestjs/common';
import { CancellationService } from 'nestjs-cancellation';
import type { InFlightRequest } from 'nestjs-cancellation';
import { DEMO_PAGE } from './demo.page.js';

/** The in-flight endpoint itself: always in flight while it answers, so it leaves itself out. */
const IN_FLIGHT_ROUTE = '/demo/in-flight';

/**
 * The demo page and what its panels poll. `GET /demo/in-flight` and its cancel route show every request in
 * flight to whoever asks: fine for a demo on 127.0.0.1, not for a public server (the package's admin
 * controller, `CancellationModule.forRoot(..., { admin: { guard } })`, refuses to start without a guard).
 */
@Controller()
export class DemoController {
  constructor(private readonly cancellation: CancellationService) {}

  /** `GET /` and `GET /demo`: the page (plain HTML, its script inline). */
  @Get(['', 'demo'])
  @Header('Content-Type', 'text/html; charset=utf-8')
  @Header('Cache-Control', 'no-store')
  page(): string {
    return DEMO_PAGE;
  }

  /** `GET /demo/in-flight`: the server's requests in flight, from the package's registry. */
  @Get('demo/in-flight')
  inFlight(): InFlightRequest[] {
    return this.cancellation.inFlight().filter((request) => request.route !== IN_FLIGHT_ROUTE);
  }

  /**
   * `POST /demo/in-flight/:id/cancel`: cancels a request in flight (`kind: 'manual'`); answers how many were
   * cancelled (0 when none has that id any more).
   */
  @Post('demo/in-flight/:id/cancel')
  @HttpCode(HttpStatus.OK)
  cancel(@Param('id') id: string): { cancelled: number } {
    return { cancelled: this.cancellation.cancel(id, 'Cancelled from the demo page') };
  }
}
