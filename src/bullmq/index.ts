/**
 * `nestjs-cancellation/bullmq`: BullMQ jobs (`@nestjs/bullmq`) that stop on time. Each job runs in a scope of
 * its own, so `CancellationService.signal` inside a processor is the job's signal: it aborts on the worker's
 * `cancelJob()`, on the registry's `cancel(id)`, on the job's budget and at shutdown, and `app.close()` no
 * longer waits for a long job to end. `bullmq` and `@nestjs/bullmq` are optional peer dependencies, needed
 * only by this entry point.
 * @module
 */
import { cancellableWorkerClass } from '../contexts/bullmq/cancellable-worker.js';

export { CancellationBullModule } from '../contexts/bullmq/cancellation-bull.module.js';
export type { JobCancellationOptions } from '../contexts/bullmq/job-cancellation.options.js';

/**
 * BullMQ's `Worker` whose processor runs each job in its own scope, for workers made by hand
 * (`new CancellableWorker(queue, processor, options)`) in an application that imports
 * `CancellationBullModule`. `@Processor()` classes need nothing: the module installs it as
 * `BullModule.workerClass`.
 */
export const CancellableWorker = cancellableWorkerClass();
