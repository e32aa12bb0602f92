/** The signals `enableShutdownHooks()` listens to by default (Nest's `ShutdownSignal`). */
const SIGNALS: readonly NodeJS.Signals[] = [
  'SIGHUP',
  'SIGINT',
  'SIGQUIT',
  'SIGILL',
  'SIGTRAP',
  'SIGABRT',
  'SIGBUS',
  'SIGFPE',
  'SIGSEGV',
  'SIGUSR2',
  'SIGTERM',
];

/**
 * Which process signal started the shutdown. The drain begins in `onModuleDestroy`, which Nest calls without
 * the signal (only `beforeApplicationShutdown` and `onApplicationShutdown` get it); the signal is still worth
 * naming in the reason every refused and aborted request carries. It listens only to signals somebody
 * (`enableShutdownHooks()`) already handles, so it never changes what a signal does to the process, and it
 * stops listening once the application has shut down, before Nest raises the signal again to exit.
 * @internal
 */
export class SignalWitness {
  /** The last signal received while watching. */
  signal: NodeJS.Signals | undefined = undefined;
  private readonly watched: NodeJS.Signals[] = [];
  private readonly record = (signal: NodeJS.Signals): void => {
    this.signal = signal;
  };

  /** Starts watching the signals that have a listener. */
  watch(): void {
    for (const signal of SIGNALS) {
      if (process.listenerCount(signal) === 0 || this.watched.includes(signal)) continue;
      process.prependListener(signal, this.record);
      this.watched.push(signal);
    }
  }

  /** Stops watching. */
  stop(): void {
    for (const signal of this.watched.splice(0)) process.removeListener(signal, this.record);
  }
}
