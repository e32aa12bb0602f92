/**
 * `asyncContext: false` runs handlers without the AsyncLocalStorage store, so `checkpoint()` and
 * `queryWithSignal()` called without a signal cannot see the request's cancellation: a loop never stops, a
 * query is never cancelled. That mistake is said once per process, naming the call, instead of failing
 * silently. On both adapters, against real sockets.
 */
import 'reflect-metadata';
import { Controller, Get, Param } from '@nestjs/common';
import { CancellationModule, RequestSignal, checkpoint } from 'nestjs-cancellation';
import { globalState } from '../src/core/async-context.js';
import { queryWithSignal } from '../src/pg/index.js';
import { ADAPTERS, createApp, rootModule, startRequest, waitFor } from './utils/harness.js';
import type { AdapterName, TestApp } from './utils/harness.js';

/** How each loop ended, by the id the test gave its request. */
const loops = new Map<string, 'stopped' | 'ran to its end'>();

/** A pg pool that answers every query at once, and whose queries record the signal they were given. */
const pool = {
  idleCount: 0,
  connect: async () => ({
    processID: 1,
    query: async () => ({ rows: [{ one: 1 }], rowCount: 1, command: 'SELECT', fields: [] }),
    release: () => undefined,
  }),
};

@Controller('calls')
class CallsController {
  /** Loops for up to 400 ms with `checkpoint()` and no signal. */
  @Get('loop/:id')
  async loop(@Param('id') id: string): Promise<string> {
    const until = performance.now() + 400;
    try {
      while (performance.now() < until) await checkpoint();
    } catch (err) {
      loops.set(id, 'stopped');
      throw err;
    }
    loops.set(id, 'ran to its end');
    return 'done';
  }

  /** The same, given the request's signal: what the warning tells users to do. */
  @Get('loop-with-signal/:id')
  async loopWithSignal(@Param('id') id: string, @RequestSignal() signal: AbortSignal): Promise<string> {
    const until = performance.now() + 400;
    try {
      while (performance.now() < until) await checkpoint(signal);
    } catch (err) {
      loops.set(id, 'stopped');
      throw err;
    }
    loops.set(id, 'ran to its end');
    return 'done';
  }

  @Get('query')
  async query(): Promise<unknown[]> {
    return (await queryWithSignal(pool, 'SELECT 1')).rows;
  }
}

function warnings(t: TestApp): string[] {
  return t.logs.lines
    .filter((line) => line.level === 'warn' && line.context === 'Cancellation')
    .map((line) => line.message);
}

describe.each(ADAPTERS)('calls without a signal (%s)', (adapter: AdapterName) => {
  beforeEach(() => {
    globalState.warnedCalls = undefined;
  });

  describe('with asyncContext: false', () => {
    let t: TestApp;

    beforeAll(async () => {
      t = await createApp(
        adapter,
        rootModule({
          imports: [CancellationModule.forRoot({ asyncContext: false })],
          controllers: [CallsController],
        }),
      );
    });
    afterAll(async () => {
      await t.close();
      expect(globalState.contextlessApps ?? 0).toBe(0);
    });
    afterEach(() => {
      expect(t.logs.errors).toEqual([]);
      t.logs.clear();
    });

    it('checkpoint(): the loop cannot see the hang-up, and a warning says so once, with the fix', async () => {
      for (const id of [`${adapter}-loop-1`, `${adapter}-loop-2`]) {
        const client = startRequest(t.port, `/calls/loop/${id}`);
        await waitFor(() => t.responses.some((response) => response.req.url?.includes(id)));
        client.abort();
        await waitFor(() => loops.get(id), { message: 'the loop to end' });
        expect(loops.get(id)).toBe('ran to its end');
      }
      expect(warnings(t)).toHaveLength(1);
      expect(warnings(t)[0]).toMatch(/^checkpoint\(\) was called without a signal.*asyncContext: false/);
      expect(warnings(t)[0]).toContain('@RequestSignal()');
    });

    it('checkpoint(signal) with the request’s signal stops, and warns of nothing', async () => {
      const id = `${adapter}-loop-with-signal`;
      const client = startRequest(t.port, `/calls/loop-with-signal/${id}`);
      await waitFor(() => t.responses.some((response) => response.req.url?.includes(id)));
      client.abort();
      await waitFor(() => loops.get(id), { message: 'the loop to end' });
      expect(loops.get(id)).toBe('stopped');
      expect(warnings(t)).toEqual([]);
    });

    it('queryWithSignal() without a signal: a warning naming it, once', async () => {
      expect((await startRequest(t.port, '/calls/query').response()).json).toEqual([{ one: 1 }]);
      expect((await startRequest(t.port, '/calls/query').response()).status).toBe(200);
      expect(warnings(t)).toHaveLength(1);
      expect(warnings(t)[0]).toMatch(/^queryWithSignal\(\) was called without a signal/);
    });
  });

  describe('with the store (the default)', () => {
    it('says nothing: the calls find their request', async () => {
      const t = await createApp(
        adapter,
        rootModule({ imports: [CancellationModule.forRoot()], controllers: [CallsController] }),
      );
      try {
        const id = `${adapter}-loop-with-store`;
        const client = startRequest(t.port, `/calls/loop/${id}`);
        await waitFor(() => t.responses.some((response) => response.req.url?.includes(id)));
        client.abort();
        await waitFor(() => loops.get(id), { message: 'the loop to end' });
        expect(loops.get(id)).toBe('stopped');
        expect((await startRequest(t.port, '/calls/query').response()).status).toBe(200);
        expect(warnings(t)).toEqual([]);
      } finally {
        await t.close();
      }
    });
  });
});
