import { Inject, Injectable, Logger, ServiceUnavailableException } from '@nestjs/common';
import { findCancellationError } from 'nestjs-cancellation';
import { queryWithSignal } from 'nestjs-cancellation/pg';
import type { Pool } from 'pg';
import { PG_POOL } from './reports.pool.js';

export interface SlowReport {
  seconds: number;
  /** The server process that ran the query (look for it in `pg_stat_activity`). */
  backendPid: number;
  elapsedMs: number;
}

@Injectable()
export class ReportsService {
  private readonly logger = new Logger(ReportsService.name);

  constructor(@Inject(PG_POOL) private readonly pool: Pool | null) {}

  /** A report query that takes `seconds` on the server (`pg_sleep` stands for the heavy SQL). */
  async slowReport(seconds: number): Promise<SlowReport> {
    if (this.pool === null) {
      throw new ServiceUnavailableException(
        'No database configured: start the app with DATABASE_URL=postgres://... (scripts/postgres.sh start prints one)',
      );
    }
    const startedAt = performance.now();
    try {
      // The request's signal is found through AsyncLocalStorage. When it aborts, the query is cancelled on the
      // server (the protocol's cancel request), the connection goes back to the pool clean, and this rejects
      // with the CancellationError, which the interceptor answers: 503, 504, or nothing for a client that left.
      const { rows } = await queryWithSignal<{ backend_pid: number }>(
        this.pool,
        'SELECT pg_backend_pid() AS backend_pid, pg_sleep($1)',
        [seconds],
      );
      return {
        seconds,
        backendPid: rows[0].backend_pid,
        elapsedMs: Math.round(performance.now() - startedAt),
      };
    } catch (err) {
      const cancelled = findCancellationError(err);
      if (cancelled !== undefined) {
        const ms = Math.round(performance.now() - startedAt);
        this.logger.log(`Report query cancelled on the server (${cancelled.kind}) after ${ms} ms`);
      }
      throw err;
    }
  }
}
