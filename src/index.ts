export { CancellationError, findCancellationError, isCancellationError } from './core/cancellation-error.js';
export type { CancellationKind } from './core/cancellation-error.js';
export type { CancelledMessageError } from './contexts/message-reply.js';
export { CancellationService } from './core/cancellation.service.js';
export { checkpoint } from './core/checkpoint.js';
export { RequestSignal } from './decorators/request-signal.decorator.js';
export { RequestTimeout } from './decorators/request-timeout.decorator.js';
export { SkipCancellation } from './decorators/skip-cancellation.decorator.js';
export {
  CancellationException,
  ClientClosedRequestException,
  DeadlineExceededException,
  RequestCancelledException,
  ServiceShuttingDownException,
} from './http/outcome-exceptions.js';
export type { RouteExclusion } from './http/route-exclusion.js';
export { CancellationInterceptor } from './module/cancellation.interceptor.js';
export { CancellationModule } from './module/cancellation.module.js';
export type {
  CancellationAdminOptions,
  CancellationModuleExtras,
  CancellationModuleOptions,
} from './module/cancellation.options.js';
export { OutboundCancellation } from './outbound/outbound-cancellation.service.js';
export type { AxiosLikeInstance, AxiosLikeRequestConfig } from './outbound/axios-like.js';
export { CancellationRegistry } from './registry/cancellation-registry.service.js';
export { fromAbortSignal } from './rxjs/from-abort-signal.js';
export { takeUntilCancelled } from './rxjs/take-until-cancelled.js';
export type {
  CancelledEvent,
  CancellationListener,
  InFlightRequest,
  SettledEvent,
} from './registry/cancellation-events.types.js';
