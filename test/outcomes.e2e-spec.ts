import 'reflect-metadata';
import { BadRequestException, Controller, Get, Inject, Query } from '@nestjs/common';
import { setTimeout as delay } from 'node:timers/promises';
import { interval, map, take, tap, finalize } from 'rxjs';
import type { Observable } from 'rxjs';
import {
  CancellationError,
  CancellationModule,
  CancellationService,
  RequestSignal,
  RequestTimeout,
  isCancellationError,
} from 'nestjs-cancellation';
import {
  ADAPTERS,
  createApp,
  request,
  rootModule,
  sleep,
  startRequest,
  startSlowServer,
  waitFor,
} from './utils/harness.js';
import type { AdapterName, TestApp } from './utils/harness.js';

interface Probe {
  started: boolean;
  ticks: number;
  abortReason: unknown;
  error: unknown;
  tornDown: boolean;
  finished: boolean;
}

const probes = new Map<string, Probe>();
function probe(tag: string): Probe {
  let found = probes.get(tag);
  if (found === undefined) {
    found = {
      started: false,
      ticks: 0,
      abortReason: undefined,
      error: undefined,
      tornDown: false,
      finished: false,
    };
    probes.set(tag, found);
  }
  return found;
}

function watch(tag: string, signal: AbortSignal): Probe {
  const record = probe(tag);
  record.started = true;
  signal.addEventListener('abort', () => (record.abortReason = signal.reason), { once: true });
  return record;
}

/** Runs `work`, records what it threw, and rethrows it untouched. */
async function recorded<T>(record: Probe, work: () => Promise<T>): Promise<T> {
  try {
    const value = await work();
    record.finished = true;
    return value;
  } catch (err) {
    record.error = err;
    throw err;
  }
}

/** The slow downstream service the `fetch` handler calls. */
let slowUrl = '';

/** Handlers that let the abort reason (or an error caused by it) propagate. */
@Controller('rethrow')
class RethrowController {
  constructor(@Inject(CancellationService) private readonly cancellation: CancellationService) {}

  @Get('fetch')
  fetch(@Query('tag') tag: string, @RequestSignal() signal: AbortSignal): Promise<string> {
    const record = watch(tag, signal);
    return recorded(record, async () => (await fetch(slowUrl, { signal })).text());
  }

  @Get('timers')
  timers(@Query('tag') tag: string, @RequestSignal() signal: AbortSignal): Promise<string> {
    const record = watch(tag, signal);
    return recorded(record, () => delay(10_000, 'late', { signal }));
  }

  @Get('loop')
  loop(@Query('tag') tag: string): Promise<string> {
    const record = watch(tag, this.cancellation.signal);
    return recorded(record, async () => {
      for (let i = 0; i < 1000; i++) {
        record.ticks++;
        await sleep(10);
        this.cancellation.throwIfCancelled();
      }
      return 'done';
    });
  }
}

@Controller('plain')
class PlainController {
  @Get('ok')
  ok(): { hello: string; list: number[] } {
    return { hello: 'world', list: [1, 2, 3] };
  }

  @Get('ok-async')
  async okAsync(@RequestSignal() signal: AbortSignal): Promise<{ aborted: boolean }> {
    await sleep(30);
    return { aborted: signal.aborted };
  }

  @Get('ok-observable')
  okObservable(): Observable<{ i: number }> {
    return interval(10).pipe(
      take(3),
      map((i) => ({ i })),
    );
  }

  @Get('boom')
  async boom(): Promise<never> {
    await sleep(5);
    throw new Error('unrelated failure in the handler');
  }

  @Get('bad-request')
  badRequest(): never {
    throw new BadRequestException('no such thing');
  }

  /** An abort that is the handler's own business (its own deadline), not a cancellation of the request. */
  @Get('own-abort')
  async ownAbort(): Promise<never> {
    await delay(10_000, undefined, { signal: AbortSignal.timeout(20) });
    throw new Error('unreachable');
  }

  /** A deadline of the handler's own (e.g. a downstream call's), reported as a cancellation. */
  @Get('own-timeout')
  async ownTimeout(): Promise<never> {
    await sleep(5);
    throw new CancellationError('timeout', 'The inventory service did not answer in time');
  }

  /** The same, as the AbortError that `timers/promises` rejects with, the CancellationError as its cause. */
  @Get('own-timeout-cause')
  async ownTimeoutCause(): Promise<never> {
    const controller = new AbortController();
    setTimeout(() => controller.abort(new CancellationError('timeout')), 5);
    await delay(10_000, undefined, { signal: controller.signal });
    throw new Error('unreachable');
  }

