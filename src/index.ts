export { checkpoint } from './cancellation.checkpoint.js';
export { RequestSignal, RequestTimeout } from './cancellation.decorators.js';
export { CancellationError, findCancellationError, isCancellationError } from './cancellation.error.js';
export type { CancellationKind } from './cancellation.error.js';
export type { AxiosLikeInstance, AxiosLikeRequestConfig } from './cancellation.deadline.js';
export type {
  CancelledEvent,
  CancellationListener,
  InFlightRequest,
  SettledEvent,
} from './cancellation.events.js';
export { CancellationInterceptor } from './cancellation.interceptor.js';
export { CancellationModule } from './cancellation.module.js';
export type {
  CancellationAdminOptions,
  CancellationModuleExtras,
  CancellationModuleOptions,
} from './cancellation.options.js';
export { CancellationService } from './cancellation.service.js';
