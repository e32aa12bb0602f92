import 'reflect-metadata';
import { Controller, Get, Inject, Injectable, Param } from '@nestjs/common';
import { EventEmitter } from 'node:events';
import { Readable } from 'node:stream';
import {
  CancellationError,
  CancellationModule,
  CancellationService,
  RequestSignal,
} from 'nestjs-cancellation';
import { ADAPTERS, createApp, rootModule, sleep, startRequest, waitFor } from './utils/harness.js';
import type { TestApp } from './utils/harness.js';

/** What one request saw: the signal `CancellationService` gave at each point of its async chain. */
interface Trace {
  param: AbortSignal;
  seen: Map<string, AbortSignal>;
  /** `isCancelled` / `throwIfCancelled()` as seen after the gate, deep in the chain. */
  lateIsCancelled?: boolean;
  lateThrown?: unknown;
  abortEvents: number;
  phase: 'before-gate' | 'at-gate' | 'done';
}

const traces = new Map<string, Trace>();

/** Held by the test: every request waits on it mid-chain, while some of their clients hang up. */
let gate: Promise<void> = Promise.resolve();

const lazyArrived = new Set<string>();
const lazySeen = new Map<string, { isCancelled: boolean; aborted: boolean; reason: unknown }>();

/** A singleton service a few calls deep, that knows nothing of the request. */
@Injectable()
class DeepService {
  constructor(@Inject(CancellationService) private readonly cancellation: CancellationService) {}

  async signalAfterWork(): Promise<AbortSignal> {
    await sleep(2);
    await Promise.resolve();
    return this.innerMost();
  }

  private innerMost(): Promise<AbortSignal> {
    return new Promise((resolve) => setTimeout(() => resolve(this.cancellation.signal), 3));
  }

  lateCheck(): unknown {
    try {
      this.cancellation.throwIfCancelled();
      return undefined;
    } catch (err) {
      return err;
    }
  }
}

@Controller('ctx')
class ContextController {
  constructor(
    @Inject(CancellationService) private readonly cancellation: CancellationService,
    @Inject(DeepService) private readonly deep: DeepService,
  ) {}

  /** Touches nothing cancellation-related until its client has left: the signal is created late. */
  @Get('lazy/:id')
  async lazy(@Param('id') id: string): Promise<string> {
    lazyArrived.add(id);
    await gate;
    await sleep(1);
    const signal = this.cancellation.signal;
    lazySeen.set(id, {
      isCancelled: this.cancellation.isCancelled,
      aborted: signal.aborted,
      reason: signal.reason,
    });
    return 'late';
  }

  @Get(':id')
  async run(@Param('id') id: string, @RequestSignal() param: AbortSignal): Promise<{ id: string }> {
    const trace: Trace = { param, seen: new Map(), abortEvents: 0, phase: 'before-gate' };
    traces.set(id, trace);
    param.addEventListener('abort', () => trace.abortEvents++);
    await this.chain('1', trace);
    trace.phase = 'at-gate';
    await gate;
    await this.chain('2', trace);
    trace.lateIsCancelled = this.cancellation.isCancelled;
    trace.lateThrown = await new Promise((resolve) => setImmediate(() => resolve(this.deep.lateCheck())));
    trace.phase = 'done';
    return { id };
  }

  /** Reads `cancellation.signal` at every kind of async boundary. */
  private async chain(phase: string, trace: Trace): Promise<void> {
    const see = (where: string) => trace.seen.set(`${phase}:${where}`, this.cancellation.signal);
    see('sync');
    await sleep(3);
    see('after await');
    await new Promise<void>((resolve) =>
      setTimeout(() => {
        see('setTimeout');
        resolve();
      }, 4),
    );
    await new Promise<void>((resolve) =>
      setImmediate(() => {
        see('setImmediate');
        resolve();
      }),
    );
    await Promise.all(
      [1, 2, 3].map(async (i) => {
        await sleep(2 * i);
        see(`Promise.all branch ${i}`);
      }),
    );

    const emitter = new EventEmitter();
    const emitted = new Promise<void>((resolve) =>
      emitter.once('tick', () => {
        see('EventEmitter listener');
        resolve();
      }),
    );
    setTimeout(() => emitter.emit('tick'), 3);
    await emitted;

    const stream = new Readable({ read() {} });
    const consumed = new Promise<void>((resolve) => {
      stream.on('data', () => see('Readable data'));
      stream.on('end', () => {
        see('Readable end');
        resolve();
      });
    });
    setTimeout(() => {
      stream.push('chunk');
      setTimeout(() => stream.push(null), 2);
    }, 3);
    await consumed;

    trace.seen.set(`${phase}:nested service`, await this.deep.signalAfterWork());
  }
}

