import 'reflect-metadata';
import { Body, Controller, Get, Injectable, Post, Query, Req, UseGuards } from '@nestjs/common';
import type { CanActivate, ExecutionContext, INestApplication } from '@nestjs/common';
import { Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import {
  CancellationError,
  CancellationModule,
  RequestSignal,
  checkpoint,
  isCancellationError,
} from 'nestjs-cancellation';
import { ADAPTERS, createApp, rootModule, sleep, startRequest, waitFor } from './utils/harness.js';
import type { AdapterName, TestApp } from './utils/harness.js';

/** What the handlers of one request (identified by its `tag`) did. */
interface Probe {
  started: boolean;
  ticks: number;
  abortReason: unknown;
  error: unknown;
  finished: boolean;
  guardPassed: boolean;
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
      finished: false,
      guardPassed: false,
    };
    probes.set(tag, found);
  }
  return found;
}

function watch(signal: AbortSignal, record: Probe): void {
  signal.addEventListener('abort', () => (record.abortReason = signal.reason), { once: true });
}

/** Holds the request for 200 ms before the handler may run: time for the client to leave. */
@Injectable()
class SlowGuard implements CanActivate {
  async canActivate(context: ExecutionContext): Promise<boolean> {
    const req = context.switchToHttp().getRequest<{ query: { tag: string } }>();
    await sleep(200);
    probe(req.query.tag).guardPassed = true;
    return true;
  }
}

@Controller('disconnect')
class DisconnectController {
  /** Long work that honours the signal: a tick every 20 ms, for up to 10 s. */
  @Get('long')
  async long(@Query('tag') tag: string, @RequestSignal() signal: AbortSignal): Promise<string> {
    const record = probe(tag);
    watch(signal, record);
    record.started = true;
    try {
      for (let i = 0; i < 500; i++) {
        record.ticks++;
        await delay(20, undefined, { signal });
      }
    } catch (err) {
      record.error = err;
      throw err;
    }
    record.finished = true;
    return 'done';
  }

  /** Reads a JSON body, then works for 300 ms after the body was read: must never be aborted. */
  @Post('body')
  async body(
    @Query('tag') tag: string,
    @Body() body: { items: number[] },
    @RequestSignal() signal: AbortSignal,
  ): Promise<{ sum: number; aborted: boolean }> {
    const record = probe(tag);
    watch(signal, record);
    record.started = true;
    await sleep(300);
    record.finished = true;
    return { sum: body.items.reduce((a, b) => a + b, 0), aborted: signal.aborted };
  }

  /**
   * Reads the request body itself (no body parser ran before the interceptor), then works for 300 ms: Node's
   * request emits 'close' as soon as the body is consumed, in the middle of the handler.
   */
  @Post('upload')
  async upload(
    @Query('tag') tag: string,
    @Req() req: Readable,
    @Body() body: unknown,
    @RequestSignal() signal: AbortSignal,
  ): Promise<{ bytes: number; aborted: boolean }> {
    const record = probe(tag);
    watch(signal, record);
    record.started = true;
    // Express leaves the stream unread on the request; Fastify hands it over as the body (see configure).
    const source = body instanceof Readable ? body : req;
    let bytes = 0;
    for await (const chunk of source) bytes += (chunk as Buffer).length;
    await sleep(300);
    record.finished = true;
    return { bytes, aborted: signal.aborted };
  }

  @Get('guarded')
  @UseGuards(SlowGuard)
  async guarded(@Query('tag') tag: string, @RequestSignal() signal: AbortSignal): Promise<string> {
    const record = probe(tag);
    record.started = true;
    record.abortReason = signal.aborted ? signal.reason : undefined;
    await delay(50, undefined, { signal });
    record.finished = true;
    return 'ran';
  }

  /** CPU-bound: 1 ms of busy work per iteration, stopped only through `checkpoint()`. */
  @Get('cpu')
  async cpu(@Query('tag') tag: string): Promise<number> {
    const record = probe(tag);
    record.started = true;
    try {
      for (;;) {
        const until = performance.now() + 1;
        while (performance.now() < until) {
          // spin
        }
        record.ticks++;
        if (record.ticks > 20_000) break;
        await checkpoint();
      }
    } catch (err) {
      record.error = err;
      throw err;
    }
    record.finished = true;
    return record.ticks;
  }
}

/** Fastify answers 415 to a type it has no parser for: hand `application/octet-stream` over unread. */
function passOctetStreamThrough(app: INestApplication, adapter: AdapterName): void {
  if (adapter !== 'fastify') return;
  const fastify = app.getHttpAdapter().getInstance() as {
    addContentTypeParser(type: string, parser: (req: unknown, payload: Readable, done: DoneFn) => void): void;
  };
  fastify.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));
}
type DoneFn = (err: null, body: Readable) => void;

function kindOf(reason: unknown): string | undefined {
  return reason instanceof CancellationError ? reason.kind : undefined;
}

/** Asserts that `read()` stays the same for `ms`: the work no longer advances. */
async function expectStalled(read: () => number, ms = 150): Promise<void> {
  const before = read();
  await sleep(ms);
  expect(read()).toBe(before);
}

