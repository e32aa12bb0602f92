import { Inject, Injectable } from '@nestjs/common';
import type { OnApplicationShutdown, OnModuleInit } from '@nestjs/common';
import { globalState } from '../core/async-context.js';
import { RESOLVED_OPTIONS } from './cancellation.module-definition.js';
import type { ResolvedCancellationOptions } from './cancellation.options.js';

/**
 * Records, process-wide, that an application runs with `asyncContext: false`, from its init to its shutdown:
 * the options live per application, while `checkpoint()` and `queryWithSignal()` are plain functions that only
 * see the global state, and must know that a missing store may mean a request they cannot see
 * (`contextlessCall`).
 * @internal
 */
@Injectable()
export class AsyncContextMode implements OnModuleInit, OnApplicationShutdown {
  private counted = false;

  constructor(@Inject(RESOLVED_OPTIONS) private readonly options: ResolvedCancellationOptions) {}

  onModuleInit(): void {
    if (this.options.asyncContext || this.counted) return;
    this.counted = true;
    globalState.contextlessApps = (globalState.contextlessApps ?? 0) + 1;
  }

  /** Once the application has shut down: its requests in flight, aborted at the start of it, are over. */
  onApplicationShutdown(): void {
    if (!this.counted) return;
    this.counted = false;
    globalState.contextlessApps = Math.max(0, (globalState.contextlessApps ?? 0) - 1);
  }
}
