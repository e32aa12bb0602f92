import { Logger } from '@nestjs/common';
import { globalState } from './async-context.js';

/**
 * `call` was made without a signal outside any scope, and falls back on the current request's signal, which
 * it does not have. Inside a request of an application that runs with `asyncContext: false` that is a silent
 * mistake (the call never sees the request's cancellation), so it is said once per process, with the fix.
 * Costs a number's comparison otherwise.
 * @internal
 */
export function contextlessCall(call: string): void {
  if (!globalState.contextlessApps) return;
  const warned = (globalState.warnedCalls ??= new Set<string>());
  if (warned.has(call)) return;
  warned.add(call);
  new Logger('Cancellation').warn(
    `${call} was called without a signal where no request's scope is current: with asyncContext: false a ` +
      `handler runs without one, so ${call} cannot see its request's cancellation. Pass the signal ` +
      `(@RequestSignal() in the handler; CancellationService.shutdownSignal outside a request).`,
  );
}
