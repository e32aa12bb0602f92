import { Logger } from '@nestjs/common';
import { Pool } from 'pg';

/** Injection token of the PostgreSQL pool; `null` when DATABASE_URL is not set. */
export const PG_POOL = Symbol('PG_POOL');

/**
 * A pool for `DATABASE_URL` (e.g. the URL that `scripts/postgres.sh start` prints), or `null` without one: the
 * app starts without a database and `/reports` answers 503 saying what to set.
 */
export function createPool(): Pool | null {
  const connectionString = process.env.DATABASE_URL;
  if (!connectionString) return null;
  const pool = new Pool({ connectionString, max: 5, application_name: 'nestjs-cancellation-sample' });
  // An idle connection that breaks (the server restarts) is reported here; unhandled, it would crash the app.
  pool.on('error', (err) => new Logger('Database').warn(`Idle connection lost: ${err.message}`));
  return pool;
}