/** Every point where the chain reads the signal, in both phases (before and after the gate). */
const POINTS = ['1', '2']
  .flatMap((phase) =>
    [
      'sync',
      'after await',
      'setTimeout',
      'setImmediate',
      'Promise.all branch 1',
      'Promise.all branch 2',
      'Promise.all branch 3',
      'EventEmitter listener',
      'Readable data',
      'Readable end',
      'nested service',
    ].map((where) => `${phase}:${where}`),
  )
  .sort();

describe.each(ADAPTERS)('CancellationService context (%s)', (adapter) => {
  let t: TestApp;

  beforeAll(async () => {
    t = await createApp(
      adapter,
      rootModule({
        imports: [CancellationModule.forRoot()],
        controllers: [ContextController],
        providers: [DeepService],
      }),
    );
  });

  afterAll(async () => {
    await t.close();
    expect(t.logs.errors).toEqual([]);
  });

  it('gives each of several concurrent requests its own signal, deep in its async chain', async () => {
    let release!: () => void;
    gate = new Promise((resolve) => (release = resolve));
    const ids = ['kept-1', 'gone-1', 'kept-2', 'gone-2'].map((name) => `${adapter}-${name}`);
    const clients = new Map(ids.map((id) => [id, startRequest(t.port, `/ctx/${id}`)]));
    await waitFor(() => ids.every((id) => traces.get(id)?.phase === 'at-gate'), {
      message: 'every request to reach the gate',
    });

    const gone = ids.filter((id) => id.includes('gone'));
    const kept = ids.filter((id) => id.includes('kept'));
    for (const id of gone) clients.get(id)?.abort();
    await waitFor(() => gone.every((id) => traces.get(id)?.param.aborted), {
      message: 'the aborted signals',
    });
    release();

    for (const id of kept) expect((await clients.get(id)?.response())?.json).toEqual({ id });
    await waitFor(() => gone.every((id) => traces.get(id)?.phase === 'done'), {
      message: 'the aborted requests to finish their chains',
    });
    await sleep(50);

    const all = ids.map((id) => traces.get(id) as Trace);
    // Four different signals: nobody shares one.
    expect(new Set(all.map((trace) => trace.param)).size).toBe(4);
    for (const trace of all) {
      // `@RequestSignal()` and `CancellationService.signal` are the same object at every point.
      expect([...trace.seen.keys()].sort()).toEqual(POINTS);
      const foreign = [...trace.seen].filter(([, signal]) => signal !== trace.param).map(([where]) => where);
      expect(foreign).toEqual([]);
    }
    for (const id of gone) {
      const trace = traces.get(id) as Trace;
      expect(trace.param.reason).toBeInstanceOf(CancellationError);
      expect((trace.param.reason as CancellationError).kind).toBe('client-disconnected');
      expect(trace.abortEvents).toBe(1);
      expect(trace.lateIsCancelled).toBe(true);
      expect(trace.lateThrown).toBe(trace.param.reason);
    }
    for (const id of kept) {
      const trace = traces.get(id) as Trace;
      expect(trace.param.aborted).toBe(false);
      expect(trace.abortEvents).toBe(0);
      expect(trace.lateIsCancelled).toBe(false);
      expect(trace.lateThrown).toBeUndefined();
    }
  });

  it('gives an aborted signal to a request that reads it only after its client left', async () => {
    let release!: () => void;
    gate = new Promise((resolve) => (release = resolve));
    const id = `${adapter}-lazy`;
    const client = startRequest(t.port, `/ctx/lazy/${id}`);
    await waitFor(() => lazyArrived.has(id));
    client.abort();
    await waitFor(() =>
      t.logs.lines.some((line) => /^GET \/ctx\/lazy\/:id \[[\w-]+\] cancelled/.test(line.message)),
    );
    release();

    const seen = await waitFor(() => lazySeen.get(id));
    expect(seen.isCancelled).toBe(true);
    expect(seen.aborted).toBe(true);
    expect((seen.reason as CancellationError).kind).toBe('client-disconnected');
  });

  it('gives the shutdown signal outside a request, also after requests ran', async () => {
    const service = t.app.get(CancellationService);
    expect(service.signal).toBe(service.shutdownSignal);
    gate = Promise.resolve();
    const id = `${adapter}-outside`;
    expect((await startRequest(t.port, `/ctx/${id}`).response()).status).toBe(200);
    expect(traces.get(id)?.param).not.toBe(service.shutdownSignal);

    expect(service.signal).toBe(service.shutdownSignal);
    const inTimer = await new Promise<AbortSignal>((resolve) => setTimeout(() => resolve(service.signal), 1));
    expect(inTimer).toBe(service.shutdownSignal);
    expect(service.isCancelled).toBe(false);
    expect(service.shutdownSignal.aborted).toBe(false);
  });
});
