import 'reflect-metadata';
import { Controller, Get, Query, Sse, SseSignal, StreamableFile } from '@nestjs/common';
import type { MessageEvent } from '@nestjs/common';
import http from 'node:http';
import { Readable } from 'node:stream';
import { Observable } from 'rxjs';
import {
  CancellationError,
  CancellationModule,
  CancellationService,
  RequestTimeout,
} from 'nestjs-cancellation';
import { InFlightRegistry } from '../src/registry/in-flight.registry.js';
import { ADAPTERS, createApp, rootModule, waitFor } from './utils/harness.js';
import type { AdapterName, TestApp } from './utils/harness.js';

/** What a source (a Readable, an Observable, an SSE handler) went through, by tag. */
interface Probe {
  chunks: number;
  destroyed: boolean;
  tornDown: boolean;
  /** The reason `CancellationService.signal` aborted with, read inside the handler. */
  requestSignal: AbortSignal | undefined;
  /** Nest's own `@SseSignal()`. */
  sseSignal: AbortSignal | undefined;
}

const probes = new Map<string, Probe>();
function probe(tag: string): Probe {
  let found = probes.get(tag);
  if (found === undefined) {
    found = { chunks: 0, destroyed: false, tornDown: false, requestSignal: undefined, sseSignal: undefined };
    probes.set(tag, found);
  }
  return found;
}

/**
 * A Readable that produces a chunk every 20 ms (a file being read slowly, a DB cursor), for ever or `count`
 * chunks.
 */
function slowSource(tag: string, count = Infinity): Readable {
  const record = probe(tag);
  let timer: NodeJS.Timeout | undefined;
  return new Readable({
    read() {
      timer = setTimeout(() => {
        if (record.chunks === count) {
          this.push(null);
          return;
        }
        record.chunks++;
        this.push(`chunk ${record.chunks}\n`);
      }, 20);
    },
    destroy(err, callback) {
      clearTimeout(timer);
      record.destroyed = true;
      callback(err);
    },
  });
}

@Controller('stream')
class StreamController {
  constructor(private readonly cancellation: CancellationService) {}

  @Get('file')
  file(@Query('tag') tag: string): StreamableFile {
    probe(tag).requestSignal = this.cancellation.signal;
    return new StreamableFile(slowSource(tag), { type: 'text/plain' });
  }

  /** 15 chunks over about 300 ms, with a budget of 100 ms for producing the answer. */
  @Get('download')
  @RequestTimeout(100)
  download(@Query('tag') tag: string): StreamableFile {
    probe(tag).requestSignal = this.cancellation.signal;
    return new StreamableFile(slowSource(tag, 15), { type: 'text/plain' });
  }

  @Get('short')
  short(): StreamableFile {
    return new StreamableFile(Readable.from(['one\n', 'two\n']), { type: 'text/plain' });
  }

  /** An Observable that never completes: Nest answers with its last value, so it waits for ever. */
  @Get('observable')
  observable(@Query('tag') tag: string): Observable<string> {
    const record = probe(tag);
    record.requestSignal = this.cancellation.signal;
    return new Observable<string>((subscriber) => {
      const timer = setInterval(() => subscriber.next(`value ${++record.chunks}`), 20);
      return () => {
        clearInterval(timer);
        record.tornDown = true;
      };
    });
  }

  @Sse('events')
  events(@Query('tag') tag: string, @SseSignal() sseSignal: AbortSignal): Observable<MessageEvent> {
    const record = probe(tag);
    record.requestSignal = this.cancellation.signal;
    record.sseSignal = sseSignal;
    return new Observable<MessageEvent>((subscriber) => {
      const timer = setInterval(() => subscriber.next({ data: { n: ++record.chunks } }), 20);
      return () => {
        clearInterval(timer);
        record.tornDown = true;
      };
    });
  }
}

interface StreamingClient {
  readonly request: http.ClientRequest;
  /** Resolves with the response once its first body chunk arrived. */
  readonly firstChunk: Promise<http.IncomingMessage>;
  /** Resolves once the response ended or failed: whether it ended complete, and the body received. */
  readonly ended: Promise<{ complete: boolean; body: string }>;
}

