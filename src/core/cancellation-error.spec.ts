import 'reflect-metadata';
import { EventEmitter, once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { CancellationError, findCancellationError, isCancellationError } from './cancellation-error.js';
import type { CancellationKind } from './cancellation-error.js';

/** What a signal-aware API rejects with when `reason` aborts the signal it was given. */
async function rejectionOf(
  work: (signal: AbortSignal) => Promise<unknown>,
  reason: unknown,
): Promise<unknown> {
  const controller = new AbortController();
  const pending = work(controller.signal);
  controller.abort(reason);
  try {
    await pending;
  } catch (err) {
    return err;
  }
  throw new Error('the work did not reject when its signal aborted');
}

/** `cause` chains as other libraries build them: each level wraps the one below. */
function wrap(err: unknown, levels: number): unknown {
  let current = err;
  for (let level = 0; level < levels; level++) current = new Error(`wrapper ${level}`, { cause: current });
  return current;
}

describe('CancellationError', () => {
  it.each<[CancellationKind, RegExp]>([
    ['client-disconnected', /client closed the connection/],
    ['shutdown', /shutting down/],
    ['timeout', /ran out of time/],
    ['manual', /cancelled/],
  ])('kind %p has a default message that says what happened', (kind, message) => {
    const err = new CancellationError(kind);
    expect(err.kind).toBe(kind);
    expect(err.message).toMatch(message);
  });

  it('is an Error named CancellationError, with a stack', () => {
    const err = new CancellationError('timeout');
    expect(err).toBeInstanceOf(Error);
    expect(err).toBeInstanceOf(CancellationError);
    expect(err.name).toBe('CancellationError');
    expect(String(err)).toMatch(/^CancellationError: /);
    expect(err.stack).toContain('CancellationError');
  });

  it('keeps a message and a cause it is given', () => {
    const cause = new Error('socket hang up');
    const err = new CancellationError('client-disconnected', 'gone at byte 12', { cause });
    expect(err.message).toBe('gone at byte 12');
    expect(err.cause).toBe(cause);
    expect(err.kind).toBe('client-disconnected');
  });

  it('has no enumerable brand, so that it logs and serialises like an ordinary error', () => {
    const err = new CancellationError('shutdown');
    expect(Object.getOwnPropertySymbols(err)).toEqual([]);
    expect(JSON.parse(JSON.stringify(err))).toEqual({ kind: 'shutdown' });
  });
});

describe('isCancellationError', () => {
  it('recognises a CancellationError of every kind', () => {
    for (const kind of ['client-disconnected', 'shutdown', 'timeout', 'manual'] as const) {
      expect(isCancellationError(new CancellationError(kind))).toBe(true);
    }
  });

  it('recognises the AbortError of timers/promises, whose cause is the CancellationError', async () => {
    const reason = new CancellationError('shutdown');
    const err = await rejectionOf((signal) => sleep(60_000, undefined, { signal }), reason);
    expect(err).toMatchObject({ name: 'AbortError' });
    expect((err as Error).cause).toBe(reason);
    expect(isCancellationError(err)).toBe(true);
    expect(findCancellationError(err)).toBe(reason);
  });

  it('recognises the AbortError of events.once, whose cause is the CancellationError', async () => {
    const reason = new CancellationError('client-disconnected');
    const err = await rejectionOf((signal) => once(new EventEmitter(), 'never', { signal }), reason);
    expect(err).toMatchObject({ name: 'AbortError' });
    expect(isCancellationError(err)).toBe(true);
    expect(findCancellationError(err)).toBe(reason);
  });

  it('recognises what fetch rejects with when its signal aborts (the reason itself)', async () => {
    const reason = new CancellationError('timeout');
    const controller = new AbortController();
    controller.abort(reason);
    // Already aborted: fetch rejects before it opens a connection.
    const err = await fetch('http://127.0.0.1:9/', { signal: controller.signal }).catch((e: unknown) => e);
    expect(isCancellationError(err)).toBe(true);
    expect(findCancellationError(err)).toBe(reason);
  });

  it('does not recognise the AbortError of a signal aborted without a CancellationError', async () => {
    const err = await rejectionOf((signal) => sleep(60_000, undefined, { signal }), undefined);
    expect(err).toMatchObject({ name: 'AbortError' });
    expect(isCancellationError(err)).toBe(false);
  });

  it('finds a CancellationError a few wrappers deep in a cause chain', () => {
    const reason = new CancellationError('timeout');
    for (const levels of [1, 2, 5]) {
      const err = wrap(reason, levels);
      expect(isCancellationError(err)).toBe(true);
      expect(findCancellationError(err)).toBe(reason);
    }
  });

  it('returns the outermost CancellationError of a chain', () => {
    const inner = new CancellationError('client-disconnected');
    const outer = new CancellationError('shutdown', undefined, { cause: inner });
    expect(findCancellationError(wrap(outer, 1))).toBe(outer);
  });

  it('does not recognise unrelated errors and values', () => {
    const unrelated: unknown[] = [
      new Error('boom'),
      new TypeError('bad'),
      wrap(new Error('root'), 4),
      new DOMException('aborted', 'AbortError'),
      Object.assign(new Error('look-alike'), { name: 'CancellationError', kind: 'shutdown' }),
      { name: 'CancellationError', kind: 'shutdown', message: 'plain object' },
      { cause: { cause: 'not an error' } },
      Object.create(null),
      null,
      undefined,
      'CancellationError',
      '',
      0,
      42,
      false,
      Symbol('x'),
      () => undefined,
    ];
    for (const value of unrelated) {
      expect(isCancellationError(value)).toBe(false);
      expect(findCancellationError(value)).toBeUndefined();
    }
  });

  it('returns false, promptly, for a cyclic cause chain', () => {
    const a = new Error('a');
    const b = new Error('b', { cause: a });
    (a as { cause?: unknown }).cause = b;
    expect(isCancellationError(a)).toBe(false);

    const self = new Error('self');
    (self as { cause?: unknown }).cause = self;
    expect(isCancellationError(self)).toBe(false);
  });

  it('recognises an error made by another copy of the package, by the registered brand on its prototype', () => {
    // What the CommonJS copy's class looks like from the ESM copy: a different class with the same brand.
    class OtherCopyCancellationError extends Error {
      readonly kind = 'shutdown';
    }
    Object.defineProperty(
      OtherCopyCancellationError.prototype,
      Symbol.for('nestjs-cancellation.CancellationError'),
      {
        value: true,
      },
    );
    const foreign = new OtherCopyCancellationError('from the other copy');
    expect(foreign).not.toBeInstanceOf(CancellationError);
    expect(isCancellationError(foreign)).toBe(true);
    expect(isCancellationError(new Error('wrapped', { cause: foreign }))).toBe(true);
    expect(findCancellationError(wrap(foreign, 2))).toBe(foreign);
  });

  it('requires the brand to be exactly true', () => {
    const brand = Symbol.for('nestjs-cancellation.CancellationError');
    expect(isCancellationError(Object.assign(new Error('x'), { [brand]: 'yes' }))).toBe(false);
    expect(isCancellationError(Object.assign(new Error('x'), { [brand]: false }))).toBe(false);
    expect(isCancellationError(Object.assign(new Error('x'), { [brand]: true }))).toBe(true);
  });
});
