import 'reflect-metadata';
import { Controller, Get, Injectable, Module, UseGuards } from '@nestjs/common';
import type { CanActivate } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import https from 'node:https';
import net from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { CancellationError, CancellationModule, RequestSignal, RequestTimeout } from 'nestjs-cancellation';
import type { CancellationModuleOptions } from 'nestjs-cancellation';
import {
  ADAPTERS,
  createApp,
  LogCapture,
  request,
  rootModule,
  sleep,
  startRequest,
  waitFor,
} from './utils/harness.js';
import type { AdapterName, RawResponse, RequestOptions, TestApp } from './utils/harness.js';
import { testCertificate } from './utils/tls.js';

const certificate = testCertificate();
const tls: RequestOptions = { ca: certificate.cert };

/** What the handlers and guards of this suite saw. */
const seen = { guardEntered: 0, hangingEntered: 0, started: 0, stops: [] as string[] };

/** A token lookup that takes 300 ms: a request spends the start of the drain in it. */
@Injectable()
class SlowGuard implements CanActivate {
  async canActivate(): Promise<boolean> {
    seen.guardEntered++;
    await sleep(300);
    return true;
  }
}

/** Never decides: only the hard deadline ends such a request. */
@Injectable()
class HangingGuard implements CanActivate {
  canActivate(): Promise<boolean> {
    seen.hangingEntered++;
    return new Promise<boolean>(() => undefined);
  }
}

@Controller('tls')
class TlsController {
  @Get('slow')
  async slow(@RequestSignal() signal: AbortSignal): Promise<string> {
    seen.started++;
    try {
      await delay(10_000, undefined, { signal });
      return 'finished';
    } catch (err) {
      seen.stops.push((signal.reason as CancellationError).kind);
      throw err;
    }
  }

  @Get('budget')
  @RequestTimeout(200)
  async budget(@RequestSignal() signal: AbortSignal): Promise<string> {
    await delay(10_000, undefined, { signal });
    return 'finished';
  }

  @Get('guarded')
  @UseGuards(SlowGuard)
  guarded(): string {
    return 'through the guard';
  }

  @Get('hanging')
  @UseGuards(HangingGuard)
  hanging(): string {
    return 'never';
  }

  @Get('quick')
  quick(): string {
    return 'quick';
  }
}

function start(adapter: AdapterName, options: CancellationModuleOptions = {}): Promise<TestApp> {
  return createApp(
    adapter,
    rootModule({
      imports: [CancellationModule.forRoot(options)],
      controllers: [TlsController],
      providers: [SlowGuard, HangingGuard],
    }),
    { https: certificate },
  );
}

function expect503(response: RawResponse): void {
  expect(response.status).toBe(503);
  expect(response.headers['retry-after']).toBe('1');
  expect(response.headers.connection).toBe('close');
}

/** The hard deadline's warnings. */
function deadlineWarnings(t: TestApp): string[] {
  return t.logs
    .inContext('Cancellation')
    .filter((line) => line.level === 'warn' && line.message.startsWith('Shutdown deadline'))
    .map((line) => line.message);
}

describe.each(ADAPTERS)('HTTPS (%s)', (adapter) => {
  let t: TestApp;

  beforeEach(() => {
    seen.guardEntered = 0;
    seen.hangingEntered = 0;
    seen.started = 0;
    seen.stops.length = 0;
  });

  afterEach(async () => {
    await t.close();
    expect(t.logs.errors).toEqual([]);
  });

  it('serves over TLS, and a client that hangs up cancels its handler', async () => {
    t = await start(adapter);
    expect(t.url.startsWith('https://')).toBe(true);
    expect((await request(t.port, '/tls/quick', tls)).body).toBe('quick');
    const client = startRequest(t.port, '/tls/slow', tls);
    await waitFor(() => seen.started === 1, { message: 'the handler to start' });
    client.abort();
    await waitFor(() => seen.stops.length === 1, { message: 'the handler to stop' });
    expect(seen.stops).toEqual(['client-disconnected']);
  });

  it('answers 504 when the budget runs out', async () => {
    t = await start(adapter);
    const response = await request(t.port, '/tls/budget', tls);
    expect(response.status).toBe(504);
  });

  it('lets a request still in its guard finish with 200 during the grace period, and refuses a new one', async () => {
    t = await start(adapter, { shutdownGracePeriodMs: 3000 });
    const inGuard = startRequest(t.port, '/tls/guarded', tls);
    await waitFor(() => seen.guardEntered === 1, { message: 'the request to reach the guard' });
    const startedAt = performance.now();
    const closed = t.close();
    await sleep(50);
    expect503(await request(t.port, '/tls/quick', tls));

    const response = await inGuard.response();
    expect(response.status).toBe(200);
    expect(response.body).toBe('through the guard');
    await closed;
    // close() followed the request, long before the grace period's end.
    expect(performance.now() - startedAt).toBeLessThan(2000);
    expect(deadlineWarnings(t)).toEqual([]);
  });

  it('cancels a handler in flight at shutdown with 503, not held by an idle keep-alive connection', async () => {
    t = await start(adapter);
    const agent = new https.Agent({ keepAlive: true, ca: certificate.cert });
    try {
      expect((await request(t.port, '/tls/quick', { agent, ca: certificate.cert })).status).toBe(200);
      const client = startRequest(t.port, '/tls/slow', tls);
      await waitFor(() => seen.started === 1, { message: 'the handler to start' });
      expect(await t.close()).toBeLessThan(1500);
      expect503(await client.response());
      expect(seen.stops).toEqual(['shutdown']);
    } finally {
      agent.destroy();
    }
  });

  it('answers 503 at the hard deadline to a request stuck in a guard, and logs it', async () => {
    t = await start(adapter, { shutdownTimeoutMs: 600 });
    const stuck = startRequest(t.port, '/tls/hanging', tls);
    await waitFor(() => seen.hangingEntered === 1, { message: 'the request to reach the guard' });
    const closeMs = await t.close();
    expect(closeMs).toBeGreaterThanOrEqual(500);
    expect(closeMs).toBeLessThan(2500);
    expect503(await stuck.response());
    const warnings = deadlineWarnings(t);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('GET /tls/hanging');
    expect(warnings[0]).toContain('answering 503');
  });

  it('ends a connection that never completes its TLS handshake at the hard deadline', async () => {
    t = await start(adapter, { shutdownTimeoutMs: 600 });
    const raw = net.connect(t.port, '127.0.0.1');
    const ended = new Promise<void>((resolve) => raw.once('close', () => resolve()));
    raw.on('error', () => undefined);
    await new Promise<void>((resolve) => raw.once('connect', () => resolve()));
    const closeMs = await t.close();
    expect(closeMs).toBeLessThan(2500);
    await ended;
  });
});

describe('HTTP/2 (Fastify http2: true)', () => {
  it.each([
    ['cleartext (h2c)', {}],
    ['over TLS', { https: { ...certificate, allowHTTP1: true } }],
  ])('is refused at start-up, %s, with the reason', async (_name, extra) => {
    @Module({ imports: [CancellationModule.forRoot()], controllers: [TlsController] })
    class Http2Module {}
    const logs = new LogCapture();
    const app = await NestFactory.create(
      Http2Module,
      new FastifyAdapter({ http2: true, ...extra } as ConstructorParameters<typeof FastifyAdapter>[0]),
      { logger: logs, abortOnError: false },
    );
    await expect(app.listen(0, '127.0.0.1')).rejects.toThrow(
      /nestjs-cancellation does not support HTTP\/2.*Serve HTTP\/1\.1 \(HTTPS is supported\)/,
    );
    await app.close();
  });
});
