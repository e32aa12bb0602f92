import 'reflect-metadata';
import { HttpModule, HttpService } from '@nestjs/axios';
import { Controller, Get, Injectable, Module } from '@nestjs/common';
import type { OnModuleInit } from '@nestjs/common';
import { setTimeout as sleepWithSignal } from 'node:timers/promises';
import { firstValueFrom } from 'rxjs';
import { CancellationModule, CancellationService, RequestSignal, RequestTimeout } from 'nestjs-cancellation';
import type { CancellationError } from 'nestjs-cancellation';
import { ADAPTERS, createApp, startRequest, waitFor } from './utils/harness.js';
import type { TestApp } from './utils/harness.js';

const HEADER = 'x-request-timeout-ms';

/** What a downstream handler saw: its budget when it started and why it stopped. */
interface Seen {
  remainingAtStart: number | undefined;
  started: number;
  stopped?: { kind: string; after: number };
}

const seen: Seen[] = [];

@Controller()
class DownstreamController {
  constructor(private readonly cancellation: CancellationService) {}

  @Get('budget')
  @RequestTimeout(400)
  async budget(@RequestSignal() signal: AbortSignal) {
    const entry: Seen = { remainingAtStart: this.cancellation.remainingMs, started: performance.now() };
    seen.push(entry);
    try {
      await sleepWithSignal(5_000, undefined, { signal });
      return 'finished';
    } catch (err) {
      entry.stopped = {
        kind: (signal.reason as CancellationError).kind,
        after: performance.now() - entry.started,
      };
      throw err;
    }
  }

  @Get('late-failure')
  @RequestTimeout(100)
  lateFailure() {
    // Holds the event loop past the deadline, so the timer cannot fire before the failure arrives: what
    // `fetch` rejects with when the `AbortSignal.timeout(remainingMs)` it was given runs out first.
    const until = performance.now() + 150;
    while (performance.now() < until);
    throw new DOMException('The operation was aborted due to timeout', 'TimeoutError');
  }

  @Get('unbounded')
  unbounded() {
    return { remainingMs: this.cancellation.remainingMs ?? null };
  }
}

// #region propagation
@Injectable()
class CallerService implements OnModuleInit {
  constructor(
    private readonly cancellation: CancellationService,
    private readonly http: HttpService,
  ) {}

  onModuleInit() {
    this.cancellation.instrumentAxios(this.http.axiosRef);
  }

  viaFetch(url: string) {
    return this.cancellation.fetch(url).then((res) => res.text());
  }

  viaAxios(url: string) {
    return firstValueFrom(this.http.get<string>(url)).then((res) => res.data);
  }
}
// #endregion propagation

let downstreamUrl = '';

@Controller()
class CallerController {
  constructor(private readonly caller: CallerService) {}

  @Get('fetch')
  @RequestTimeout(300)
  viaFetch() {
    return this.caller.viaFetch(`${downstreamUrl}/budget`);
  }

  @Get('axios')
  @RequestTimeout(300)
  viaAxios() {
    return this.caller.viaAxios(`${downstreamUrl}/budget`);
  }

  @Get('fetch-unbounded')
  @RequestTimeout(false)
  viaFetchUnbounded() {
    return this.caller.viaFetch(`${downstreamUrl}/budget`);
  }
}

@Module({
  imports: [CancellationModule.forRoot({ deadlineHeader: HEADER })],
  controllers: [DownstreamController],
})
class DownstreamModule {}

@Module({
  imports: [CancellationModule.forRoot({ deadlineHeader: HEADER }), HttpModule],
  controllers: [CallerController],
  providers: [CallerService],
})
class CallerModule {}

