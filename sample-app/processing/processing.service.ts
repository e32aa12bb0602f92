import { Injectable, Logger } from '@nestjs/common';
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { CancellationService, isCancellationError } from 'nestjs-cancellation';
import type { CancellationError } from 'nestjs-cancellation';

/** How long one item takes: stands for the per-item I/O of real work (a database write, an API call). */
export const MS_PER_ITEM = 500;

export interface ProcessResult {
  processed: number;
  /** SHA-256 over the items, in order. */
  digest: string;
  elapsedMs: number;
}

@Injectable()
export class ProcessingService {
  private readonly logger = new Logger(ProcessingService.name);

  constructor(private readonly cancellation: CancellationService) {}

  /**
   * Processes a request body for a few seconds. By the time this runs Node has read the whole body, and the
   * request stream has already emitted 'close': code that took `req.on('close')` for "the client left"
   * would abort every POST right here. nestjs-cancellation watches the response instead, so this runs to
   * the end unless the client really goes away.
   */
  async process(items: readonly unknown[]): Promise<ProcessResult> {
    const { signal } = this.cancellation;
    const startedAt = performance.now();
    const hash = createHash('sha256');
    let done = 0;
    try {
      for (const item of items) {
        await sleep(MS_PER_ITEM, undefined, { signal });
        hash.update(JSON.stringify(item) ?? 'undefined');
        done++;
      }
    } catch (err) {
      if (isCancellationError(err)) {
        const { kind } = signal.reason as CancellationError;
        this.logger.log(`Processing stopped (${kind}) after ${done} of ${items.length} items`);
      }
      throw err;
    }
    const elapsedMs = Math.round(performance.now() - startedAt);
    this.logger.log(`Processed ${done} items in ${elapsedMs} ms`);
    return { processed: done, digest: hash.digest('hex'), elapsedMs };
  }
}
