import { CancellationError } from '../../core/cancellation-error.js';

/**
 * A call of `@grpc/grpc-js`'s server as a handler receives it (`ServerUnaryCall`, `ServerReadableStream`,
 * `ServerWritableStream`, `ServerDuplexStream`), as far as cancellation needs it. Typed structurally: the main
 * entry point imports nothing from `@grpc/grpc-js`, an optional peer dependency.
 * @internal
 */
export interface GrpcServerCall {
  /** Set by grpc-js once the call has ended: cancelled by the client, past its deadline, or answered. */
  readonly cancelled: boolean;
  /** The call's metadata (the request's headers). */
  readonly metadata?: { get(key: string): ReadonlyArray<string | Uint8Array> };
  /** The caller's deadline: `Infinity` when it set none (grpc-js returns `Date.now()`-based milliseconds). */
  getDeadline(): Date | number;
  /** `/package.Service/Method`. */
  getPath?(): string;
  /** `'cancelled'`: the call ended. Emitted after every call, answered ones included, on the next tick. */
  on(event: 'cancelled', listener: () => void): unknown;
  removeListener(event: 'cancelled', listener: () => void): unknown;
  /** A streaming call's way to fail: a writable call's `'error'` ends it with that status. */
  emit?(event: 'error', error: unknown): boolean;
}

/** Whether `value` is a grpc-js server call. */
function isGrpcCall(value: unknown): value is GrpcServerCall {
  const call = value as Partial<GrpcServerCall> | null | undefined;
  return (
    typeof call === 'object' &&
    call !== null &&
    typeof call.cancelled === 'boolean' &&
    typeof call.getDeadline === 'function' &&
    typeof call.on === 'function' &&
    typeof call.removeListener === 'function'
  );
}

/** Where a handler's arguments hold the call, and what that says of the handler. */
export interface GrpcCallArgs {
  readonly call: GrpcServerCall;
  /**
   * `@GrpcStreamCall()`: the handler gets the call itself (and, for a client stream, the callback) and answers
   * it itself; Nest waits for the handler's stream to emit, and does not answer the call from it.
   */
  readonly passThrough: boolean;
}

/**
 * The gRPC call among the arguments Nest handles an `rpc` message with: third for `@GrpcMethod()` and
 * `@GrpcStreamMethod()` (`request` or its Observable, `metadata`, `call`), first for `@GrpcStreamCall()`
 * (`call`, and a client stream's `callback`). `undefined` for any other transport.
 * @internal
 */
export function grpcCallOf(args: readonly unknown[]): GrpcCallArgs | undefined {
  if (isGrpcCall(args[2])) return { call: args[2], passThrough: false };
  if (isGrpcCall(args[0])) return { call: args[0], passThrough: true };
  return undefined;
}

/**
 * How close to its deadline a call that ends counts as having run out of time rather than as cancelled by its
 * client (the client's own deadline timer fires and resets the stream a moment before the server's timer,
 * which started later, when the call arrived); and a handler that fails with a downstream's timeout, as timed
 * out itself (the downstream's timer, given the same deadline, may fire a moment before the caller's).
 * @internal
 */
export const DEADLINE_SLACK_MS = 20;

/**
 * Why a call that grpc-js ended before its handler did (`'cancelled'`) ended: its deadline passed, or its
 * client cancelled it.
 * @internal
 */
export function endReasonOf(callerDeadline: number | undefined): CancellationError {
  return callerDeadline !== undefined && Date.now() >= callerDeadline - DEADLINE_SLACK_MS
    ? new CancellationError('timeout', "The call's deadline passed")
    : new CancellationError('client-disconnected', 'The client cancelled the call');
}

/** The caller's deadline in `Date.now()` milliseconds; `undefined` when it set none. */
export function deadlineOf(call: GrpcServerCall): number | undefined {
  const deadline = call.getDeadline();
  const ms = typeof deadline === 'number' ? deadline : deadline.getTime();
  return Number.isFinite(ms) ? ms : undefined;
}
