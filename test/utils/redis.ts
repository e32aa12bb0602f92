import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);
const SCRIPT = fileURLToPath(new URL('../../scripts/redis.sh', import.meta.url));
const TMP = fileURLToPath(new URL('../../.tmp', import.meta.url));

export interface TestRedis {
  /** `redis://127.0.0.1:port` */
  readonly url: string;
  /** Stops the server if this process started it (idempotent); leaves a server it found running alone. */
  stop(): Promise<void>;
}

async function script(command: 'start' | 'stop' | 'status', root: string | undefined): Promise<string> {
  const env = root === undefined ? process.env : { ...process.env, REDIS_ROOT: root };
  try {
    const { stdout } = await execFileAsync('bash', [SCRIPT, command], { timeout: 60_000, env });
    return stdout.trim();
  } catch (err) {
    const { stderr = '', code } = err as { stderr?: string; code?: unknown };
    if (command === 'status' && code === 3) return '';
    throw new Error(`scripts/redis.sh ${command} failed: ${stderr.trim() || String(err)}`, { cause: err });
  }
}

/**
 * A real Redis for a suite: `TEST_REDIS_URL` if set (a server of your own; nothing is started or stopped),
 * else the one that `scripts/redis.sh start` runs on 127.0.0.1 (started here, and stopped by `stop()`, unless
 * it was running already). Fails with the script's message when Redis is not installed: run
 * `scripts/redis.sh install` (as root; `npm test` does, through scripts/test-deps.sh).
 */
export async function startRedis(): Promise<TestRedis> {
  const external = process.env.TEST_REDIS_URL;
  if (external) return { url: external, stop: async () => undefined };
  const running = await script('status', undefined);
  if (running) return { url: running, stop: async () => undefined };
  const url = (await script('start', undefined)).split('\n').at(-1)!;
  let stopping: Promise<void> | undefined;
  return {
    url,
    stop: () => (stopping ??= script('stop', undefined).then(() => undefined)),
  };
}

/** A Redis that only this suite uses: one it may stop and start again (always started here, on 127.0.0.1). */
export interface PrivateRedis extends TestRedis {
  /** Starts it again after `stop()`, on a new port: returns the new URL. */
  restart(): Promise<string>;
}

/**
 * A Redis of the suite's own, in a fresh folder under .tmp: for a test that stops Redis on purpose, which must
 * not take down the shared one other suites use. Not `TEST_REDIS_URL`: stopping a server of your own is not
 * this suite's call.
 */
export async function startPrivateRedis(name: string): Promise<PrivateRedis> {
  mkdirSync(TMP, { recursive: true });
  const root = join(mkdtempSync(join(TMP, `redis-${name}-`)), 'redis');
  const url = (await script('start', root)).split('\n').at(-1)!;
  return {
    url,
    stop: () => script('stop', root).then(() => undefined),
    restart: async () => (await script('start', root)).split('\n').at(-1)!,
  };
}
