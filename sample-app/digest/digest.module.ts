import { Module } from '@nestjs/common';
import { ScheduleModule } from '@nestjs/schedule';
import { CancellationScheduleModule } from 'nestjs-cancellation/schedule';
import { DigestController } from './digest.controller.js';
import { DigestJob } from './digest.job.js';

@Module({
  imports: [
    ScheduleModule.forRoot(),
    // A scope per run of every @Cron / @Interval / @Timeout method of the application.
    CancellationScheduleModule,
  ],
  controllers: [DigestController],
  providers: [DigestJob],
})
export class DigestModule {}
