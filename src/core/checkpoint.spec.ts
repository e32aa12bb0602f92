import 'reflect-metadata';
import { jest } from '@jest/globals';
import { Logger } from '@nestjs/common';
import { globalState, scopeStorage } from './async-context.js';
import type { ScopeState } from './async-context.js';
import { CancellationError } from './cancellation-error.js';
import { checkpoint } from './checkpoint.js';

/** Long enough to fail a loop that never lets the event loop run, short enough to keep the suite quick. */
const GIVE_UP_AFTER_MS = 10_000;

/** A little synchronous work, as one iteration of a CPU-bound loop does. */
function busyWork(): number {
  let x = 0;
  for (let i = 0; i < 10_000; i++) x = (x + i * i) % 7919;
  return x;
}

/**
 * A CPU-bound loop that calls `await checkpoint(signal)` on every iteration, as the README tells users to.
 * It stops only when checkpoint rejects (or when `until` says so); it fails the test if the event loop
 * never got a chance to run.
 */
async function cpuLoop(
  signal: AbortSignal | undefined,
  until: () => boolean = () => false,
): Promise<{ iterations: number; error: unknown }> {
  const started = performance.now();
  let iterations = 0;
  try {
    while (!until()) {
      await checkpoint(signal);
      iterations++;
      busyWork();
      if (performance.now() - started > GIVE_UP_AFTER_MS) {
        throw new Error(`the loop ran ${iterations} iterations and never saw the event loop turn`);
      }
    }
  } catch (error) {
    return { iterations, error };
  }
  return { iterations, error: undefined };
}

/** A stand-in for the request scope: `checkpoint()` reads only its `reason`. */
function fakeScope(reason?: CancellationError): ScopeState {
  return { reason } as unknown as ScopeState;
}

describe('checkpoint(signal)', () => {
  it("rejects with the signal's reason when the signal aborted before the call", async () => {
    const reason = new CancellationError('shutdown');
    const controller = new AbortController();
    controller.abort(reason);
    await expect(checkpoint(controller.signal)).rejects.toBe(reason);
  });

  it("rejects with whatever the signal's reason is, not only CancellationErrors", async () => {
    const controller = new AbortController();
    controller.abort();
    await expect(checkpoint(controller.signal)).rejects.toMatchObject({ name: 'AbortError' });
    await expect(checkpoint(AbortSignal.abort('why'))).rejects.toBe('why');
  });

  it('resolves while the signal is not aborted', async () => {
    const controller = new AbortController();
    for (let i = 0; i < 100; i++) await expect(checkpoint(controller.signal)).resolves.toBeUndefined();
  });

  it('lets a CPU-bound loop notice an abort that only a timer can deliver, and stop', async () => {
    const controller = new AbortController();
    const reason = new CancellationError('client-disconnected');
    // The timer fires only if checkpoint() yields to the event loop: the loop itself never does.
    const timer = setTimeout(() => controller.abort(reason), 20);
    const { iterations, error } = await cpuLoop(controller.signal);
    clearTimeout(timer);
    expect(error).toBe(reason);
    expect(iterations).toBeGreaterThan(0);
  });

  it('lets I/O callbacks run in between: an abort from setImmediate is noticed too', async () => {
    const controller = new AbortController();
    const reason = new CancellationError('timeout');
    setImmediate(() => controller.abort(reason));
    const { error } = await cpuLoop(controller.signal);
    expect(error).toBe(reason);
  });

  it('ignores the request scope when a signal is given: the signal is what it watches', async () => {
    const controller = new AbortController();
    await scopeStorage.run(fakeScope(new CancellationError('client-disconnected')), async () => {
      await expect(checkpoint(controller.signal)).resolves.toBeUndefined();
    });
  });
});

describe('checkpoint() outside a request', () => {
  it('never rejects', async () => {
    for (let i = 0; i < 1000; i++) await expect(checkpoint()).resolves.toBeUndefined();
  });

  it('still yields, so that a timer can fire while a loop calls it', async () => {
    let fired = false;
    setTimeout(() => {
      fired = true;
    }, 10);
    const { error } = await cpuLoop(undefined, () => fired);
    expect(error).toBeUndefined();
    expect(fired).toBe(true);
  });
});

describe('checkpoint() inside a request', () => {
  it("rejects with the request's reason when the request was already cancelled", async () => {
    const reason = new CancellationError('shutdown');
    await scopeStorage.run(fakeScope(reason), async () => {
      await expect(checkpoint()).rejects.toBe(reason);
    });
  });

  it('resolves while the request is not cancelled', async () => {
    await scopeStorage.run(fakeScope(), async () => {
      for (let i = 0; i < 100; i++) await expect(checkpoint()).resolves.toBeUndefined();
    });
  });

  it('lets a CPU-bound loop notice that a timer cancelled the request, and stop', async () => {
    const scope = { reason: undefined as CancellationError | undefined };
    const reason = new CancellationError('client-disconnected');
    const timer = setTimeout(() => {
      scope.reason = reason;
    }, 20);
    const { iterations, error } = await scopeStorage.run(scope as unknown as ScopeState, () =>
      cpuLoop(undefined),
    );
    clearTimeout(timer);
    expect(error).toBe(reason);
    expect(iterations).toBeGreaterThan(0);
  });

  it('reads the scope of its own request when two requests loop at once', async () => {
    const cancelled = { reason: undefined as CancellationError | undefined };
    const running = fakeScope();
    const reason = new CancellationError('timeout');
    let stopRunning = false;
    setTimeout(() => {
      cancelled.reason = reason;
    }, 10);
    const first = scopeStorage.run(cancelled as unknown as ScopeState, () => cpuLoop(undefined));
    const second = scopeStorage.run(running, () => cpuLoop(undefined, () => stopRunning));
    const firstResult = await first;
    stopRunning = true;
    const secondResult = await second;
    expect(firstResult.error).toBe(reason);
    expect(secondResult.error).toBeUndefined();
  });
});

describe('checkpoint() while an application runs with asyncContext: false', () => {
  let warn: jest.SpiedFunction<Logger['warn']>;

  beforeEach(() => {
    globalState.contextlessApps = 1;
    globalState.warnedCalls = undefined;
    warn = jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
  });
  afterEach(() => {
    globalState.contextlessApps = 0;
    globalState.warnedCalls = undefined;
    warn.mockRestore();
  });

  it('warns once, naming the call and the fix, when called without a signal outside any scope', async () => {
    await checkpoint();
    await checkpoint();
    expect(warn).toHaveBeenCalledTimes(1);
    expect(warn.mock.calls[0][0]).toMatch(/^checkpoint\(\) was called without a signal.*@RequestSignal\(\)/);
  });

  it('says nothing when given a signal, or inside a scope', async () => {
    await checkpoint(new AbortController().signal);
    await scopeStorage.run(fakeScope(), () => checkpoint());
    expect(warn).not.toHaveBeenCalled();
  });

  it('says nothing while no application runs with asyncContext: false', async () => {
    globalState.contextlessApps = 0;
    await checkpoint();
    expect(warn).not.toHaveBeenCalled();
  });
});
