import {
  BadRequestException,
  Body,
  Controller,
  Get,
  HttpCode,
  HttpStatus,
  NotFoundException,
  Param,
  Post,
} from '@nestjs/common';
import { InjectQueue } from '@nestjs/bullmq';
import type { Queue } from 'bullmq';
import { FleetRegistry } from 'nestjs-cancellation/fleet';
import type { FleetCancelResult } from 'nestjs-cancellation/fleet';
import { RENDERS } from './render.processor.js';
import type { RenderJob } from './render.processor.js';

/** A render job as the demo page shows it. */
interface RenderStatus {
  readonly id: string;
  readonly state: string;
  readonly progress: number;
  readonly failedReason?: string;
}

/**
 * `POST /queue/jobs` queues a render job, `GET /queue/jobs` lists the latest, `POST /queue/jobs/:id/cancel`
 * cancels one wherever it runs in the fleet (or before it starts). Open to whoever asks: a demo on 127.0.0.1.
 */
@Controller('queue/jobs')
export class QueueController {
  constructor(
    @InjectQueue(RENDERS) private readonly queue: Queue<RenderJob>,
    private readonly fleet: FleetRegistry,
  ) {}

  @Post()
  async add(@Body() body: { steps?: unknown; stepMs?: unknown } | undefined): Promise<{ id: string }> {
    const steps = Number(body?.steps ?? 40);
    const stepMs = Number(body?.stepMs ?? 250);
    if (
      !Number.isInteger(steps) ||
      steps < 1 ||
      steps > 1_000 ||
      !Number.isInteger(stepMs) ||
      stepMs < 10 ||
      stepMs > 10_000
    ) {
      throw new BadRequestException('steps: 1 to 1000, stepMs: 10 to 10000');
    }
    const job = await this.queue.add(
      'render',
      { steps, stepMs },
      { attempts: 2, removeOnComplete: 50, removeOnFail: 50 },
    );
    return { id: job.id! };
  }

  @Get()
  async list(): Promise<RenderStatus[]> {
    const jobs = await this.queue.getJobs(['active', 'waiting', 'delayed', 'completed', 'failed'], 0, 9);
    const described = await Promise.all(
      jobs.map(async (job) => ({
        id: job.id!,
        state: await job.getState(),
        progress: typeof job.progress === 'number' ? job.progress : 0,
        ...(job.failedReason ? { failedReason: job.failedReason } : {}),
      })),
    );
    return described.sort((a, b) => Number(b.id) - Number(a.id));
  }

  @Post(':id/cancel')
  @HttpCode(HttpStatus.OK)
  async cancel(@Param('id') id: string): Promise<FleetCancelResult> {
    const result = await this.fleet.cancel(`${RENDERS}:${id}`, 'Cancelled from the demo page');
    if (result.cancelled === 0 && (await this.queue.getJob(id)) === undefined) {
      throw new NotFoundException(`No render job ${id}`);
    }
    return result;
  }
}
