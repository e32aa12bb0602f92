import {
  BadRequestException,
  Controller,
  DefaultValuePipe,
  Get,
  ParseIntPipe,
  Query,
  Sse,
} from '@nestjs/common';
import type { MessageEvent } from '@nestjs/common';
import { CancellationService, RequestSignal, RequestTimeout } from 'nestjs-cancellation';
import type { Observable } from 'rxjs';
import { JobsService } from './jobs.service.js';
import type { JobRecord } from './jobs.service.js';

/** The longest job the route accepts: within its budget below. */
const MAX_JOB_MS = 60_000;

@Controller('jobs')
export class JobsController {
  constructor(
    private readonly jobs: JobsService,
    private readonly cancellation: CancellationService,
  ) {}

  /**
   * `GET /jobs/run?steps=40&stepMs=250` (server-sent events, e.g. `new EventSource(...)`): runs a job of
   * `steps` steps (1 to 200), pausing `stepMs` (20 to 2000) after each, and reports every step. Closing the
   * EventSource is a client that leaves: the request's signal aborts and the job stops on the server.
   */
  @Sse('run')
  // The module's 30 s default would cut long jobs short: this route gets 65 s (and the job at most 60 s).
  @RequestTimeout(65_000)
  run(
    @Query('steps', new DefaultValuePipe(40), ParseIntPipe) steps: number,
    @Query('stepMs', new DefaultValuePipe(250), ParseIntPipe) stepMs: number,
    @RequestSignal() signal: AbortSignal,
  ): Observable<MessageEvent> {
    if (steps < 1 || steps > 200) throw new BadRequestException('steps must be from 1 to 200');
    if (stepMs < 20 || stepMs > 2000) throw new BadRequestException('stepMs must be from 20 to 2000');
    if (steps * stepMs > MAX_JOB_MS) {
      throw new BadRequestException(`steps × stepMs must be at most ${MAX_JOB_MS} ms`);
    }
    return this.jobs.run({ steps, stepMs }, signal, this.cancellation.requestId);
  }

  /** `GET /jobs`: the jobs run so far, newest first, with how each ended. */
  @Get()
  list(): JobRecord[] {
    return this.jobs.list();
  }
}
