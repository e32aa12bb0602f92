import type { ServerResponse } from 'node:http';
import { CancellationError } from '../core/cancellation-error.js';
import { Scope } from '../core/scope.js';
import type { ApplicationSignals } from '../shutdown/application-signals.js';
import { isGone } from './request-outcome.js';

/**
 * The scope of an HTTP request before it reaches the interceptor: while middleware registered after
 * `CancellationModule`'s and the route's guards run. Its signal aborts when the client hangs up or the
 * application shuts down (a time budget only starts at the interceptor, which knows the route's
 * `@RequestTimeout()`). It learns of both lazily: reading its reason looks at the response and the
 * application, and only a signal somebody asked for gets listeners. One small object per request.
 * @internal
 */
export class EarlyScope extends Scope {
  readonly remainingMs = undefined;

  constructor(
    private readonly response: ServerResponse,
    private readonly signals: ApplicationSignals,
  ) {
    super();
  }

  override get reason(): CancellationError | undefined {
    const reason = super.reason;
    if (reason !== undefined) return reason;
    if (isGone(this.response)) {
      this.abortWith(new CancellationError('client-disconnected'));
      return super.reason;
    }
    return this.signals.isShuttingDown ? this.signals.shutdownReason() : undefined;
  }

  protected override signalCreated(): void {
    const { response, signals } = this;
    const onShutdown = (): void => {
      if (super.reason === undefined) this.abortWith(signals.shutdownReason());
    };
    const onClose = (): void => {
      signals.shutdownSignal.removeEventListener('abort', onShutdown);
      if (!response.writableFinished && super.reason === undefined)
        this.abortWith(new CancellationError('client-disconnected'));
    };
    response.once('close', onClose);
    signals.shutdownSignal.addEventListener('abort', onShutdown, { once: true });
  }
}
