import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const LOADER = path.join(REPO, 'test', 'fixtures', 'compat-loader.mjs');

/**
 * The folder whose Nest the fixture apps run on: compat/nest11 in the Nest 11 job (its Jest config sets
 * FIXTURE_NEST_DIR), else the repository's own.
 */
function nestDir(): string | undefined {
  const dir = process.env.FIXTURE_NEST_DIR;
  return dir === undefined || dir === '' ? undefined : dir;
}

/** The `@nestjs/core` version a fixture app started by `spawnFixture()` must report. */
export function fixtureNestVersion(): string {
  const manifest = path.join(nestDir() ?? REPO, 'node_modules', '@nestjs', 'core', 'package.json');
  return (JSON.parse(readFileSync(manifest, 'utf8')) as { version: string }).version;
}

/**
 * Starts a fixture app of test/fixtures (plain ESM JavaScript on the built package) in a child process, with
 * the Node that runs the tests and the given environment. On the repository's Nest 12 it imports the ESM
 * build; in the Nest 11 job test/fixtures/compat-loader.mjs runs it on compat/nest11's Nest 11 and the
 * CommonJS build, as a Nest 11 application runs the package.
 */
export function spawnFixture(fixture: string, env: NodeJS.ProcessEnv): ChildProcess {
  const dir = nestDir();
  const built = path.join(REPO, 'dist', ...(dir === undefined ? ['index.js'] : ['cjs', 'index.js']));
  if (!existsSync(built)) throw new Error(`${built} is missing: run \`npm run build\` first`);
  const args = dir === undefined ? [fixture] : ['--import', LOADER, fixture];
  return spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** One JSON line of a fixture app's stdout, with the time the test received it. */
export interface FixtureEvent {
  readonly event: string;
  /** The app's own `performance.now()` when it wrote the line. */
  readonly at: number;
  readonly receivedAt: number;
  readonly [key: string]: unknown;
}

/** How a fixture app's process ended, and when the test saw it. */
export interface FixtureExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly at: number;
}

/** A fixture app in a child process (see `spawnFixture()`), its stdout parsed line by line. */
export class FixtureApp {
  readonly events: FixtureEvent[] = [];
  stderr = '';
  readonly exited: Promise<FixtureExit>;
  private buffered = '';

  constructor(readonly child: ChildProcess) {
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => {
      this.buffered += chunk;
      const lines = this.buffered.split('\n');
      this.buffered = lines.pop() ?? '';
      for (const line of lines) {
        if (line.trim() === '') continue;
        const receivedAt = performance.now();
        try {
          this.events.push({ ...(JSON.parse(line) as { event: string; at: number }), receivedAt });
        } catch {
          this.events.push({ event: 'raw', at: Number.NaN, receivedAt, line });
        }
      }
    });
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => (this.stderr += chunk));
    this.exited = new Promise((resolve) =>
      child.once('exit', (code, signal) => resolve({ code, signal, at: performance.now() })),
    );
  }

  /** Every line of `event`. */
  all(event: string): FixtureEvent[] {
    return this.events.filter((line) => line.event === event);
  }

  /** The first line of `event`. */
  find(event: string): FixtureEvent | undefined {
    return this.events.find((line) => line.event === event);
  }

  /** Waits for the first line of `event`. */
  async next(event: string, timeoutMs = 10_000): Promise<FixtureEvent> {
    let deadline = performance.now() + timeoutMs;
    for (;;) {
      const found = this.find(event);
      if (found !== undefined) return found;
      // Lines can still arrive just after the exit: give them a moment.
      const gone = this.child.exitCode !== null || this.child.signalCode !== null;
      if (gone) deadline = Math.min(deadline, performance.now() + 300);
      if (performance.now() > deadline) throw new Error(`no "${event}" from the app: ${this.dump()}`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  /** Kills the app if it still runs. */
  async kill(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
  }

  /** Every line, and stderr, for failure messages. */
  dump(): string {
    return `${this.events.map((line) => JSON.stringify(line)).join('\n')}\nstderr: ${this.stderr}`;
  }
}
