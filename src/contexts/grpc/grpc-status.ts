import { IntrinsicException } from '@nestjs/common';
import type { CancellationError, CancellationKind } from '../../core/cancellation-error.js';

/**
 * The gRPC status codes a cancellation is answered with (numbers of `@grpc/grpc-js`'s `status` enum, which
 * this module does not import).
 * @internal
 */
export const GRPC_STATUS = {
  CANCELLED: 1,
  DEADLINE_EXCEEDED: 4,
  UNAVAILABLE: 14,
} as const;

/** The status a cancellation of this kind is answered with. */
function codeOf(kind: CancellationKind): number {
  switch (kind) {
    case 'timeout':
      return GRPC_STATUS.DEADLINE_EXCEEDED;
    case 'shutdown':
      // The one a client retries on another instance: the call did not run to its end.
      return GRPC_STATUS.UNAVAILABLE;
    case 'client-disconnected':
    case 'manual':
      return GRPC_STATUS.CANCELLED;
  }
}

/** Brand on the prototype, so that the other (ESM or CommonJS) copy of this package recognises it too. */
const BRAND = Symbol.for('nestjs-cancellation.GrpcCancellationStatus');

/**
 * What a cancelled gRPC call is answered with: an error carrying the status `code` and `details` that
 * `@grpc/grpc-js` sends (`DEADLINE_EXCEEDED` for a timeout, `UNAVAILABLE` for shutdown, which clients retry,
 * `CANCELLED` for a call cancelled with `CancellationRegistry.cancel(id)`; a call whose client is gone is
 * answered with nothing). Its `cause` is the `CancellationError`, so `isCancellationError()` recognises it.
 *
 * `CancellationModule`'s exception filter hands it to the gRPC server as it is; an application filter that
 * catches every exception should do the same (`throwError(() => exception)`). An `IntrinsicException`, so Nest
 * never logs it as an error.
 */
export class GrpcCancellationStatus extends IntrinsicException {
  /** The gRPC status code (`status.DEADLINE_EXCEEDED`, `status.UNAVAILABLE`, `status.CANCELLED`). */
  readonly code: number;
  /** The status message the client receives. */
  readonly details: string;
  /** Why the call was cancelled (also the `cause`). */
  readonly reason: CancellationError;

  /** @param reason the cancellation it answers */
  constructor(reason: CancellationError) {
    super(reason.message, { cause: reason });
    this.reason = reason;
    this.code = codeOf(reason.kind);
    this.details = reason.message;
  }

  /** `'GrpcCancellationStatus'`. */
  override get name(): string {
    return 'GrpcCancellationStatus';
  }
}

Object.defineProperty(GrpcCancellationStatus.prototype, BRAND, { value: true });

/**
 * Whether `value` is a `GrpcCancellationStatus`, from either copy of the package.
 * @internal
 */
export function isGrpcCancellationStatus(value: unknown): value is GrpcCancellationStatus {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[BRAND] === true;
}
