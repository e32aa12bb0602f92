/**
 * `nestjs-cancellation/fleet`: one registry and one cancel for every instance of the application, over Redis
 * (pub/sub for speed, keys with a time-to-live as the backstop). `ioredis` is an optional peer dependency,
 * needed only by this entry point.
 * @module
 */
export { CancellationFleetModule } from './cancellation-fleet.module.js';
export { FleetRegistry } from './fleet.registry.js';
export type { FleetCancelResult, FleetWork } from './fleet.registry.js';
export { FleetUnavailableError } from './fleet-unavailable.error.js';
export type { FleetOptions } from './fleet.options.js';
