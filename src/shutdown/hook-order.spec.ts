import type { ModulesContainer } from '@nestjs/core';
import { runShutdownHooksFirst } from './hook-order.js';

class Own {}
class Root {}
class Feature {}
class Global {}

function container(...modules: { metatype: unknown; distance: number }[]): ModulesContainer {
  return new Map(modules.map((module, index) => [String(index), module])) as unknown as ModulesContainer;
}

describe('runShutdownHooksFirst', () => {
  it("gives the module a distance below every other module's, the root's included", () => {
    const own = { metatype: Own, distance: Number.MAX_VALUE };
    const others = [
      { metatype: Root, distance: 1 },
      { metatype: Feature, distance: 2 },
      { metatype: Global, distance: Number.MAX_VALUE },
    ];
    runShutdownHooksFirst(container(own, ...others), Own);
    expect(own.distance).toBeLessThan(Math.min(...others.map((module) => module.distance)));
    // Nest runs destroy and shutdown hooks in ascending distance: this module's first.
    const order = [own, ...others].sort((a, b) => a.distance - b.distance).map((module) => module.metatype);
    expect(order[0]).toBe(Own);
    expect(others.map((module) => module.distance)).toEqual([1, 2, Number.MAX_VALUE]);
  });

  it('stays below a module that already lowered its own distance', () => {
    const own = { metatype: Own, distance: Number.MAX_VALUE };
    const early = { metatype: Feature, distance: -5 };
    runShutdownHooksFirst(container(early, own, { metatype: Root, distance: 1 }), Own);
    expect(own.distance).toBe(-6);
  });
});
