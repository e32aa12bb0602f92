import type { ModulesContainer } from '@nestjs/core';

/** What the ordering reads and writes of Nest's module reference (`Module` of `@nestjs/core`). */
interface OrderedModule {
  readonly metatype: unknown;
  distance: number;
}

/**
 * Makes a module's shutdown hooks run before every other module's.
 *
 * Nest runs `onModuleDestroy`, `beforeApplicationShutdown` and `onApplicationShutdown` module by module in
 * ascending `distance` from the root module (`getModulesToTriggerHooksOn()` in `nest-application-context.js`,
 * Nest 11 and 12), and gives a global module the largest distance, so a global module's hooks run last: after
 * the modules that close the database pools its requests use. A module whose distance is below the root's runs
 * its destroy and shutdown hooks first (and its init and bootstrap hooks last). Nest sorts the modules once, at
 * the first lifecycle hook; this runs in the module's constructor, before that.
 * @internal
 */
export function runShutdownHooksFirst(container: ModulesContainer, moduleClass: unknown): void {
  const modules = [...container.values()] as unknown as OrderedModule[];
  const own = modules.filter((module) => module.metatype === moduleClass);
  const others = modules.filter((module) => module.metatype !== moduleClass);
  const lowest = Math.min(0, ...others.map((module) => module.distance));
  for (const module of own) module.distance = lowest - 1;
}
