import { Global, Inject, Module } from '@nestjs/common';
import type { DynamicModule, MiddlewareConsumer, NestModule } from '@nestjs/common';
import {
  APP_FILTER,
  APP_INTERCEPTOR,
  ApplicationConfig,
  HttpAdapterHost,
  ModulesContainer,
} from '@nestjs/core';
import { withAdmin } from '../admin/cancellation-admin.controller.js';
import { CancellationService } from '../core/cancellation.service.js';
import { CancellationExceptionFilter, tryFirst } from '../http/cancellation.filter.js';
import { expressDoor, fastifyDoor } from '../http/early-scope.hooks.js';
import { CancellationMetrics } from '../metrics/cancellation.metrics.js';
import { OutboundCancellation } from '../outbound/outbound-cancellation.service.js';
import { CancellationEvents } from '../registry/cancellation-events.js';
import { CancellationRegistry } from '../registry/cancellation-registry.service.js';
import { InFlightRegistry } from '../registry/in-flight.registry.js';
import { StillRunningDetector } from '../registry/still-running.detector.js';
import { ApplicationSignals } from '../shutdown/application-signals.js';
import { ConnectionTracker } from '../shutdown/connection-tracker.js';
import { runShutdownHooksFirst } from '../shutdown/hook-order.js';
import { CancellationShutdown } from '../shutdown/shutdown.service.js';
import { AsyncContextMode } from './async-context-mode.js';
import { CancellationRuntime } from './cancellation-runtime.js';
import { CancellationInterceptor } from './cancellation.interceptor.js';
import {
  ASYNC_OPTIONS_TYPE,
  CANCELLATION_MODULE_OPTIONS,
  ConfigurableModuleClass,
  OPTIONS_TYPE,
  RESOLVED_OPTIONS,
} from './cancellation.module-definition.js';
import type { CancellationModuleExtras, CancellationModuleOptions } from './cancellation.options.js';
import { resolveOptions } from './options.validation.js';

/**
 * Makes every HTTP request of the application cancellable: import it once in the root module. It is global,
 * registers the interceptor for every route, cancels requests in flight when the application shuts down,
 * and provides `CancellationService`, `CancellationRegistry` and `OutboundCancellation` to every module.
 *
 * @example
 * ```ts
 * @Module({ imports: [CancellationModule.forRoot({ timeoutMs: 30_000 })] })
 * export class AppModule {}
 * ```
 *
 * `CancellationModule.forRootAsync({ imports, inject, useFactory })` takes the options from other providers
 * (e.g. `ConfigService`). Options are validated at start-up: a wrong value stops the application with an
 * error that names the option.
 */
@Global()
@Module({
  providers: [
    {
      provide: RESOLVED_OPTIONS,
      useFactory: resolveOptions,
      inject: [CANCELLATION_MODULE_OPTIONS],
    },
    ApplicationSignals,
    ConnectionTracker,
    StillRunningDetector,
    InFlightRegistry,
    CancellationEvents,
    CancellationRuntime,
    AsyncContextMode,
    CancellationShutdown,
    CancellationMetrics,
    CancellationRegistry,
    OutboundCancellation,
    CancellationService,
    { provide: APP_INTERCEPTOR, useClass: CancellationInterceptor },
    { provide: APP_FILTER, useClass: CancellationExceptionFilter },
  ],
  // CancellationRuntime too, for `@UseInterceptors(CancellationInterceptor)` in any module: the gateways of
  // Nest 11, which runs no global interceptor on them, need it.
  exports: [CancellationService, CancellationRegistry, OutboundCancellation, CancellationRuntime],
})
export class CancellationModule extends ConfigurableModuleClass implements NestModule {
  constructor(
    @Inject(HttpAdapterHost) private readonly adapterHost: HttpAdapterHost,
    @Inject(CancellationRuntime) private readonly runtime: CancellationRuntime,
    @Inject(ApplicationConfig) private readonly config: ApplicationConfig,
    @Inject(ModulesContainer) modules: ModulesContainer,
  ) {
    super();
    // The drain must begin before any other module's shutdown hook takes apart what requests use.
    runShutdownHooksFirst(modules, CancellationModule);
  }

  /**
   * Installs the door of every HTTP request, before routing: while the application drains it refuses new
   * requests (503) except on routes left out of cancellation; otherwise it opens the request's early scope,
   * so that a guard awaiting slow work (an auth call) can pass `CancellationService.signal` on. A middleware
   * on Express (mounted ahead of every module's middleware), an `onRequest` hook on Fastify. And makes the
   * module's exception filter the first global one, now that the application's are registered.
   */
  configure(_consumer: MiddlewareConsumer): void {
    tryFirst(this.config);
    const adapter = this.adapterHost.httpAdapter;
    switch (adapter?.getType()) {
      case 'express':
        adapter.use(expressDoor(this.runtime, () => adapter.getInstance()));
        break;
      case 'fastify': {
        const fastify = adapter.getInstance() as { addHook(name: string, hook: unknown): unknown };
        fastify.addHook('onRoute', (route: object) => this.runtime.exclusions.onFastifyRoute(route));
        fastify.addHook('onRequest', fastifyDoor(this.runtime));
        break;
      }
    }
  }

  /**
   * Registers the module with static options (all optional).
   * @param options see {@link CancellationModuleOptions}; `admin` ({@link CancellationModuleExtras}) mounts
   * the admin controller
   */
  static forRoot(options: CancellationModuleOptions & CancellationModuleExtras = {}): DynamicModule {
    return withAdmin(super.forRoot(options as typeof OPTIONS_TYPE), options.admin);
  }

  /**
   * Registers the module with options from a factory (`useFactory` + `inject`, `useClass`, `useExisting`).
   * `admin`, which decides whether the admin controller exists, is given here, beside the factory.
   */
  static forRootAsync(options: typeof ASYNC_OPTIONS_TYPE): DynamicModule {
    return withAdmin(super.forRootAsync(options), options.admin);
  }
}
