import { Worker } from 'bullmq';
import type { Job } from 'bullmq';

/** A processor as BullMQ calls it. @internal */
export type Processor = (job: Job, token?: string, signal?: AbortSignal) => Promise<unknown>;

/** What runs a worker's jobs in a scope: one per application (`JobRunner`). @internal */
export interface JobRunnerLike {
  run(
    job: Job,
    token: string | undefined,
    signal: AbortSignal | undefined,
    processor: Processor,
  ): Promise<unknown>;
  /** The worker's jobs run through this runner from now on. */
  adopt(worker: Worker): void;
}

/**
 * Process-wide, on a registered symbol (the ESM and the CommonJS copy of this package share it): the runners
 * of the applications running now, and which runner each worker belongs to. A worker is bound by its
 * application's runner when it starts (`@Processor()` classes, found through Nest's discovery); a worker that
 * runs a job before any runner bound it (a worker made by hand, a processor given to `registerQueue()`) is
 * bound to the runner of the most recent application.
 */
const STATE_KEY = Symbol.for('nestjs-cancellation.bullmq.v1');

interface WorkerBindings {
  readonly runners: JobRunnerLike[];
  readonly owners: WeakMap<Worker, JobRunnerLike>;
}

const holder = globalThis as typeof globalThis & { [STATE_KEY]?: WorkerBindings };
const bindings: WorkerBindings = (holder[STATE_KEY] ??= { runners: [], owners: new WeakMap() });

/** An application's runner starts (`live`) or stops. @internal */
export function registerRunner(runner: JobRunnerLike, live: boolean): void {
  const index = bindings.runners.indexOf(runner);
  if (index !== -1) bindings.runners.splice(index, 1);
  if (live) bindings.runners.push(runner);
}

/** The worker's jobs run through `runner`. @internal */
export function bindWorker(worker: Worker, runner: JobRunnerLike): void {
  bindings.owners.set(worker, runner);
}

function ownerOf(worker: Worker): JobRunnerLike | undefined {
  let runner = bindings.owners.get(worker);
  if (runner === undefined) {
    runner = bindings.runners.at(-1);
    if (runner !== undefined) runner.adopt(worker);
  }
  return runner;
}

/**
 * A processor that declares three parameters, so that BullMQ gives it the job's AbortSignal
 * (`processor.length >= 3`), and that runs `processor` in the job's scope.
 */
function wrap(processor: Processor, self: { worker?: Worker }): Processor {
  return function processInScope(job: Job, token?: string, signal?: AbortSignal): Promise<unknown> {
    const runner = self.worker === undefined ? undefined : ownerOf(self.worker);
    if (runner === undefined) return processor(job, token, signal);
    return runner.run(job, token, signal, processor);
  };
}

const classes = new WeakMap<typeof Worker, typeof Worker>();

/**
 * A subclass of `Base` (BullMQ's `Worker` unless given) whose processor function runs each job in a scope of
 * its own: `CancellationService.signal` inside it is the job's signal. A sandboxed processor (a file path)
 * is passed on unchanged: it runs in another process, out of reach.
 * @internal
 */
export function cancellableWorkerClass(Base: typeof Worker = Worker): typeof Worker {
  const known = classes.get(Base);
  if (known !== undefined) return known;
  class CancellableWorker extends Base {
    constructor(...args: ConstructorParameters<typeof Worker>) {
      const [name, processor, ...rest] = args;
      const self: { worker?: Worker } = {};
      super(name, typeof processor === 'function' ? wrap(processor as Processor, self) : processor, ...rest);
      self.worker = this;
    }
  }
  classes.set(Base, CancellableWorker);
  return CancellableWorker;
}
