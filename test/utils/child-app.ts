import type { ChildProcess } from 'node:child_process';
import { waitFor } from './harness.js';

/** One JSON line of a fixture app's stdout (test/fixtures/child-app.mjs `emit()`), with when the test got it. */
export interface AppEvent {
  readonly event: string;
  readonly at: number;
  readonly receivedAt: number;
  readonly [key: string]: unknown;
}

/** A fixture app in a child process (`spawnFixture()`), its stdout parsed line by line. */
export class ChildApp {
  readonly events: AppEvent[] = [];
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
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

  /** The first line with this event. */
  find(event: string): AppEvent | undefined {
    return this.events.find((line) => line.event === event);
  }

  /** Waits for the first line with this event. */
  next(event: string, timeoutMs = 10_000): Promise<AppEvent> {
    return waitFor(() => this.find(event), {
      timeoutMs,
      message: `"${event}" from the app (stdout so far: ${JSON.stringify(this.events)}, stderr: ${this.stderr})`,
    });
  }

  /** Kills the process if it still runs, and waits for its end. */
  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
  }
}
