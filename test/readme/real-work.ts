// The recipes of docs/recipes.md (cancelling real work), verbatim between the region markers.
// test/downstream.e2e-spec.ts runs them against a real PostgreSQL, a real piscina pool and real child
// processes, on Express and Fastify; test/readme.e2e-spec.ts checks each copy.
import { Inject, Injectable, Logger, Module } from '@nestjs/common';
import type { OnApplicationShutdown } from '@nestjs/common';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { CancellationService } from 'nestjs-cancellation';
import { Pool } from 'pg';
import { Piscina } from 'piscina';
// In an application: import { queryWithSignal } from 'nestjs-cancellation/pg';
import { queryWithSignal } from '../../src/pg/index.js';

const execFileAsync = promisify(execFile);

// #region pg
export const PG_POOL = Symbol('PG_POOL');

@Injectable()
export class ReportsService {
  constructor(@Inject(PG_POOL) private readonly pool: Pool) {}

  async slowReport(seconds: number): Promise<{ seconds: number }[]> {
    // pg_sleep stands for a heavy query. It is cancelled on the server when the request is: the client left,
    // its deadline passed, or the application is shutting down.
    const { rows } = await queryWithSignal<{ seconds: number }>(
      this.pool,
      'SELECT $1::float8 AS seconds, pg_sleep($1)',
      [seconds],
    );
    return rows;
  }
}

@Module({
  providers: [
    { provide: PG_POOL, useFactory: () => new Pool({ connectionString: process.env.DATABASE_URL }) },
    ReportsService,
  ],
  exports: [PG_POOL, ReportsService],
})
export class ReportsModule implements OnApplicationShutdown {
  constructor(@Inject(PG_POOL) private readonly pool: Pool) {}

  // Runs after the requests in flight were cancelled, so no connection is held by a long query any more.
  async onApplicationShutdown() {
    await this.pool.end();
  }
}
// #endregion pg

// #region worker-threads
@Injectable()
export class PrimesService implements OnApplicationShutdown {
  readonly pool = new Piscina({
    filename: new URL('./primes.worker.mjs', import.meta.url).href,
    maxThreads: 2,
  });

  constructor(private readonly cancellation: CancellationService) {}

  count(limit: number): Promise<number> {
    // On abort piscina rejects at once (an AbortError caused by the CancellationError) and terminates the
    // thread that runs the task; the pool starts a fresh thread for the next one.
    return this.pool.run({ limit }, { signal: this.cancellation.signal });
  }

  // Not in onModuleDestroy: that runs before the requests are cancelled, and would fail their tasks instead.
  async onApplicationShutdown() {
    await this.pool.destroy();
  }
}
// #endregion worker-threads

// #region command
@Injectable()
export class CommandService {
  private readonly logger = new Logger(CommandService.name);

  constructor(private readonly cancellation: CancellationService) {}

  async run(file: string, args: string[]): Promise<string> {
    // Aborting kills the child with `killSignal` (SIGTERM by default) and rejects with an AbortError.
    const running = execFileAsync(file, args, { signal: this.cancellation.signal });
    this.logger.log(`${file} started, pid ${running.child.pid}`);
    const { stdout } = await running;
    return stdout;
  }
}
// #endregion command

@Module({ providers: [PrimesService, CommandService], exports: [PrimesService, CommandService] })
export class RealWorkModule {}
