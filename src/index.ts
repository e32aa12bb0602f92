export { checkpoint } from './cancellation.checkpoint.js';
export { RequestSignal, RequestTimeout } from './cancellation.decorators.js';
export { CancellationError, findCancellationError, isCancellationError } from './cancellation.error.js';
export type { CancellationKind } from './cancellation.error.js';
export type { AxiosLikeInstance, AxiosLikeRequestConfig } from './cancellation.deadline.js';
export { CancellationInterceptor } from './cancellation.interceptor.js';
export { CancellationModule } from './cancellation.module.js';
export type { CancellationModuleOptions } from './cancellation.options.js';
export { CancellationService } from './cancellation.service.js';