  /** An endless Observable: only the teardown stops it. */
  @Get('stream')
  stream(@Query('tag') tag: string, @RequestSignal() signal: AbortSignal): Observable<number> {
    const record = watch(tag, signal);
    return interval(20).pipe(
      tap(() => record.ticks++),
      finalize(() => (record.tornDown = true)),
    );
  }
}

/**
 * Work shared between requests (request coalescing, a cache being filled): `leader` starts it with its own
 * signal, `follower` awaits the same promise.
 */
let sharedWork: Promise<string> | undefined;

@Controller('shared')
class SharedController {
  @Get('leader')
  leader(@Query('tag') tag: string, @RequestSignal() signal: AbortSignal): Promise<string> {
    watch(tag, signal);
    sharedWork = delay(5000, 'shared result', { signal });
    return sharedWork;
  }

  @Get('follower')
  follower(@Query('tag') tag: string, @RequestSignal() signal: AbortSignal): Promise<string> {
    const record = watch(tag, signal);
    return recorded(record, () => sharedWork as Promise<string>);
  }
}

@Controller('timeouts')
class TimeoutController {
  @Get('short')
  @RequestTimeout(200)
  short(@Query('tag') tag: string, @RequestSignal() signal: AbortSignal): Promise<string> {
    return recorded(watch(tag, signal), () => delay(5000, 'late', { signal }));
  }

  /** Ignores its signal: the client still gets its 504 on time, though the work goes on. */
  @Get('ignored')
  @RequestTimeout(100)
  async ignored(@Query('tag') tag: string, @RequestSignal() signal: AbortSignal): Promise<string> {
    const record = watch(tag, signal);
    await sleep(400);
    record.finished = true;
    return 'late';
  }

  /** Uses the module's `timeoutMs`. */
  @Get('default')
  byDefault(@Query('tag') tag: string, @RequestSignal() signal: AbortSignal): Promise<string> {
    return recorded(watch(tag, signal), () => delay(5000, 'late', { signal }));
  }

  @Get('off')
  @RequestTimeout(false)
  async off(@Query('tag') tag: string, @RequestSignal() signal: AbortSignal): Promise<string> {
    watch(tag, signal);
    await sleep(350);
    return 'in time';
  }
}

@Controller('budget')
@RequestTimeout(100)
class BudgetController {
  @Get('inherited')
  inherited(@Query('tag') tag: string, @RequestSignal() signal: AbortSignal): Promise<string> {
    return recorded(watch(tag, signal), () => delay(5000, 'late', { signal }));
  }

  @Get('own')
  @RequestTimeout(500)
  async own(@Query('tag') tag: string, @RequestSignal() signal: AbortSignal): Promise<string> {
    watch(tag, signal);
    await sleep(350);
    return 'in time';
  }

  @Get('off')
  @RequestTimeout(false)
  async off(@Query('tag') tag: string, @RequestSignal() signal: AbortSignal): Promise<string> {
    watch(tag, signal);
    await sleep(350);
    return 'in time';
  }
}

function kindOf(reason: unknown): string | undefined {
  return reason instanceof CancellationError ? reason.kind : undefined;
}

function noErrorLines(t: TestApp): void {
  expect(t.logs.errors).toEqual([]);
  expect(t.logs.lines.filter((line) => line.text.includes('EmptyError'))).toEqual([]);
}

/** The three ways a handler rethrows a cancellation. */
const RETHROWS = ['fetch', 'timers', 'loop'] as const;

/** Checks that what `rethrow/<kind>` recorded is, or was caused by, the cancellation of `kind`. */
function expectRethrown(route: (typeof RETHROWS)[number], record: Probe, kind: string): void {
  expect(kindOf(record.abortReason)).toBe(kind);
  expect(isCancellationError(record.error)).toBe(true);
  if (route === 'timers') {
    // timers/promises rejects with an AbortError whose cause is the reason.
    expect((record.error as Error).name).toBe('AbortError');
    expect((record.error as Error).cause).toBe(record.abortReason);
  }
  if (route === 'loop') expect(record.error).toBe(record.abortReason);
  expect(record.finished).toBe(false);
}

