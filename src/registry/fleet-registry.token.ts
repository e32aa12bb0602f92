import type { InFlightRequest } from './cancellation-events.types.js';

/**
 * What the admin controller needs of the fleet (`nestjs-cancellation/fleet`'s `FleetRegistry`), known here by a
 * token so that the core imports nothing of the fleet (nor ioredis).
 * @internal
 */
export interface FleetLike {
  inFlight(): Promise<Array<InFlightRequest & { readonly instanceId: string }>>;
  cancel(id: string, message?: string): Promise<{ readonly cancelled: number }>;
}

/** @internal */
export const FLEET_REGISTRY = Symbol('nestjs-cancellation:fleet-registry');
