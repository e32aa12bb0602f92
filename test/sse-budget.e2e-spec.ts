import 'reflect-metadata';
import { Controller, Query, Sse } from '@nestjs/common';
import type { MessageEvent } from '@nestjs/common';
import http from 'node:http';
import { Observable } from 'rxjs';
import { CancellationModule, CancellationService, RequestTimeout } from 'nestjs-cancellation';
import type { CancellationError } from 'nestjs-cancellation';
import { ADAPTERS, createApp, rootModule, sleep, waitFor } from './utils/harness.js';
import type { AdapterName, TestApp } from './utils/harness.js';

interface Probe {
  signal?: AbortSignal;
  events: number;
  tornDown: boolean;
}
const probes = new Map<string, Probe>();
function probe(tag: string): Probe {
  let found = probes.get(tag);
  if (found === undefined) probes.set(tag, (found = { events: 0, tornDown: false }));
  return found;
}

@Controller('sse')
@RequestTimeout(100)
class EventsController {
  constructor(private readonly cancellation: CancellationService) {}

  /**
   * `count` events, one every `everyMs` after a quiet start of `firstMs`, each with what remains of the
   * request's budget; then completes. Outlasts the budget of 100 ms.
   */
  @Sse('events')
  events(
    @Query('tag') tag: string,
    @Query('count') count = '10',
    @Query('everyMs') everyMs = '30',
    @Query('firstMs') firstMs = '0',
  ): Observable<MessageEvent> {
    const record = probe(tag);
    record.signal = this.cancellation.signal;
    const { cancellation } = this;
    return new Observable<MessageEvent>((subscriber) => {
      let timer: NodeJS.Timeout | undefined;
      const tick = (): void => {
        record.events++;
        subscriber.next({ data: { n: record.events, remainingMs: cancellation.remainingMs ?? null } });
        if (record.events === Number(count)) subscriber.complete();
        else timer = setTimeout(tick, Number(everyMs));
      };
      timer = setTimeout(tick, Number(firstMs));
      return () => {
        clearTimeout(timer);
        record.tornDown = true;
      };
    });
  }
}

/** Reads an event stream to its end. */
function readEvents(
  port: number,
  path: string,
): { request: http.ClientRequest; ended: Promise<{ status: number; complete: boolean; body: string }> } {
  const request = http.get({ host: '127.0.0.1', port, path, agent: false });
  const ended = new Promise<{ status: number; complete: boolean; body: string }>((resolve) => {
    request.once('error', () => resolve({ status: 0, complete: false, body: '' }));
    request.once('response', (res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
      res.once('error', () => resolve({ status: res.statusCode ?? 0, complete: false, body }));
      res.once('close', () => resolve({ status: res.statusCode ?? 0, complete: res.complete, body }));
    });
  });
  return { request, ended };
}

/** The `data` of each `message` event of a stream. */
function dataOf(body: string): { n: number; remainingMs: number | null }[] {
  return body
    .split('\n')
    .filter((line) => line.startsWith('data: '))
    .map((line) => JSON.parse(line.slice(6)) as { n: number; remainingMs: number | null });
}

function kindOf(signal: AbortSignal | undefined): string | undefined {
  return (signal?.reason as CancellationError | undefined)?.kind;
}

describe.each(ADAPTERS)('the time budget of an @Sse() stream (%s)', (adapter: AdapterName) => {
  let t: TestApp;
  let seq = 0;
  const tag = (name: string) => `${adapter}-${name}-${++seq}`;

  beforeEach(async () => {
    t = await createApp(
      adapter,
      rootModule({
        imports: [CancellationModule.forRoot({ shutdownTimeoutMs: 4000 })],
        controllers: [EventsController],
      }),
    );
  });
  afterEach(async () => {
    await t.close();
    expect(t.logs.errors).toEqual([]);
  });

  it('a stream that outlasts the budget is not cut: every event, no error event', async () => {
    const id = tag('long');
    const { ended } = readEvents(t.port, `/sse/events?tag=${id}&count=10&everyMs=30`);
    const { status, complete, body } = await ended;
    expect(status).toBe(200);
    expect(complete).toBe(true);
    expect(body).not.toContain('event: error');
    expect(dataOf(body).map((event) => event.n)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(probe(id).signal?.aborted).toBe(false);
  });

  it('a quiet start longer than the budget: its headers went out, so it streams', async () => {
    const id = tag('quiet');
    const { ended } = readEvents(t.port, `/sse/events?tag=${id}&count=2&everyMs=20&firstMs=250`);
    const { complete, body } = await ended;
    expect(complete).toBe(true);
    expect(body).not.toContain('event: error');
    expect(dataOf(body)).toHaveLength(2);
    // No budget applies any more: remainingMs says so rather than counting down to 0.
    expect(dataOf(body).map((event) => event.remainingMs)).toEqual([null, null]);
  });

  it('a client that hangs up after the budget still aborts the signal and tears the producer down', async () => {
    const id = tag('hang-up');
    const { request } = readEvents(t.port, `/sse/events?tag=${id}&count=1000&everyMs=20`);
    await waitFor(() => probe(id).events >= 8, { message: 'events past the budget' });
    request.destroy();
    await waitFor(() => probe(id).tornDown, { message: 'the producer to be torn down' });
    expect(kindOf(probe(id).signal)).toBe('client-disconnected');
  });

  it('shutdown after the budget still ends the stream promptly and aborts the signal', async () => {
    const id = tag('shutdown');
    const { ended } = readEvents(t.port, `/sse/events?tag=${id}&count=1000&everyMs=20`);
    await waitFor(() => probe(id).events >= 8, { message: 'events past the budget' });
    expect(probe(id).signal?.aborted).toBe(false);
    const closeMs = await t.close();
    expect(closeMs).toBeLessThan(2_000);
    await ended;
    await sleep(10);
    expect(kindOf(probe(id).signal)).toBe('shutdown');
    expect(probe(id).tornDown).toBe(true);
  });
});
