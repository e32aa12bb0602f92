import {
  BadRequestException,
  Controller,
  DefaultValuePipe,
  Get,
  ParseFloatPipe,
  Query,
} from '@nestjs/common';
import { ReportsService } from './reports.service.js';
import type { SlowReport } from './reports.service.js';

@Controller('reports')
export class ReportsController {
  constructor(private readonly reports: ReportsService) {}

  /**
   * `GET /reports/slow?seconds=10`: a query that runs `seconds` on PostgreSQL (needs DATABASE_URL; 503
   * without). Hang up, stop the server, or ask for more than the module's 30 s budget (504), and the query is
   * cancelled on the server: `SELECT * FROM pg_stat_activity` shows it gone.
   */
  @Get('slow')
  slow(@Query('seconds', new DefaultValuePipe(10), ParseFloatPipe) seconds: number): Promise<SlowReport> {
    if (!(seconds >= 0 && seconds <= 300)) throw new BadRequestException('seconds must be from 0 to 300');
    return this.reports.slowReport(seconds);
  }
}
