import { ConfigurableModuleBuilder } from '@nestjs/common';
import type { CancellationModuleOptions } from './cancellation.options.js';

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
    .build();
