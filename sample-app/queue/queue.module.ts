import { Logger, Module } from '@nestjs/common';
import type { DynamicModule, OnApplicationShutdown } from '@nestjs/common';
import { BullModule } from '@nestjs/bullmq';
import { Redis } from 'ioredis';
import { CancellationBullModule } from 'nestjs-cancellation/bullmq';
import { CancellationFleetModule } from 'nestjs-cancellation/fleet';
import { QueueController } from './queue.controller.js';
import { RenderProcessor } from './render.processor.js';

/** Says, once, why the queue and the fleet are off. */
class QueueDisabled {
  constructor() {
    new Logger('Queue').log(
      'REDIS_URL is not set: the render queue (/queue/jobs) and the fleet panel are off ' +
        '(REDIS_URL=redis://127.0.0.1:6379 npm start turns them on; scripts/redis.sh start runs a Redis)',
    );
  }
}

/**
 * With REDIS_URL: a BullMQ queue of long render jobs whose processor stops on its job's signal
 * (`nestjs-cancellation/bullmq`), and this instance as a member of the fleet (`nestjs-cancellation/fleet`):
 * the demo page's in-flight panel lists the work of every instance on that Redis and cancels it wherever it
 * runs. Without it, nothing but a log line: the rest of the app does not need Redis.
 */
@Module({})
export class QueueModule implements OnApplicationShutdown {
  private static connection: Redis | undefined;

  /** The module for this environment (`REDIS_URL`, `INSTANCE_ID`). */
  static fromEnv(env: NodeJS.ProcessEnv = process.env): DynamicModule {
    const url = env.REDIS_URL;
    if (url === undefined || url === '') {
      return { module: QueueModule, providers: [QueueDisabled] };
    }
    // ES modules: bullmq cannot load ioredis itself, it is given a client.
    const connection = (QueueModule.connection = new Redis(url, { maxRetriesPerRequest: null }));
    return {
      module: QueueModule,
      imports: [
        CancellationBullModule.forRoot({ jobTimeoutMs: 10 * 60_000 }),
        CancellationFleetModule.forRoot({
          redis: url,
          ...(env.INSTANCE_ID ? { instanceId: env.INSTANCE_ID } : {}),
        }),
        BullModule.forRoot({ connection }),
        BullModule.registerQueue({ name: 'renders' }),
      ],
      controllers: [QueueController],
      providers: [RenderProcessor],
    };
  }

  /** The last hook: the workers and queues are closed; the connection they shared goes too. */
  onApplicationShutdown(): void {
    QueueModule.connection?.disconnect();
  }
}
