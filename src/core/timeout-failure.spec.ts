import { HttpException, NotFoundException, GatewayTimeoutException } from '@nestjs/common';
import { setTimeout as delay } from 'node:timers/promises';
import { lastValueFrom, NEVER, timeout } from 'rxjs';
import { isTimeoutFailure } from './timeout-failure.js';

/** What `work` rejects with. */
async function rejectionOf(work: Promise<unknown>): Promise<unknown> {
  try {
    await work;
  } catch (err) {
    return err;
  }
  throw new Error('the work did not reject');
}

describe('isTimeoutFailure', () => {
  it('recognises what AbortSignal.timeout() makes signal-aware APIs reject with', async () => {
    // fetch and the AbortSignal.timeout() reason itself: a DOMException named TimeoutError.
    const signal = AbortSignal.timeout(1);
    await delay(5);
    expect(isTimeoutFailure(signal.reason)).toBe(true);
    // timers/promises: an AbortError whose cause is the TimeoutError.
    const err = await rejectionOf(delay(1_000, undefined, { signal: AbortSignal.timeout(1) }));
    expect((err as Error).name).toBe('AbortError');
    expect(isTimeoutFailure(err)).toBe(true);
  });

  it("recognises RxJS timeout()'s TimeoutError", async () => {
    const err = await rejectionOf(lastValueFrom(NEVER.pipe(timeout(1))));
    expect(isTimeoutFailure(err)).toBe(true);
  });

  it('recognises socket, undici, axios, PostgreSQL and gRPC timeouts, wrapped or not', () => {
    const timeouts: unknown[] = [
      Object.assign(new Error('connect ETIMEDOUT 10.0.0.1:443'), { code: 'ETIMEDOUT' }),
      new TypeError('fetch failed', {
        cause: Object.assign(new Error('Headers Timeout Error'), { code: 'UND_ERR_HEADERS_TIMEOUT' }),
      }),
      Object.assign(new Error('timeout of 200ms exceeded'), { code: 'ECONNABORTED' }),
      Object.assign(new Error('canceling statement due to statement timeout'), { code: '57014' }),
      Object.assign(new Error('4 DEADLINE_EXCEEDED: Deadline exceeded'), { code: 4 }),
      new Error('the inventory call failed', {
        cause: Object.assign(new Error('x'), { name: 'TimeoutError' }),
      }),
    ];
    for (const err of timeouts) expect(isTimeoutFailure(err)).toBe(true);
  });

  it('does not take an HttpException for one: it is the answer the application chose', () => {
    const cause = new DOMException('The operation timed out', 'TimeoutError');
    expect(isTimeoutFailure(new NotFoundException())).toBe(false);
    expect(isTimeoutFailure(new GatewayTimeoutException())).toBe(false);
    expect(isTimeoutFailure(new HttpException('Bad Gateway', 502, { cause }))).toBe(false);
  });

  it('does not take other failures, or aborts that are not timeouts, for one', async () => {
    const abort = await rejectionOf(delay(1_000, undefined, { signal: AbortSignal.abort() }));
    const failures: unknown[] = [
      new Error('boom'),
      abort,
      new DOMException('aborted', 'AbortError'),
      Object.assign(new Error('Request aborted'), { code: 'ECONNABORTED' }),
      Object.assign(new Error('canceling statement due to user request'), { code: '57014' }),
      Object.assign(new Error('14 UNAVAILABLE: No connection established'), { code: 14 }),
      Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }),
      undefined,
      null,
      'TimeoutError',
      { name: 'Error' },
    ];
    for (const err of failures) expect(isTimeoutFailure(err)).toBe(false);
  });

  it('returns false, promptly, for a cyclic cause chain', () => {
    const a = new Error('a');
    (a as { cause?: unknown }).cause = new Error('b', { cause: a });
    expect(isTimeoutFailure(a)).toBe(false);
  });
});
