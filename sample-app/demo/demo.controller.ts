import { Controller, Get, Header, HttpCode, HttpStatus, Inject, Optional, Param, Post } from '@nestjs/common';
import { CancellationService } from 'nestjs-cancellation';
import type { InFlightRequest } from 'nestjs-cancellation';
import { FleetRegistry } from 'nestjs-cancellation/fleet';
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
  constructor(
    private readonly cancellation: CancellationService,
    // Present when the app runs with REDIS_URL (sample-app/queue): the panel then shows the whole fleet.
    @Optional() @Inject(FleetRegistry) private readonly fleet?: FleetRegistry,
  ) {}

  /** `GET /` and `GET /demo`: the page (plain HTML, its script inline). */
  @Get(['', 'demo'])
  @Header('Content-Type', 'text/html; charset=utf-8')
  @Header('Cache-Control', 'no-store')
  page(): string {
    return DEMO_PAGE;
  }

  /** `GET /demo/features`: what the page can show: the render queue and the fleet need REDIS_URL. */
  @Get('demo/features')
  features(): { queue: boolean; instanceId?: string } {
    return this.fleet === undefined ? { queue: false } : { queue: true, instanceId: this.fleet.instanceId };
  }

  /**
   * `GET /demo/in-flight`: the server's requests in flight, from the package's registry; with the fleet, the
   * work in flight on every instance (requests and render jobs), each with its `instanceId`.
   */
  @Get('demo/in-flight')
  async inFlight(): Promise<InFlightRequest[]> {
    const all = this.fleet === undefined ? this.cancellation.inFlight() : await this.fleet.inFlight();
    return all.filter((request) => request.route !== IN_FLIGHT_ROUTE);
  }

  /**
   * `POST /demo/in-flight/:id/cancel`: cancels a request in flight (`kind: 'manual'`); answers how many were
   * cancelled (0 when none has that id any more).
   */
  @Post('demo/in-flight/:id/cancel')
  @HttpCode(HttpStatus.OK)
  async cancel(@Param('id') id: string): Promise<{ cancelled: number }> {
    const message = 'Cancelled from the demo page';
    if (this.fleet !== undefined) return { cancelled: (await this.fleet.cancel(id, message)).cancelled };
    return { cancelled: this.cancellation.cancel(id, message) };
  }
}
