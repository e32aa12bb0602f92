/**
 * `nestjs-cancellation/schedule`: a scope per run of the jobs of `@nestjs/schedule` (`@Cron()`, `@Interval()`,
 * `@Timeout()`), with its own signal, an optional budget (`@JobTimeout()`), an entry in `inFlight()` and a place
 * in shutdown's drain. `@nestjs/schedule` is an optional peer dependency: this module imports nothing from it
 * (it reads the metadata its decorators set), so versions 6 (Nest 11) and 12 (Nest 12) both work.
 * @module
 */
export { CancellationScheduleModule } from '../contexts/schedule/cancellation-schedule.module.js';
export { JobTimeout } from '../contexts/schedule/job-timeout.decorator.js';
export type { ScheduledRunKind } from '../contexts/schedule/scheduled-method.js';
