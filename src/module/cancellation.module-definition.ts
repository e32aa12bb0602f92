import { ConfigurableModuleBuilder } from '@nestjs/common';
import type { CancellationModuleExtras, CancellationModuleOptions } from './cancellation.options.js';

/**
 * The options exactly as `forRoot()` / `forRootAsync()` received them.
 * @internal
 */
export const CANCELLATION_MODULE_OPTIONS = Symbol('nestjs-cancellation:module-options');

/**
 * The options with defaults filled in and every field validated.
 * @internal
 */
export const RESOLVED_OPTIONS = Symbol('nestjs-cancellation:resolved-options');

/** @internal */
export const { ConfigurableModuleClass, OPTIONS_TYPE, ASYNC_OPTIONS_TYPE } =
  new ConfigurableModuleBuilder<CancellationModuleOptions>({
    moduleName: 'Cancellation',
    optionsInjectionToken: CANCELLATION_MODULE_OPTIONS,
  })
    .setClassMethodName('forRoot')
    .setFactoryMethodName('createCancellationOptions')
    // The admin controller's options shape the module itself (which controllers exist), so they are read
    // from forRoot()'s / forRootAsync()'s argument, never from an async factory; CancellationModule adds the
    // controller.
    .setExtras<CancellationModuleExtras>({ admin: undefined }, (definition) => definition)
    .build();
