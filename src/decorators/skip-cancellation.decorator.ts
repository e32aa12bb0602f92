/**
 * Metadata key under which `@SkipCancellation()` marks a route or a controller.
 * @internal
 */
export const SKIP_CANCELLATION_METADATA = 'nestjs-cancellation:skip';

/** The route methods a class declares (its constructor and accessors aside). */
function ownMethods(prototype: object): object[] {
  const methods: object[] = [];
  for (const name of Object.getOwnPropertyNames(prototype)) {
    if (name === 'constructor') continue;
    const descriptor = Object.getOwnPropertyDescriptor(prototype, name);
    if (typeof descriptor?.value === 'function') methods.push(descriptor.value as object);
  }
  return methods;
}

/**
 * Opts a route, or every route of a controller, out of cancellation, as `@SkipThrottle()` does for the
 * throttler: no request scope (`CancellationService.signal` is the application's shutdown signal there), no
 * time budget, and no refusal while the application drains, so that health checks, readiness probes and
 * metrics scrapes keep answering during shutdown. `@SkipCancellation(false)` on a method takes one route of
 * a skipped controller back.
 *
 * On a controller it marks the methods the class itself declares (the application's HTTP server looks a
 * route up by its handler before routing, to let it through while draining); a route method inherited from a
 * base class keeps the base class's setting. The `exclude` option does the same by path.
 *
 * @example
 * ```ts
 * @Controller('health')
 * @SkipCancellation()
 * export class HealthController {
 *   @Get() check() { return { status: 'ok' }; }
 * }
 * ```
 */
export function SkipCancellation(skip = true): ClassDecorator & MethodDecorator {
  if (typeof skip !== 'boolean') {
    throw new TypeError(`nestjs-cancellation: @SkipCancellation() takes true or false, not ${String(skip)}`);
  }
  return (target: object, key?: string | symbol, descriptor?: PropertyDescriptor) => {
    if (descriptor !== undefined && key !== undefined) {
      Reflect.defineMetadata(SKIP_CANCELLATION_METADATA, skip, descriptor.value as object);
      return;
    }
    Reflect.defineMetadata(SKIP_CANCELLATION_METADATA, skip, target);
    // Nest copies a method's metadata onto the handler it registers with Express or Fastify, which is what the
    // door sees before routing: a method's own setting wins over its controller's.
    for (const method of ownMethods((target as { prototype: object }).prototype)) {
      if (!Reflect.hasOwnMetadata(SKIP_CANCELLATION_METADATA, method))
        Reflect.defineMetadata(SKIP_CANCELLATION_METADATA, skip, method);
    }
  };
}
