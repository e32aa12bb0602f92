import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);
const SCRIPT = fileURLToPath(new URL('../../scripts/postgres.sh', import.meta.url));

export interface TestPostgres {
  /** `postgres://user@host:port/database` */
  readonly url: string;
  /** Stops the server if this process started it (idempotent); leaves a server it found running alone. */
  stop(): Promise<void>;
}

async function script(command: 'start' | 'stop' | 'status'): Promise<string> {
  try {
    const { stdout } = await execFileAsync('bash', [SCRIPT, command], { timeout: 60_000 });
    return stdout.trim();
  } catch (err) {
    const { stderr = '', code } = err as { stderr?: string; code?: unknown };
    if (command === 'status' && code === 3) return '';
    throw new Error(`scripts/postgres.sh ${command} failed: ${stderr.trim() || String(err)}`, { cause: err });
  }
}

/**
 * A real PostgreSQL for a suite: `TEST_DATABASE_URL` if set (a server of your own; nothing is started or
 * stopped), else the one that `scripts/postgres.sh start` runs on 127.0.0.1 (started here, and stopped by
 * `stop()`, unless it was running already). Fails with the script's message when PostgreSQL is not installed:
 * run `scripts/postgres.sh install` (as root; `npm test` does, through scripts/test-deps.sh).
 */
export async function startPostgres(): Promise<TestPostgres> {
  const external = process.env.TEST_DATABASE_URL;
  if (external) return { url: external, stop: async () => undefined };
  const running = await script('status');
  if (running) return { url: running, stop: async () => undefined };
  const url = (await script('start')).split('\n').at(-1)!;
  let stopping: Promise<void> | undefined;
  return {
    url,
    stop: () => (stopping ??= script('stop').then(() => undefined)),
  };
}
