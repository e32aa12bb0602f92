import { SetMetadata } from '@nestjs/common';
import { validateTimeout } from '../module/options.validation.js';

/**
 * Metadata key under which `@RequestTimeout()` stores a route's or a controller's time budget.
 * @internal
 */
export const REQUEST_TIMEOUT_METADATA = 'nestjs-cancellation:request-timeout';

/**
 * Sets the time budget of a route, or of every route of a controller (the handler's own wins). When it runs
 * out, the request's signal aborts with `kind: 'timeout'` and the client is answered with the module's
 * `timeoutStatus` (504 by default). `@RequestTimeout(false)` opts a route out of the module's `timeoutMs`.
 *
 * A value that is not `false` or a whole number of milliseconds from 1 to 2^31-1 throws when the class is
 * defined, naming the controller and method.
 *
 * @example
 * ```ts
 * @Get('export')
 * @RequestTimeout(30_000)
 * export(@RequestSignal() signal: AbortSignal) { ... }
 * ```
 */
export function RequestTimeout(ms: number | false): ClassDecorator & MethodDecorator {
  return (target: object, key?: string | symbol, descriptor?: PropertyDescriptor) => {
    const owner = (typeof target === 'function' ? target : target.constructor) as { name?: string };
    const where =
      key === undefined
        ? `@RequestTimeout() on ${owner.name ?? 'a class'}`
        : `@RequestTimeout() on ${owner.name ?? 'a class'}.${String(key)}`;
    const timeoutMs = validateTimeout(where, ms);
    if (descriptor !== undefined && key !== undefined) {
      SetMetadata(REQUEST_TIMEOUT_METADATA, timeoutMs)(target, key, descriptor);
    } else {
      SetMetadata(REQUEST_TIMEOUT_METADATA, timeoutMs)(target as () => void);
    }
  };
}
