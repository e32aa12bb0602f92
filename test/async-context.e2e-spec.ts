/**
 * `asyncContext: false`: the request's handler runs without the AsyncLocalStorage store. `@RequestSignal()`
 * still gets the request's signal (from the scope the interceptor keeps on the response), and disconnects,
 * deadlines, shutdown and the registry behave as with the store; `CancellationService` answers as outside a
 * request. On both adapters, against real sockets.
 */
import 'reflect-metadata';
import { Controller, Get, Inject, Param, Post, Body } from '@nestjs/common';
import { once } from 'node:events';
import net from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import {
  CancellationError,
  CancellationModule,
  CancellationService,
  RequestSignal,
  RequestTimeout,
  checkpoint,
} from 'nestjs-cancellation';
import { scopeStorage } from '../src/core/async-context.js';
import { ADAPTERS, createApp, request, rootModule, startRequest, waitFor } from './utils/harness.js';
import type { AdapterName, TestApp } from './utils/harness.js';

/** What a handler saw, by the id the test gave its request. */
interface Seen {
  signal: AbortSignal;
  /** `CancellationService.signal` inside the handler. */
  serviceSignal: AbortSignal;
  serviceRequestId: string | undefined;
  /** Whether the AsyncLocalStorage store was there. */
  hadStore: boolean;
  /** How the handler's await ended: the error it rejected with, or 'done'. */
  ended?: unknown;
}

const seen = new Map<string, Seen>();

@Controller('plain')
class PlainController {
  constructor(@Inject(CancellationService) private readonly cancellation: CancellationService) {}

  @Get('wait/:id')
  async wait(@Param('id') id: string, @RequestSignal() signal: AbortSignal): Promise<string> {
    const entry: Seen = {
      signal,
      serviceSignal: this.cancellation.signal,
      serviceRequestId: this.cancellation.requestId,
      hadStore: scopeStorage.getStore() !== undefined,
    };
    seen.set(id, entry);
    try {
      await delay(10_000, undefined, { signal });
      entry.ended = 'done';
      return 'done';
    } catch (err) {
      entry.ended = err;
      throw err;
    }
  }

  @Get('quick')
  quick(@RequestSignal() signal: AbortSignal): { aborted: boolean; hadStore: boolean } {
    return { aborted: signal.aborted, hadStore: scopeStorage.getStore() !== undefined };
  }

  @Get('budget/:id')
  @RequestTimeout(80)
  async budget(@Param('id') id: string, @RequestSignal() signal: AbortSignal): Promise<string> {
    const entry: Seen = {
      signal,
      serviceSignal: this.cancellation.signal,
      serviceRequestId: undefined,
      hadStore: false,
    };
    seen.set(id, entry);
    // A CPU loop that yields with checkpoint(signal): the argument is needed without the store.
    for (;;) {
      try {
        await checkpoint(signal);
      } catch (err) {
        entry.ended = err;
        throw err;
      }
      await delay(2);
    }
  }

  @Post('upload')
  upload(@Body() body: unknown): { received: boolean } {
    return { received: body !== undefined };
  }
}

function reasonOf(signal: AbortSignal): CancellationError {
  expect(signal.aborted).toBe(true);
  const reason = signal.reason as unknown;
  expect(reason).toBeInstanceOf(CancellationError);
  return reason as CancellationError;
}

