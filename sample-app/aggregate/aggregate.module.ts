import { Module } from '@nestjs/common';
import { AggregateController } from './aggregate.controller.js';
import { AggregateService } from './aggregate.service.js';
import { DownstreamController } from './downstream.controller.js';

@Module({
  controllers: [AggregateController, DownstreamController],
  providers: [AggregateService],
})
export class AggregateModule {}
