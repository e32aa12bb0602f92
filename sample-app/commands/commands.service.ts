import { Injectable, Logger } from '@nestjs/common';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { CancellationService, findCancellationError } from 'nestjs-cancellation';

const execFileAsync = promisify(execFile);

export interface CommandResult {
  command: string;
  pid: number | undefined;
  elapsedMs: number;
}

/** External programs, killed when their request is cancelled. */
@Injectable()
export class CommandsService {
  private readonly logger = new Logger(CommandsService.name);

  constructor(private readonly cancellation: CancellationService) {}

  /** `sleep seconds`: stands for any slow program (ffmpeg, pg_dump, a build). */
  async sleep(seconds: number): Promise<CommandResult> {
    const command = `sleep ${seconds}`;
    const startedAt = performance.now();
    // On abort the child gets SIGTERM (execFile's `killSignal`) and this rejects with an AbortError caused by
    // the CancellationError.
    const running = execFileAsync('sleep', [String(seconds)], { signal: this.cancellation.signal });
    const { pid } = running.child;
    this.logger.log(`${command} started, pid ${pid}`);
    try {
      await running;
    } catch (err) {
      const cancelled = findCancellationError(err);
      if (cancelled !== undefined) this.logger.log(`${command} (pid ${pid}) killed (${cancelled.kind})`);
      throw err;
    }
    return { command, pid, elapsedMs: Math.round(performance.now() - startedAt) };
  }
}