describe.each(ADAPTERS)('deadline propagation on %s', (adapter) => {
  let downstream: TestApp;
  let caller: TestApp;

  beforeEach(async () => {
    seen.length = 0;
    downstream = await createApp(adapter, DownstreamModule);
    downstreamUrl = downstream.url;
    caller = await createApp(adapter, CallerModule);
  });

  afterEach(async () => {
    await caller.close();
    await downstream.close();
    expect(caller.logs.errors).toEqual([]);
    expect(downstream.logs.errors).toEqual([]);
  });

  describe('inbound header', () => {
    it.each([
      ['empty', ''],
      ['not a number', 'abc'],
      ['negative', '-5'],
      ['an exponent that overflows', '1e309'],
      ['fractional', '150.5'],
      ['huge', '99999999999999999999'],
      ['over the timer limit', '9999999999'],
      ['two headers', ['100000', '200000']],
    ])('%s never extends the server budget', async (_case, value) => {
      const started = performance.now();
      const res = await startRequest(downstream.port, '/budget', { headers: { [HEADER]: value } }).response();
      expect(res.status).toBe(504);
      expect(performance.now() - started).toBeLessThan(1_500);
      expect(seen).toHaveLength(1);
      expect(seen[0].remainingAtStart).toBeLessThanOrEqual(400);
      expect(seen[0].stopped?.kind).toBe('timeout');
      // Ignored, and said so at debug level only. (Nest's Logger is process-wide: the line lands in the capture
      // of the app created last.)
      const lines = [...downstream.logs.lines, ...caller.logs.lines];
      expect(lines.some((l) => l.level === 'debug' && l.message.includes(HEADER))).toBe(true);
    });

    it('a shorter value shortens the budget', async () => {
      const started = performance.now();
      const res = await startRequest(downstream.port, '/budget', { headers: { [HEADER]: '120' } }).response();
      expect(res.status).toBe(504);
      expect(seen[0].remainingAtStart).toBeLessThanOrEqual(120);
      expect(seen[0].stopped?.kind).toBe('timeout');
      expect(seen[0].stopped?.after).toBeLessThan(380);
      expect(performance.now() - started).toBeLessThan(1_000);
    });

    it('a longer value does not lengthen it', async () => {
      const res = await startRequest(downstream.port, '/budget', {
        headers: { [HEADER]: '60000' },
      }).response();
      expect(res.status).toBe(504);
      expect(seen[0].remainingAtStart).toBeLessThanOrEqual(400);
    });

    it('a spent budget (0) is answered at once and the handler never runs', async () => {
      const res = await startRequest(downstream.port, '/budget', { headers: { [HEADER]: '0' } }).response();
      expect(res.status).toBe(504);
      expect(seen).toHaveLength(0);
    });

    it('answers a downstream timeout that arrives once the budget is spent as the timeout it is, not as a 500', async () => {
      const res = await startRequest(downstream.port, '/late-failure').response();
      expect(res.status).toBe(504);
    });

    it('gives a route without a limit the caller’s budget', async () => {
      const res = await startRequest(downstream.port, '/unbounded', {
        headers: { [HEADER]: '5000' },
      }).response();
      expect((res.json as { remainingMs: number }).remainingMs).toBeGreaterThan(4_000);
      expect((res.json as { remainingMs: number }).remainingMs).toBeLessThanOrEqual(5_000);
      const none = await startRequest(downstream.port, '/unbounded').response();
      expect(none.json).toEqual({ remainingMs: null });
    });
  });

  describe.each(['fetch', 'axios'])('a chain of two apps through %s', (client) => {
    it("a hang-up of the caller's client cancels the downstream handler too", async () => {
      const hangingUp = startRequest(caller.port, `/${client === 'fetch' ? 'fetch-unbounded' : 'axios'}`);
      await waitFor(() => seen.length === 1, { message: 'the downstream handler to start' });
      hangingUp.abort();
      await waitFor(() => seen[0].stopped, { message: 'the downstream handler to stop' });
      expect(['client-disconnected', 'timeout']).toContain(seen[0].stopped?.kind);
      if (client === 'fetch') expect(seen[0].stopped?.kind).toBe('client-disconnected');
      // Stopped at once, not after its 5 s of work (generous: the machine is shared).
      expect(seen[0].stopped?.after).toBeLessThan(1_500);
    });

    it("the caller's 300 ms budget reaches downstream, which stops in time; the caller answers 504", async () => {
      const started = performance.now();
      const res = await startRequest(caller.port, `/${client}`).response();
      expect(res.status).toBe(504);
      expect(performance.now() - started).toBeLessThan(1_000);
      await waitFor(() => seen[0]?.stopped, { message: 'the downstream handler to stop' });
      // It got less than the caller's 300 ms and stopped because of it, not after its 5 s of work.
      expect(seen[0].remainingAtStart).toBeLessThan(300);
      expect(['timeout', 'client-disconnected']).toContain(seen[0].stopped?.kind);
      expect(seen[0].stopped?.after).toBeLessThan(1_500);
    });
  });
});
