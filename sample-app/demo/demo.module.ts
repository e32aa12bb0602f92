import { Module } from '@nestjs/common';
import { JobsModule } from '../jobs/jobs.module.js';
import { DemoController } from './demo.controller.js';

/** The demo page (`GET /demo`) and the jobs it starts (`/jobs`). */
@Module({
  imports: [JobsModule],
  controllers: [DemoController],
})
export class DemoModule {}