describe.each(ADAPTERS)('client disconnect (%s)', (adapter) => {
  let t: TestApp;
  let seq = 0;
  const tag = () => `${adapter}-${++seq}`;

  beforeAll(async () => {
    t = await createApp(
      adapter,
      rootModule({
        imports: [CancellationModule.forRoot()],
        controllers: [DisconnectController],
        providers: [SlowGuard],
      }),
      { configure: passOctetStreamThrough },
    );
  });

  afterEach(() => {
    // Never an error-level line, whatever happened to the request.
    expect(t.logs.errors).toEqual([]);
    expect(t.logs.lines.filter((line) => line.text.includes('EmptyError'))).toEqual([]);
  });

  afterAll(async () => {
    await t.close();
    expect(t.logs.errors).toEqual([]);
  });

  it('aborts the signal with kind client-disconnected when a GET client hangs up, and the work stops', async () => {
    const id = tag();
    const client = startRequest(t.port, `/disconnect/long?tag=${id}`);
    const record = probe(id);
    await waitFor(() => record.ticks >= 3, { message: 'the handler to work' });
    client.abort();

    await waitFor(() => record.abortReason !== undefined, { message: 'the signal to abort' });
    expect(kindOf(record.abortReason)).toBe('client-disconnected');
    await waitFor(() => record.error !== undefined, { message: 'the work to stop' });
    expect(isCancellationError(record.error)).toBe(true);
    await expectStalled(() => record.ticks);
    expect(record.finished).toBe(false);

    const outcome = await client.settled();
    expect('error' in outcome).toBe(true);
    // Nothing could reach the client; what the application wrote to the dead socket is not a 500.
    const res = await waitFor(() => t.responses.find((r) => r.req.url?.includes(id)));
    await waitFor(() => res.statusCode !== 200, { message: 'the exception filter to run' });
    expect(res.statusCode).toBe(499);
  });

  it('logs one verbose line naming method, route, kind and elapsed ms', async () => {
    const id = tag();
    const client = startRequest(t.port, `/disconnect/long?tag=${id}`);
    const record = probe(id);
    await waitFor(() => record.started);
    await sleep(120);
    const before = t.logs.lines.length;
    client.abort();
    await waitFor(() => record.error !== undefined);

    const lines = await waitFor(() => {
      const found = t.logs.lines.slice(before).filter((line) => line.context === 'Cancellation');
      return found.length > 0 ? found : undefined;
    });
    expect(lines).toHaveLength(1);
    expect(lines[0].level).toBe('verbose');
    const match = /^GET \/disconnect\/long \[[\w-]+\] cancelled \(client-disconnected\) after (\d+) ms$/.exec(
      lines[0].message,
    );
    expect(match).not.toBeNull();
    const elapsed = Number(match?.[1]);
    expect(elapsed).toBeGreaterThanOrEqual(100);
    expect(elapsed).toBeLessThan(5000);
  });

  it('never aborts a POST whose handler keeps working after the body was read', async () => {
    const id = tag();
    const items = Array.from({ length: 2000 }, (_, i) => i);
    const started = performance.now();
    const response = await startRequest(t.port, `/disconnect/body?tag=${id}`, {
      method: 'POST',
      body: { items },
    }).response();
    expect(performance.now() - started).toBeGreaterThanOrEqual(290);
    expect(response.status).toBe(201);
    expect(response.json).toEqual({ sum: (1999 * 2000) / 2, aborted: false });

    const record = probe(id);
    expect(record.finished).toBe(true);
    await sleep(50);
    expect(record.abortReason).toBeUndefined();
    expect(
      t.logs.inContext('Cancellation').filter((line) => line.message.includes('/disconnect/body')),
    ).toEqual([]);
  });

  it('never aborts a POST whose handler reads the body stream itself, then keeps working', async () => {
    const id = tag();
    const payload = 'x'.repeat(256 * 1024);
    const response = await startRequest(t.port, `/disconnect/upload?tag=${id}`, {
      method: 'POST',
      body: payload,
      headers: { 'content-type': 'application/octet-stream' },
    }).response();
    expect(response.status).toBe(201);
    expect(response.json).toEqual({ bytes: payload.length, aborted: false });
    await sleep(50);
    expect(probe(id).abortReason).toBeUndefined();
  });

  it('never runs the handler for a client that left while a guard held the request', async () => {
    const id = tag();
    const before = t.logs.lines.length;
    const client = startRequest(t.port, `/disconnect/guarded?tag=${id}`);
    await waitFor(() => t.responses.some((r) => r.req.url?.includes(id)), {
      message: 'the request to arrive',
    });
    await sleep(30);
    client.abort();

    const record = probe(id);
    await waitFor(() => record.guardPassed, { message: 'the guard to finish' });
    await sleep(100);
    // The request was already lost when the interceptor got it: the handler never ran.
    expect(record.started).toBe(false);
    expect(record.finished).toBe(false);
    const lines = t.logs.lines.slice(before).filter((line) => line.context === 'Cancellation');
    expect(lines.map((line) => line.message)).toEqual([
      expect.stringMatching(
        /^GET \/disconnect\/guarded \[[\w-]+\] cancelled \(client-disconnected\) after \d+ ms$/,
      ),
    ]);
  });

  it('stops a CPU-bound handler that calls checkpoint() when the client hangs up', async () => {
    const id = tag();
    const client = startRequest(t.port, `/disconnect/cpu?tag=${id}`);
    const record = probe(id);
    await waitFor(() => record.ticks >= 20, { message: 'the loop to run' });
    client.abort();

    await waitFor(() => record.error !== undefined, { message: 'checkpoint() to throw' });
    expect(kindOf(record.error)).toBe('client-disconnected');
    await expectStalled(() => record.ticks);
    expect(record.finished).toBe(false);
  });
});
