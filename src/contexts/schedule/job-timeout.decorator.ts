import { validateTimeout } from '../../module/options.validation.js';

/**
 * Metadata key under which `@JobTimeout()` stores a scheduled method's or a class's time budget.
 * @internal
 */
export const JOB_TIMEOUT_METADATA = 'nestjs-cancellation:job-timeout';

type Reflection = {
  defineMetadata(key: string, value: unknown, target: object): void;
  getMetadata(key: string, target: object): unknown;
};

/**
 * Sets the time budget of each run of a scheduled method (`@Cron()`, `@Interval()`, `@Timeout()`), or of every
 * scheduled method of a class (the method's own wins). When a run has taken that long, its signal
 * (`CancellationService.signal` inside the run) aborts with `kind: 'timeout'`, and `remainingMs` counts down to
 * it. Each run gets the whole budget, overlapping runs too. `@JobTimeout(false)` opts a method out of its class's
 * budget. The module's `timeoutMs` and `@RequestTimeout()` are for requests and do not apply to jobs.
 *
 * A value that is not `false` or a whole number of milliseconds from 1 to 2^31-1 throws when the class is
 * defined, naming the class and method.
 *
 * @example
 * ```ts
 * @Cron(CronExpression.EVERY_HOUR)
 * @JobTimeout(10 * 60_000)
 * async rebuildIndex() { ... }
 * ```
 */
export function JobTimeout(ms: number | false): ClassDecorator & MethodDecorator {
  return (target: object, key?: string | symbol, descriptor?: PropertyDescriptor) => {
    const owner = (typeof target === 'function' ? target : target.constructor) as { name?: string };
    const where = `@JobTimeout() on ${owner.name ?? 'a class'}${key === undefined ? '' : `.${String(key)}`}`;
    const budget = validateTimeout(where, ms);
    const holder: unknown = descriptor?.value ?? target;
    (Reflect as unknown as Reflection).defineMetadata(JOB_TIMEOUT_METADATA, budget, holder as object);
  };
}

/**
 * The budget of a run of `method` on `instance`: the method's `@JobTimeout()`, else its class's, else none.
 * @internal
 */
export function jobBudgetOf(instance: object, method: object): number | false {
  const reflection = Reflect as unknown as Reflection;
  const own = reflection.getMetadata(JOB_TIMEOUT_METADATA, method);
  if (own !== undefined) return own as number | false;
  const inherited = reflection.getMetadata(JOB_TIMEOUT_METADATA, instance.constructor);
  return inherited === undefined ? false : (inherited as number | false);
}