describe.each(ADAPTERS)('outcomes (%s)', (adapter: AdapterName) => {
  let seq = 0;
  const tag = () => `${adapter}-${++seq}`;
  let slow: Awaited<ReturnType<typeof startSlowServer>>;

  beforeAll(async () => {
    slow = await startSlowServer();
    slowUrl = slow.url;
  });

  afterAll(async () => {
    await slow.close();
  });

  describe('with a running app', () => {
    let t: TestApp;

    beforeAll(async () => {
      t = await createApp(
        adapter,
        rootModule({
          imports: [CancellationModule.forRoot()],
          controllers: [RethrowController, PlainController, SharedController],
        }),
      );
    });

    afterEach(() => {
      noErrorLines(t);
      t.logs.clear();
    });

    afterAll(async () => {
      await t.close();
      noErrorLines(t);
    });

    it.each(RETHROWS)(
      'sends nothing and logs no error when a %s handler rethrows a disconnect',
      async (route) => {
        const id = tag();
        const client = startRequest(t.port, `/rethrow/${route}?tag=${id}`);
        const record = probe(id);
        await waitFor(() => record.started);
        if (route === 'fetch') await waitFor(() => slow.received() > 0);
        await sleep(30);
        client.abort();

        await waitFor(() => record.error !== undefined, { message: 'the handler to rethrow' });
        expectRethrown(route, record, 'client-disconnected');
        expect('error' in (await client.settled())).toBe(true);
        const res = await waitFor(() => t.responses.find((r) => r.req.url?.includes(id)));
        await waitFor(() => res.writableEnded || res.statusCode !== 200, {
          message: 'the exception filter to run',
        });
        expect(res.statusCode).toBe(499);
        await waitFor(() =>
          t.logs
            .inContext('Cancellation')
            .some(
              (line) =>
                line.message.startsWith(`GET /rethrow/${route} [`) && line.message.includes('] cancelled'),
            ),
        );
      },
    );

    it('leaves a handler that returns normally untouched', async () => {
      const ok = await request(t.port, '/plain/ok');
      expect(ok.status).toBe(200);
      expect(ok.json).toEqual({ hello: 'world', list: [1, 2, 3] });
      const okAsync = await request(t.port, '/plain/ok-async');
      expect(okAsync.status).toBe(200);
      expect(okAsync.json).toEqual({ aborted: false });
      const okObservable = await request(t.port, '/plain/ok-observable');
      expect(okObservable.status).toBe(200);
      expect(okObservable.json).toEqual({ i: 2 });
      expect(t.logs.inContext('Cancellation')).toEqual([]);
    });

    it('still answers 500 for an unrelated error, and keeps HTTP exceptions and foreign aborts as they are', async () => {
      const boom = await request(t.port, '/plain/boom');
      expect(boom.status).toBe(500);
      const bad = await request(t.port, '/plain/bad-request');
      expect(bad.status).toBe(400);
      expect(bad.json).toMatchObject({ message: 'no such thing' });
      // An AbortError that no cancellation of the request caused is a failure of the handler.
      const ownAbort = await request(t.port, '/plain/own-abort');
      expect(ownAbort.status).toBe(500);

      const errors = t.logs.errors.map((line) => line.text);
      expect(errors).toHaveLength(2);
      expect(errors[0]).toContain('unrelated failure in the handler');
      expect(errors[1]).toContain('AbortError');
      expect(t.logs.inContext('Cancellation')).toEqual([]);
      t.logs.clear();
    });

    it('maps a CancellationError the handler throws itself, directly or as a cause, to its outcome', async () => {
      for (const path of ['/plain/own-timeout', '/plain/own-timeout-cause']) {
        const response = await request(t.port, path);
        expect(response.status).toBe(504);
        expect(response.json).toMatchObject({ statusCode: 504 });
      }
    });

    // Work shared between requests: the follower's client is still connected, so it must not be answered
    // 499 "The client closed the connection", nor its signal abort with kind 'client-disconnected'.
    it("answers a connected client with 503, not 499, when it rethrows another request's disconnect", async () => {
      const leaderId = tag();
      const followerId = tag();
      const leader = startRequest(t.port, `/shared/leader?tag=${leaderId}`);
      await waitFor(() => probe(leaderId).started);
      const follower = startRequest(t.port, `/shared/follower?tag=${followerId}`);
      await waitFor(() => probe(followerId).started);
      leader.abort();

      const response = await follower.response();
      expect(response.status).toBe(503);
      const record = probe(followerId);
      expect(isCancellationError(record.error)).toBe(true);
      expect(kindOf(record.abortReason)).not.toBe('client-disconnected');
      const lines = t.logs.inContext('Cancellation').map((line) => line.message);
      expect(
        lines.filter((line) =>
          /^GET \/shared\/follower \[[\w-]+\] cancelled \(client-disconnected\)/.test(line),
        ),
      ).toEqual([]);
    });

    it('tears down an Observable handler and aborts its signal when the client hangs up', async () => {
      const id = tag();
      const client = startRequest(t.port, `/plain/stream?tag=${id}`);
      const record = probe(id);
      await waitFor(() => record.ticks >= 3, { message: 'the stream to tick' });
      client.abort();

      await waitFor(() => record.tornDown, { message: 'the stream to be torn down' });
      expect(kindOf(record.abortReason)).toBe('client-disconnected');
      const ticks = record.ticks;
      await sleep(120);
      expect(record.ticks).toBe(ticks);
    });
  });

  it('answers 503 to every handler that rethrows a shutdown, never 500', async () => {
    const t = await createApp(
      adapter,
      rootModule({
        imports: [CancellationModule.forRoot()],
        controllers: [RethrowController, PlainController],
      }),
    );
    try {
      const received = slow.received();
      const ids = RETHROWS.map(() => tag());
      const clients = RETHROWS.map((route, i) => startRequest(t.port, `/rethrow/${route}?tag=${ids[i]}`));
      const streamId = tag();
      const stream = startRequest(t.port, `/plain/stream?tag=${streamId}`);
      await waitFor(() => ids.every((id) => probe(id).started) && probe(streamId).ticks > 0);
      await waitFor(() => slow.received() > received, { message: 'the fetch to reach the slow server' });

      expect(await t.close()).toBeLessThan(1500);
      for (const [i, route] of RETHROWS.entries()) {
        const response = await clients[i].response();
        expect(response.status).toBe(503);
        expect(response.headers['retry-after']).toBe('1');
        await waitFor(() => probe(ids[i]).error !== undefined);
        expectRethrown(route, probe(ids[i]), 'shutdown');
      }
      expect((await stream.response()).status).toBe(503);
      expect(probe(streamId).tornDown).toBe(true);
      expect(kindOf(probe(streamId).abortReason)).toBe('shutdown');
    } finally {
      await t.close();
    }
    noErrorLines(t);
  });

  describe('time budgets', () => {
    let t: TestApp;

    beforeAll(async () => {
      t = await createApp(
        adapter,
        rootModule({
          imports: [CancellationModule.forRoot({ timeoutMs: 250 })],
          controllers: [TimeoutController, BudgetController],
        }),
      );
    });

    afterEach(() => {
      noErrorLines(t);
      t.logs.clear();
    });

    afterAll(async () => {
      await t.close();
      noErrorLines(t);
    });

    /** Requests `path`, and returns the response, the time it took and what the handler recorded. */
    async function timed(path: string) {
      const id = tag();
      const started = performance.now();
      const response = await request(t.port, `${path}?tag=${id}`);
      return { response, ms: performance.now() - started, record: probe(id) };
    }

    async function expectTimedOut(path: string, budgetMs: number): Promise<void> {
      const { response, ms, record } = await timed(path);
      expect(response.status).toBe(504);
      expect(response.json).toMatchObject({
        statusCode: 504,
        message: expect.stringContaining(`(${budgetMs} ms)`),
      });
      expect(ms).toBeGreaterThanOrEqual(budgetMs - 20);
      expect(kindOf(record.abortReason)).toBe('timeout');
      await waitFor(() => record.error !== undefined);
      expect(isCancellationError(record.error)).toBe(true);
      expect(record.finished).toBe(false);
    }

    async function expectInTime(path: string): Promise<void> {
      const { response, record } = await timed(path);
      expect(response.status).toBe(200);
      expect(response.body).toBe('in time');
      expect(record.abortReason).toBeUndefined();
    }

    it('answers 504 with kind timeout when @RequestTimeout(200) runs out', () =>
      expectTimedOut('/timeouts/short', 200));

    it('answers 504 on time even when the handler ignores its signal', async () => {
      const { response, ms, record } = await timed('/timeouts/ignored');
      expect(response.status).toBe(504);
      expect(ms).toBeLessThan(350);
      expect(kindOf(record.abortReason)).toBe('timeout');
      expect(record.finished).toBe(false);
    });

    it("applies the module's timeoutMs to a route without a budget", () =>
      expectTimedOut('/timeouts/default', 250));

    it("lets @RequestTimeout(false) override the module's timeoutMs", () => expectInTime('/timeouts/off'));

    it("applies a controller's budget to its routes", () => expectTimedOut('/budget/inherited', 100));

    it("lets the handler's budget win over its controller's", async () => {
      await expectInTime('/budget/own');
      await expectInTime('/budget/off');
      expect(t.logs.inContext('Cancellation').filter((line) => line.message.includes('/budget/o'))).toEqual(
        [],
      );
    });

    it('logs the timeout at verbose level with method, route, kind and elapsed ms', async () => {
      await expectTimedOut('/timeouts/short', 200);
      const line = t.logs.inContext('Cancellation').at(-1);
      expect(line?.level).toBe('verbose');
      expect(line?.message).toMatch(/^GET \/timeouts\/short \[[\w-]+\] cancelled \(timeout\) after \d+ ms$/);
    });
  });
});