/** A client that reads a streamed response as it comes. */
function stream(port: number, path: string): StreamingClient {
  const request = http.get({ host: '127.0.0.1', port, path, agent: false });
  let onFirst: (res: http.IncomingMessage) => void = () => undefined;
  const firstChunk = new Promise<http.IncomingMessage>((resolve) => (onFirst = resolve));
  const ended = new Promise<{ complete: boolean; body: string }>((resolve) => {
    request.once('error', () => resolve({ complete: false, body: '' }));
    request.once('response', (res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => {
        if (body === '') onFirst(res);
        body += chunk.toString('utf8');
      });
      res.once('error', () => resolve({ complete: false, body }));
      res.once('close', () => resolve({ complete: res.complete, body }));
    });
  });
  return { request, firstChunk, ended };
}

describe.each(ADAPTERS)('streaming responses on %s', (adapter: AdapterName) => {
  let testApp: TestApp;

  beforeEach(async () => {
    testApp = await createApp(
      adapter,
      rootModule({
        // A hard deadline well above what a prompt shutdown takes, so a test can tell them apart.
        imports: [CancellationModule.forRoot({ shutdownTimeoutMs: 4000 })],
        controllers: [StreamController],
      }),
    );
  });

  afterEach(async () => {
    await testApp?.close();
  });

  function tagged(name: string): string {
    return `${adapter}-${name}-${Math.random().toString(36).slice(2)}`;
  }

  it('StreamableFile: a client that hangs up mid-stream gets its source destroyed and the signal aborted', async () => {
    const tag = tagged('file-disconnect');
    const client = stream(testApp.port, `/stream/file?tag=${tag}`);
    await client.firstChunk;
    client.request.destroy();
    await waitFor(() => probe(tag).destroyed, { message: 'the source to be destroyed' });
    const signal = probe(tag).requestSignal!;
    await waitFor(() => signal.aborted, { message: 'the request signal to abort' });
    expect(signal.reason).toBeInstanceOf(CancellationError);
    expect((signal.reason as CancellationError).kind).toBe('client-disconnected');
    expect(testApp.logs.errors).toEqual([]);
  });

  it('StreamableFile: a stream sent to the end releases the request (registry entry, listener)', async () => {
    for (let i = 0; i < 3; i++) {
      const ended = await stream(testApp.port, '/stream/short').ended;
      expect(ended).toEqual({ complete: true, body: 'one\ntwo\n' });
    }
    const registry = testApp.app.get(InFlightRegistry);
    await waitFor(() => registry.size === 0, { message: 'the registry to empty' });
    // The scope let go of each response (it is only referenced from there while the response is open).
    for (const response of testApp.responses) {
      const scoped = Object.getOwnPropertySymbols(response).filter(
        (key) => key.description === 'nestjs-cancellation.scope',
      );
      for (const key of scoped) expect((response as unknown as Record<symbol, unknown>)[key]).toBeUndefined();
    }
    expect(testApp.logs.inContext('Cancellation')).toEqual([]);
  });

  it('StreamableFile: the time budget covers producing the answer, not sending the body', async () => {
    const tag = tagged('download');
    const ended = await stream(testApp.port, `/stream/download?tag=${tag}`).ended;
    expect(ended.complete).toBe(true);
    expect(ended.body.split('\n').filter(Boolean)).toHaveLength(15);
    expect(probe(tag).requestSignal!.aborted).toBe(false);
    expect(probe(tag).destroyed).toBe(true);
  });

  it('StreamableFile: shutdown mid-stream ends the response and destroys the source promptly', async () => {
    const tag = tagged('file-shutdown');
    const client = stream(testApp.port, `/stream/file?tag=${tag}`);
    await client.firstChunk;
    const closeMs = await testApp.close();
    expect(closeMs).toBeLessThan(2000);
    const ended = await client.ended;
    // The body was cut short: a client must not take a truncated download for a complete one.
    expect(ended.complete).toBe(false);
    expect(ended.body).toMatch(/^chunk 1\n/);
    expect(probe(tag).destroyed).toBe(true);
    expect((probe(tag).requestSignal!.reason as CancellationError).kind).toBe('shutdown');
    expect(testApp.logs.errors).toEqual([]);
    expect(testApp.logs.lines.filter((line) => line.level === 'warn')).toEqual([]);
  });

  it('Observable: a client that hangs up tears the Observable down and aborts the signal', async () => {
    const tag = tagged('observable-disconnect');
    const client = stream(testApp.port, `/stream/observable?tag=${tag}`);
    client.request.once('error', () => undefined);
    await waitFor(() => probe(tag).chunks >= 2, { message: 'the Observable to emit' });
    client.request.destroy();
    await waitFor(() => probe(tag).tornDown, { message: 'the Observable to be torn down' });
    expect((probe(tag).requestSignal!.reason as CancellationError).kind).toBe('client-disconnected');
    expect(testApp.logs.errors).toEqual([]);
  });

  it('Observable: shutdown tears it down and answers 503 promptly', async () => {
    const tag = tagged('observable-shutdown');
    const client = stream(testApp.port, `/stream/observable?tag=${tag}`);
    const status = new Promise<number>((resolve) =>
      client.request.once('response', (res) => resolve(res.statusCode ?? 0)),
    );
    await waitFor(() => probe(tag).chunks >= 2, { message: 'the Observable to emit' });
    const closeMs = await testApp.close();
    expect(closeMs).toBeLessThan(2000);
    expect(await status).toBe(503);
    expect(probe(tag).tornDown).toBe(true);
    expect(testApp.logs.errors).toEqual([]);
  });

  it('@Sse(): a client that hangs up aborts the request signal and @SseSignal(), and tears the producer down', async () => {
    const tag = tagged('sse-disconnect');
    const client = stream(testApp.port, `/stream/events?tag=${tag}`);
    await client.firstChunk;
    await waitFor(() => probe(tag).chunks >= 1, { message: 'an event' });
    client.request.destroy();
    const record = probe(tag);
    await waitFor(() => record.tornDown, { message: 'the producer to be torn down' });
    await waitFor(() => record.requestSignal!.aborted && record.sseSignal!.aborted, {
      message: 'both signals to abort',
    });
    expect((record.requestSignal!.reason as CancellationError).kind).toBe('client-disconnected');
    // Give a late error write (to the dead socket) the time to be logged, if it were.
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(testApp.logs.errors).toEqual([]);
  });

  it('@Sse(): shutdown aborts both signals and ends the event stream promptly', async () => {
    const tag = tagged('sse-shutdown');
    const client = stream(testApp.port, `/stream/events?tag=${tag}`);
    await client.firstChunk;
    await waitFor(() => probe(tag).chunks >= 1, { message: 'an event' });
    const closeMs = await testApp.close();
    expect(closeMs).toBeLessThan(2000);
    const ended = await client.ended;
    expect(ended.body).toContain('data: {"n":1}');
    const record = probe(tag);
    expect(record.tornDown).toBe(true);
    expect((record.requestSignal!.reason as CancellationError).kind).toBe('shutdown');
    expect(record.sseSignal!.aborted).toBe(true);
    expect(testApp.logs.errors).toEqual([]);
  });
});

describe.each(ADAPTERS)('streaming responses during a drain on %s', (adapter: AdapterName) => {
  it('a download in flight when shutdown begins finishes within the grace period', async () => {
    const testApp = await createApp(
      adapter,
      rootModule({
        imports: [CancellationModule.forRoot({ shutdownGracePeriodMs: 3000, shutdownTimeoutMs: 6000 })],
        controllers: [StreamController],
      }),
    );
    try {
      const tag = `${adapter}-drain-${Math.random().toString(36).slice(2)}`;
      const client = stream(testApp.port, `/stream/download?tag=${tag}`);
      await client.firstChunk;
      const closeMs = await testApp.close();
      const ended = await client.ended;
      expect(ended.complete).toBe(true);
      expect(ended.body.split('\n').filter(Boolean)).toHaveLength(15);
      // It waited for the download (about 300 ms), not for the whole grace period.
      expect(closeMs).toBeLessThan(2500);
      expect(probe(tag).requestSignal!.aborted).toBe(false);
      expect(testApp.logs.errors).toEqual([]);
    } finally {
      await testApp.close();
    }
  });
});
