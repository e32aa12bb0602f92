import { Injectable } from '@nestjs/common';
import { setMaxListeners } from 'node:events';
import { CancellationError } from '../core/cancellation-error.js';

/**
 * The application's two shutdown phases as signals: draining (new work is refused) and shutdown (work in
 * flight must stop). Both abort with a `CancellationError` of kind `'shutdown'`, once.
 * @internal
 */
@Injectable()
export class ApplicationSignals {
  private readonly drainingController = new AbortController();
  private readonly shutdownController = new AbortController();

  constructor() {
    // Shared by design (a scheduler's sleeps, every message in flight): Node's eleven-listener warning would
    // be a false alarm here.
    setMaxListeners(0, this.drainingController.signal, this.shutdownController.signal);
  }

  /** Aborts when shutdown begins: stop taking new work. */
  get drainingSignal(): AbortSignal {
    return this.drainingController.signal;
  }

  /** Aborts when work in flight must stop. */
  get shutdownSignal(): AbortSignal {
    return this.shutdownController.signal;
  }

  /** Shutdown has begun: new work is refused. */
  get isDraining(): boolean {
    return this.drainingController.signal.aborted;
  }

  /** Work in flight must stop. */
  get isShuttingDown(): boolean {
    return this.shutdownController.signal.aborted;
  }

  /** The reason new work is refused with, once `isDraining`. */
  drainReason(): CancellationError {
    return this.drainingController.signal.reason as CancellationError;
  }

  /** The reason the shutdown signal aborted with (only meaningful once `isShuttingDown`). */
  shutdownReason(): CancellationError {
    return this.shutdownController.signal.reason as CancellationError;
  }

  /** Begins the drain; returns false when it had begun already. */
  beginDrain(signal: string | undefined): boolean {
    if (this.isDraining) return false;
    this.drainingController.abort(shutdownError(signal));
    return true;
  }

  /** Aborts the shutdown signal; returns false when it had aborted already. */
  beginShutdown(signal: string | undefined): boolean {
    if (this.isShuttingDown) return false;
    this.beginDrain(signal);
    this.shutdownController.abort(shutdownError(signal));
    return true;
  }
}

function shutdownError(signal: string | undefined): CancellationError {
  return new CancellationError(
    'shutdown',
    `The application is shutting down${signal === undefined ? '' : ` (${signal})`}`,
  );
}
