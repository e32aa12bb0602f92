import { Inject, Module } from '@nestjs/common';
import type { OnApplicationShutdown } from '@nestjs/common';
import type { Pool } from 'pg';
import { ReportsController } from './reports.controller.js';
import { PG_POOL, createPool } from './reports.pool.js';
import { ReportsService } from './reports.service.js';

@Module({
  controllers: [ReportsController],
  providers: [{ provide: PG_POOL, useFactory: createPool }, ReportsService],
})
export class ReportsModule implements OnApplicationShutdown {
  constructor(@Inject(PG_POOL) private readonly pool: Pool | null) {}

  // The last shutdown hook: the requests in flight were cancelled in beforeApplicationShutdown, so their
  // queries were cancelled and their connections are back; end() does not wait for a long query.
  async onApplicationShutdown(): Promise<void> {
    await this.pool?.end();
  }
}
