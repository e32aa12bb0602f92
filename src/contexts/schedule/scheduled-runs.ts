import { Inject, Injectable, Logger } from '@nestjs/common';
import type { OnApplicationShutdown, OnModuleInit } from '@nestjs/common';
import { DiscoveryService } from '@nestjs/core';
import { setTimeout as sleep } from 'node:timers/promises';
import { scopeStorage } from '../../core/async-context.js';
import { CancellationError } from '../../core/cancellation-error.js';
import { CancellationRuntime } from '../../module/cancellation-runtime.js';
import { jobBudgetOf } from './job-timeout.decorator.js';
import { attachRunner, detachRunner, jobNameOf, wrapScheduledMethods } from './scheduled-method.js';
import type { ScheduledMethod, ScheduledRunner } from './scheduled-method.js';
import { ScheduledRunScope } from './scheduled-run-scope.js';

type Wrapper = ReturnType<DiscoveryService['getProviders']>[number];

/**
 * Gives every run of the application's scheduled methods its own `ScheduledRunScope`, and makes sure no run
 * outlives `app.close()`: shutdown's drain waits for the runs in flight up to `shutdownGracePeriodMs` and then
 * aborts them (as it does requests, through the in-flight registry); this waits, in `onApplicationShutdown`,
 * for the aborted runs to settle, up to `shutdownTimeoutMs` after shutdown began.
 *
 * The scheduled methods are wrapped in the constructor: every provider is constructed before any
 * `onModuleInit`, where `@nestjs/schedule`'s explorer reads them, whatever order the modules' hooks run in.
 * @internal
 */
@Injectable()
export class ScheduledRuns implements ScheduledRunner, OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger('Cancellation');
  /** The runs whose method has not settled, cancelled ones included. */
  private readonly runs = new Set<ScheduledRunScope>();
  /** The instances whose scheduled methods this runs. */
  private readonly instances: object[] = [];
  /** `performance.now()` when shutdown began (the drain). */
  private shutdownBeganAt = 0;

  constructor(
    @Inject(DiscoveryService) private readonly discovery: DiscoveryService,
    @Inject(CancellationRuntime) private readonly runtime: CancellationRuntime,
  ) {
    for (const wrapper of this.wrappers()) wrapScheduledMethods(prototypeOf(wrapper));
  }

  /** Attaches this runner to every instance with scheduled methods (factory-made ones are wrapped now). */
  onModuleInit(): void {
    for (const wrapper of this.wrappers()) {
      const instance: unknown = wrapper.instance;
      if (typeof instance !== 'object' || instance === null || !wrapper.isDependencyTreeStatic()) continue;
      if (!wrapScheduledMethods(Object.getPrototypeOf(instance) as object | null)) continue;
      attachRunner(instance, this);
      this.instances.push(instance);
    }
    const { drainingSignal } = this.runtime.signals;
    const began = (): void => void (this.shutdownBeganAt = performance.now());
    if (drainingSignal.aborted) began();
    else drainingSignal.addEventListener('abort', began, { once: true });
  }

  /**
   * Runs one tick of `method` in a scope of its own. A call made inside another scope (a request that calls the
   * method itself) runs in that scope; a tick that fires once shutdown has begun is skipped.
   */
  run(instance: object, method: ScheduledMethod, args: unknown[]): unknown {
    if (scopeStorage.getStore() !== undefined) return method.original.apply(instance, args);
    const { runtime } = this;
    const name = jobNameOf(method);
    if (runtime.signals.isDraining) {
      if (runtime.options.logCancellations) {
        this.logger.verbose(`${method.kind.toUpperCase()} ${name} skipped: the application is shutting down`);
      }
      return undefined;
    }
    const scope = new ScheduledRunScope(method.kind, name, runtime, jobBudgetOf(instance, method.original));
    this.runs.add(scope);
    void scope.settled.then(() => this.runs.delete(scope));
    return scope.run(() => method.original.apply(instance, args));
  }

  /**
   * After the drain and the abort (`beforeApplicationShutdown`): waits for the runs still going to settle, up to
   * `shutdownTimeoutMs` after shutdown began, and names those that ignore their signal.
   */
  async onApplicationShutdown(): Promise<void> {
    for (const instance of this.instances) detachRunner(instance, this);
    this.instances.length = 0;
    if (this.runs.size === 0) return;
    const { signals, options } = this.runtime;
    // Aborted already unless an earlier hook failed.
    const reason = signals.isShuttingDown ? signals.shutdownReason() : new CancellationError('shutdown');
    for (const run of this.runs) run.cancel(reason);
    const began = this.shutdownBeganAt || performance.now();
    const left = Math.max(0, began + options.shutdownTimeoutMs - performance.now());
    const waiting = new AbortController();
    await Promise.race([
      Promise.all([...this.runs].map((run) => run.settled)),
      sleep(left, undefined, { signal: waiting.signal }).catch(() => undefined),
    ]);
    waiting.abort();
    for (const run of this.runs) {
      this.logger.warn(
        `${run.method} ${run.route} [${run.id}] is still running ${Math.round(run.elapsedMs)} ms after it ` +
          `started, ${Math.round(performance.now() - run.abortedAt)} ms after its signal aborted: the job ` +
          `does not stop when cancelled. Pass CancellationService.signal to what it awaits, or call ` +
          `checkpoint() in its loops.`,
      );
    }
  }

  private wrappers(): Wrapper[] {
    return [...this.discovery.getProviders(), ...this.discovery.getControllers()];
  }
}

/** The prototype of what a provider makes: its instance's, or its class's before it is constructed. */
function prototypeOf(wrapper: Wrapper): object | null {
  const instance: unknown = wrapper.instance;
  if (typeof instance === 'object' && instance !== null)
    return Object.getPrototypeOf(instance) as object | null;
  const metatype: unknown = wrapper.metatype;
  if (wrapper.inject || typeof metatype !== 'function') return null;
  return (metatype as { prototype?: object }).prototype ?? null;
}
