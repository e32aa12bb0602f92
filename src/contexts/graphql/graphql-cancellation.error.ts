import { IntrinsicException } from '@nestjs/common';
import { STATUS_CODES } from 'node:http';
import type { CancellationError, CancellationKind } from '../../core/cancellation-error.js';

/**
 * What a resolver of a cancelled GraphQL request fails with. GraphQL lists it in the response's `errors`, with
 * `extensions.code` naming the HTTP status a REST route would have answered (`SERVICE_UNAVAILABLE` for
 * shutdown, e.g. `GATEWAY_TIMEOUT` for a timeout) and `extensions.kind` the `CancellationKind`. Its `cause` is
 * the `CancellationError`, so `isCancellationError()` recognises it (in a `formatError`, say).
 *
 * An `IntrinsicException`, because Nest's exception handler logs every other error a resolver throws at error
 * level, and a cancellation is not a failure of the server.
 * @internal
 */
export class GraphQLCancellationError extends IntrinsicException {
  /** Why the request was cancelled. */
  readonly kind: CancellationKind;
  /** Copied into the GraphQL error's `extensions` (graphql-js takes them from the error it wraps). */
  readonly extensions: { readonly code: string; readonly kind: CancellationKind };

  constructor(reason: CancellationError, timeoutStatus: number) {
    super(reason.message, { cause: reason });
    this.kind = reason.kind;
    this.extensions = { code: codeOf(reason.kind, timeoutStatus), kind: reason.kind };
  }

  override get name(): string {
    return 'GraphQLCancellationError';
  }
}

/** The HTTP status a REST route answers for a cancellation of this kind, as a GraphQL error code. */
function codeOf(kind: CancellationKind, timeoutStatus: number): string {
  switch (kind) {
    case 'timeout':
      return (STATUS_CODES[timeoutStatus] ?? 'Timeout').toUpperCase().replace(/[^A-Z0-9]+/g, '_');
    case 'client-disconnected':
      return 'CLIENT_CLOSED_REQUEST';
    case 'shutdown':
    case 'manual':
      return 'SERVICE_UNAVAILABLE';
  }
}
