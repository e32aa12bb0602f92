import { Controller, DefaultValuePipe, Get, Logger, ParseIntPipe, Query } from '@nestjs/common';
import { GrpcMethod } from '@nestjs/microservices';
import { setTimeout as sleep } from 'node:timers/promises';
import { CancellationService, RequestTimeout, findCancellationError } from 'nestjs-cancellation';
import { RenderClient } from './render.client.js';
import type { RenderReply, RenderRequest } from './render.client.js';

let calls = 0;

/**
 * The gRPC service `render.Renderer` (sample-app/render/render.proto), and `GET /render`, which calls it over
 * gRPC the way another service would.
 */
@Controller()
export class RenderController {
  private readonly logger = new Logger('Renderer');

  constructor(
    private readonly cancellation: CancellationService,
    private readonly client: RenderClient,
  ) {}

  /**
   * One page per `page_ms`. Its signal is the call's: it aborts when the caller cancels the call
   * (`client-disconnected`), when the caller's deadline passes (`timeout`) and at shutdown (`shutdown`, answered
   * `UNAVAILABLE` so that the caller may retry elsewhere).
   */
  @GrpcMethod('Renderer', 'Render')
  async render({ pages, page_ms: pageMs }: RenderRequest): Promise<RenderReply> {
    const call = ++calls;
    const { signal, remainingMs } = this.cancellation;
    const startedAt = performance.now();
    const deadline = remainingMs === undefined ? 'no deadline' : `deadline in ${Math.round(remainingMs)} ms`;
    this.logger.log(`Render call #${call}: ${pages} pages (${deadline})`);
    let done = 0;
    try {
      for (; done < pages; done++) {
        await sleep(pageMs || 1000, undefined, { signal });
        this.logger.log(`Rendered page ${done + 1}/${pages} (call #${call})`);
      }
      return { pages, elapsed_ms: Math.round(performance.now() - startedAt) };
    } catch (err) {
      const cancelled = findCancellationError(err);
      if (cancelled !== undefined) {
        this.logger.log(`Render call #${call} stopped (${cancelled.kind}) after ${done} pages`);
      }
      throw err;
    }
  }

  /**
   * `GET /render?pages=10`: calls `Render` over gRPC. The call carries this request's remaining budget (5 s) as
   * its deadline and is cancelled when this request is: hang up and the render stops on the gRPC side too.
   */
  @Get('render')
  @RequestTimeout(5_000)
  relay(@Query('pages', new DefaultValuePipe(10), ParseIntPipe) pages: number): Promise<RenderReply> {
    return this.client.render({ pages, page_ms: 0 });
  }
}