describe.each(ADAPTERS)('asyncContext: false on %s', (adapter: AdapterName) => {
  let t: TestApp;

  beforeEach(async () => {
    seen.clear();
    t = await createApp(
      adapter,
      rootModule({
        imports: [CancellationModule.forRoot({ asyncContext: false })],
        controllers: [PlainController],
      }),
    );
  });

  afterEach(async () => {
    await t.close();
  });

  it('gives @RequestSignal() the request signal without the store, and it aborts when the client hangs up', async () => {
    const client = startRequest(t.port, '/plain/wait/a');
    const entry = await waitFor(() => seen.get('a'), { message: 'the handler to start' });
    expect(entry.hadStore).toBe(false);
    expect(entry.signal.aborted).toBe(false);
    client.abort();
    await waitFor(() => entry.ended !== undefined, { message: 'the handler to stop' });
    expect(reasonOf(entry.signal).kind).toBe('client-disconnected');
    expect((entry.ended as Error).name).toBe('AbortError');
    expect(t.logs.errors).toEqual([]);
  });

  it('leaves CancellationService as outside a request: the application signal, no request id', async () => {
    const client = startRequest(t.port, '/plain/wait/b');
    const entry = await waitFor(() => seen.get('b'), { message: 'the handler to start' });
    const service = t.app.get(CancellationService);
    expect(entry.serviceSignal).not.toBe(entry.signal);
    expect(entry.serviceSignal).toBe(service.signal);
    expect(entry.serviceRequestId).toBeUndefined();
    client.abort();
    await waitFor(() => entry.ended !== undefined, { message: 'the handler to stop' });
    expect(entry.serviceSignal.aborted).toBe(false);
  });

  it('answers a request that needs no signal as usual, with a fresh signal for each request', async () => {
    const first = await request(t.port, '/plain/quick');
    const second = await request(t.port, '/plain/quick');
    expect(first.status).toBe(200);
    expect(first.json).toEqual({ aborted: false, hadStore: false });
    expect(second.json).toEqual({ aborted: false, hadStore: false });
  });

  it('times a request out on its budget: 504, the signal aborted with kind timeout, checkpoint(signal) stops the loop', async () => {
    const response = await request(t.port, '/plain/budget/c');
    expect(response.status).toBe(504);
    const entry = seen.get('c')!;
    expect(reasonOf(entry.signal).kind).toBe('timeout');
    await waitFor(() => entry.ended !== undefined, { message: 'the loop to stop' });
    expect(entry.ended).toBe(entry.signal.reason);
  });

  it('lists the request in the registry, cancels it by id, and answers in-flight requests 503 on app.close()', async () => {
    const service = t.app.get(CancellationService);
    const manual = startRequest(t.port, '/plain/wait/d', { headers: { 'x-request-id': 'job-d' } });
    const entry = await waitFor(() => seen.get('d'), { message: 'the handler to start' });
    const [listed] = service.inFlight();
    expect(listed).toMatchObject({ id: expect.any(String), correlationId: 'job-d' });
    // The id is the server's own: the client's x-request-id is only its correlation id.
    expect(service.cancel('job-d', 'stopped by the test')).toBe(0);
    expect(service.cancel(listed.id, 'stopped by the test')).toBe(1);
    expect((await manual.response()).status).toBe(503);
    expect(reasonOf(entry.signal).kind).toBe('manual');

    const long = startRequest(t.port, '/plain/wait/e');
    const later = await waitFor(() => seen.get('e'), { message: 'the handler to start' });
    const closing = t.close();
    const response = await long.response();
    expect(response.status).toBe(503);
    expect(response.headers['retry-after']).toBe('1');
    expect(reasonOf(later.signal).kind).toBe('shutdown');
    await closing;
    expect(t.logs.errors).toEqual([]);
  });

  it('logs nothing at error level for a client that hangs up halfway through its POST body', async () => {
    const socket = net.connect(t.port, '127.0.0.1');
    await once(socket, 'connect');
    socket.write(
      'POST /plain/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n' +
        `Content-Length: 100000\r\n\r\n{"a":"${'x'.repeat(1000)}`,
    );
    await waitFor(() => t.responses.some((r) => r.req.url === '/plain/upload'), {
      message: 'the upload to arrive',
    });
    await delay(30);
    socket.destroy();
    await delay(100);
    expect((await request(t.port, '/plain/quick')).status).toBe(200);
    expect(t.logs.errors).toEqual([]);
  });
});

describe('asyncContext option', () => {
  it('refuses a value that is not a boolean at start-up, naming the option', async () => {
    await expect(
      createApp(
        'express',
        rootModule({
          imports: [CancellationModule.forRoot({ asyncContext: 'no' as unknown as boolean })],
          controllers: [PlainController],
        }),
      ),
    ).rejects.toThrow(/asyncContext/);
  });
});
