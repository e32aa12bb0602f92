import { Inject, Injectable, Logger } from '@nestjs/common';
import { RESOLVED_OPTIONS } from '../module/cancellation.module-definition.js';
import type { ResolvedCancellationOptions } from '../module/cancellation.options.js';
import { describeWork } from './tracked-work.js';
import type { TrackedWork } from './tracked-work.js';

/**
 * With `stillRunningWarningMs`, reports a handler still running that long after its signal aborted: it does
 * not honour its signal. Once per route, so that a busy route does not flood the log.
 * @internal
 */
@Injectable()
export class StillRunningDetector {
  /** Routes already reported. */
  private readonly reported = new Set<string>();
  private readonly logger = new Logger('Cancellation');

  constructor(@Inject(RESOLVED_OPTIONS) private readonly options: ResolvedCancellationOptions) {}

  /** `work` was cancelled and its handler still runs; `stillRunning()` tells, later, whether it still does. */
  watch(work: TrackedWork, stillRunning: () => boolean): void {
    const warnAfter = this.options.stillRunningWarningMs;
    if (warnAfter === false) return;
    const route = `${work.method} ${work.route}`;
    if (this.reported.has(route)) return;
    setTimeout(() => {
      if (!stillRunning() || this.reported.has(route)) return;
      this.reported.add(route);
      this.logger.warn(
        `${describeWork(work)} is still running ${warnAfter} ms after its signal aborted ` +
          `(${work.reason?.kind}): the handler does not stop when its request is cancelled. Pass its ` +
          `AbortSignal (CancellationService.signal, @RequestSignal()) to what it awaits, or call ` +
          `checkpoint() in its loops. Reported once per route.`,
      );
    }, warnAfter).unref();
  }
}
