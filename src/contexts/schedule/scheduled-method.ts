/**
 * The methods `@nestjs/schedule` runs (`@Cron()`, `@Interval()`, `@Timeout()`), told by the metadata its
 * decorators put on them, and the wrapper that gives each run its own scope. Structural, as for gRPC: nothing
 * here imports `@nestjs/schedule`, an optional peer dependency; its metadata keys and `SchedulerType` values are
 * the same in versions 6 (Nest 11) and 12.
 * @internal
 */

/** What `@nestjs/schedule`'s decorators set on a method: `SCHEDULER_TYPE`, `SCHEDULER_NAME`. */
const SCHEDULER_TYPE = 'SCHEDULER_TYPE';
const SCHEDULER_NAME = 'SCHEDULER_NAME';

/** How a scheduled method is started: `SchedulerType` 1, 2 and 3 of `@nestjs/schedule`. */
export type ScheduledRunKind = 'cron' | 'timeout' | 'interval';

const KINDS: Readonly<Record<number, ScheduledRunKind>> = { 1: 'cron', 2: 'timeout', 3: 'interval' };

/** Marks a wrapper, and holds the method it wraps. Registered, so that the ESM and the CommonJS build agree. */
const ORIGINAL = Symbol.for('nestjs-cancellation.scheduled-method.v1');
/** Where an instance keeps the runner of its application's scheduled runs. */
const RUNNER = Symbol.for('nestjs-cancellation.scheduled-runner.v1');

type Method = (this: object, ...args: unknown[]) => unknown;
type Wrapper = Method & { [ORIGINAL]?: ScheduledMethod };

/** A scheduled method, as the runner starts it. */
export interface ScheduledMethod {
  readonly kind: ScheduledRunKind;
  /** The method's own function. */
  readonly original: Method;
  /** The class that declares it. */
  readonly owner: object;
  /** The method's name. */
  readonly key: string;
}

/**
 * What runs a scheduled method in its own scope: one per application, found on the instance the scheduler
 * calls the method on (an instance of an application that did not import the schedule module has none, and its
 * methods run as they are).
 */
export interface ScheduledRunner {
  run(instance: object, method: ScheduledMethod, args: unknown[]): unknown;
}

function metadataOf(key: string, target: object): unknown {
  return (Reflect as unknown as { getMetadata(key: string, target: object): unknown }).getMetadata(
    key,
    target,
  );
}

/** The kind of a scheduled method, `undefined` for any other value. */
export function scheduledKindOf(fn: unknown): ScheduledRunKind | undefined {
  if (typeof fn !== 'function') return undefined;
  const type = metadataOf(SCHEDULER_TYPE, fn);
  return typeof type === 'number' ? KINDS[type] : undefined;
}

/** The job's name: the one given to the decorator, else `Class.method`. */
export function jobNameOf(method: ScheduledMethod): string {
  const name = metadataOf(SCHEDULER_NAME, method.original);
  if (typeof name === 'string' && name !== '') return name;
  return `${(method.owner as { constructor?: { name?: string } }).constructor?.name ?? 'Job'}.${method.key}`;
}

/** Whether `fn` is a wrapper made by `wrapScheduledMethods`. */
export function isWrapped(fn: unknown): boolean {
  return typeof fn === 'function' && (fn as Wrapper)[ORIGINAL] !== undefined;
}

/**
 * Replaces each scheduled method of `prototype` and its ancestors, on the prototype that declares it, with a
 * wrapper that carries the same metadata (what `@nestjs/schedule`'s explorer reads, in `onModuleInit`, through
 * the instance) and runs the method through its instance's runner, or as it is when the instance has none.
 * Done once per method, for every application of the process. Returns whether `prototype` has any.
 */
export function wrapScheduledMethods(prototype: object | null): boolean {
  let found = false;
  for (
    let owner = prototype;
    owner !== null && owner !== Object.prototype;
    owner = Object.getPrototypeOf(owner)
  ) {
    for (const key of Object.getOwnPropertyNames(owner)) {
      if (key === 'constructor') continue;
      const descriptor = Object.getOwnPropertyDescriptor(owner, key);
      const value: unknown = descriptor?.value;
      const kind = scheduledKindOf(value);
      if (kind === undefined || descriptor === undefined) continue;
      found = true;
      if (isWrapped(value)) continue;
      Object.defineProperty(owner, key, {
        ...descriptor,
        value: wrap({ kind, original: value as Method, owner, key }),
      });
    }
  }
  return found;
}

function wrap(method: ScheduledMethod): Wrapper {
  const wrapper: Wrapper = function (this: object, ...args: unknown[]): unknown {
    const runner = (this as { [RUNNER]?: ScheduledRunner } | undefined)?.[RUNNER];
    return runner === undefined ? method.original.apply(this, args) : runner.run(this, method, args);
  };
  const reflect = Reflect as unknown as {
    getOwnMetadataKeys(target: object): unknown[];
    getOwnMetadata(key: unknown, target: object): unknown;
    defineMetadata(key: unknown, value: unknown, target: object): void;
  };
  for (const key of reflect.getOwnMetadataKeys(method.original)) {
    reflect.defineMetadata(key, reflect.getOwnMetadata(key, method.original), wrapper);
  }
  // Name and arity too: what other decorators' explorers may read of the method.
  Object.defineProperty(wrapper, 'name', { value: method.original.name });
  Object.defineProperty(wrapper, 'length', { value: method.original.length });
  Object.defineProperty(wrapper, ORIGINAL, { value: method });
  return wrapper;
}

/** Makes `runner` run the scheduled methods of `instance`. */
export function attachRunner(instance: object, runner: ScheduledRunner): void {
  Object.defineProperty(instance, RUNNER, { value: runner, configurable: true, enumerable: false });
}

/** Lets the scheduled methods of `instance` run as they are again (its application closed). */
export function detachRunner(instance: object, runner: ScheduledRunner): void {
  if ((instance as { [RUNNER]?: ScheduledRunner })[RUNNER] === runner) {
    delete (instance as { [RUNNER]?: ScheduledRunner })[RUNNER];
  }
}
