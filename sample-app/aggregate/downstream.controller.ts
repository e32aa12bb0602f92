import {
  BadRequestException,
  Controller,
  DefaultValuePipe,
  Get,
  Logger,
  ParseIntPipe,
  Query,
} from '@nestjs/common';
import { setTimeout as sleep } from 'node:timers/promises';
import { RequestSignal, isCancellationError } from 'nestjs-cancellation';
import type { CancellationError } from 'nestjs-cancellation';

export interface DownstreamReply {
  source: string;
  value: number;
  delayMs: number;
}

/**
 * A slow dependency for `GET /aggregate` to call: in a real system another service. It is cancellable like
 * every route here, so when the aggregate's `fetch` is aborted and its connection closes, the work here
 * stops too: the cancellation crosses the process boundary as a closed connection.
 */
@Controller('downstream')
export class DownstreamController {
  private readonly logger = new Logger(DownstreamController.name);

  /** `GET /downstream/slow?ms=1000&source=a`: answers after `ms` milliseconds. */
  @Get('slow')
  async slow(
    @Query('ms', new DefaultValuePipe(1000), ParseIntPipe) ms: number,
    @Query('source', new DefaultValuePipe('a')) source: string,
    // The request's signal as a handler parameter, for code that prefers passing it explicitly.
    @RequestSignal() signal: AbortSignal,
  ): Promise<DownstreamReply> {
    if (ms < 0 || ms > 60_000) throw new BadRequestException('ms must be from 0 to 60000');
    this.logger.log(`Downstream ${source}: answering in ${ms} ms`);
    try {
      await sleep(ms, undefined, { signal });
    } catch (err) {
      if (isCancellationError(err)) {
        const { kind } = signal.reason as CancellationError;
        this.logger.log(`Downstream ${source} stopped (${kind})`);
      }
      throw err;
    }
    return { source, value: source.length * 10 + ms, delayMs: ms };
  }
}
