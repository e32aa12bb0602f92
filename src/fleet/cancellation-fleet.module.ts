import { Global, Module } from '@nestjs/common';
import type { DynamicModule } from '@nestjs/common';
import { FLEET_REGISTRY } from '../registry/fleet-registry.token.js';
import { FleetMember } from './fleet-member.js';
import { FLEET_OPTIONS, resolveFleetOptions } from './fleet.options.js';
import type { FleetOptions } from './fleet.options.js';
import { FleetRegistry } from './fleet.registry.js';

/**
 * Makes this instance a member of the application's fleet, over Redis: it publishes what it has in flight
 * (requests and jobs) under a lease and takes cancels from the other instances. `FleetRegistry` lists every
 * live instance's work and cancels by id wherever it runs; the admin controller of `CancellationModule` gets
 * `?fleet=true` on both its routes. Opt-in: import it beside `CancellationModule.forRoot()`. The application
 * starts whether or not Redis is reachable; while it is not, local cancellation works and fleet calls fail
 * fast with a `FleetUnavailableError`.
 *
 * @example
 * ```ts
 * @Module({
 *   imports: [
 *     CancellationModule.forRoot({ admin: { guard: AdminGuard } }),
 *     CancellationFleetModule.forRoot({ redis: process.env.REDIS_URL! }),
 *   ],
 * })
 * export class AppModule {}
 * ```
 */
@Global()
@Module({})
export class CancellationFleetModule {
  /**
   * Registers the fleet membership with these options.
   * @param options see {@link FleetOptions}
   */
  static forRoot(options: FleetOptions): DynamicModule {
    return {
      module: CancellationFleetModule,
      providers: [
        { provide: FLEET_OPTIONS, useValue: resolveFleetOptions(options) },
        FleetMember,
        FleetRegistry,
        { provide: FLEET_REGISTRY, useExisting: FleetRegistry },
      ],
      exports: [FleetRegistry, FLEET_REGISTRY],
    };
  }
}
