import 'reflect-metadata';
import { Controller, Get, Inject } from '@nestjs/common';
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  CancellationModule,
  isCancellationError,
  OutboundCancellation,
  RequestTimeout,
} from 'nestjs-cancellation';
import { ADAPTERS, createApp, request, rootModule, startRequest, waitFor } from './utils/harness.js';
import type { TestApp } from './utils/harness.js';

const DEADLINE_HEADER = 'x-request-timeout-ms';

/**
 * The service called: `/echo` answers with the headers it received; `/hang` never answers and counts the
 * requests whose connection closed before an answer.
 */
class Downstream {
  readonly server = http.createServer((req, res) => {
    if (req.url === '/echo') {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(req.headers));
      return;
    }
    this.hanging++;
    res.once('close', () => this.closedEarly++);
  });
  hanging = 0;
  closedEarly = 0;
  url = '';

  async start(): Promise<void> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

const downstream = new Downstream();
/** Why each outgoing call of `/own-signal` and `/client-gone` stopped. */
const stops: { route: string; error: unknown }[] = [];

@Controller('out')
class OutController {
  constructor(@Inject(OutboundCancellation) private readonly outbound: OutboundCancellation) {}

  /** A `Request` with headers of its own, and `init.headers` on top. */
  @Get('headers')
  @RequestTimeout(5_000)
  async headers(): Promise<unknown> {
    const input = new Request(`${downstream.url}/echo`, {
      headers: { 'x-from-request': 'request', 'x-both': 'request', authorization: 'Bearer t' },
    });
    const res = await this.outbound.fetch(input, { headers: { 'x-from-init': 'init', 'x-both': 'init' } });
    return res.json();
  }

  /** A `Request` alone: its headers go out as they are. */
  @Get('request-only')
  async requestOnly(): Promise<unknown> {
    const res = await this.outbound.fetch(
      new Request(`${downstream.url}/echo`, { headers: { 'x-from-request': 'alone' } }),
    );
    return res.json();
  }

  /** The `Request`'s own signal aborts after 150 ms, long before the request's: the call stops with it. */
  @Get('own-signal')
  async ownSignal(): Promise<unknown> {
    const input = new Request(`${downstream.url}/hang`, { signal: AbortSignal.timeout(150) });
    try {
      await this.outbound.fetch(input);
      return { stopped: false };
    } catch (error) {
      stops.push({ route: 'own-signal', error });
      return { stopped: true, name: (error as Error).name };
    }
  }

  /** `init.signal` aborts after 150 ms; the `Request` has a signal of its own that never does. */
  @Get('init-signal')
  async initSignal(): Promise<unknown> {
    const input = new Request(`${downstream.url}/hang`, { signal: new AbortController().signal });
    try {
      await this.outbound.fetch(input, { signal: AbortSignal.timeout(150) });
      return { stopped: false };
    } catch (error) {
      return { stopped: true, name: (error as Error).name };
    }
  }

  /** A `Request` with a signal that never aborts: the call stops when the client hangs up. */
  @Get('client-gone')
  async clientGone(): Promise<unknown> {
    const input = new Request(`${downstream.url}/hang`, {
      headers: { 'x-from-request': 'request' },
      signal: new AbortController().signal,
    });
    try {
      return await this.outbound.fetch(input);
    } catch (error) {
      stops.push({ route: 'client-gone', error });
      throw error;
    }
  }
}

describe.each(ADAPTERS)('OutboundCancellation.fetch() with a Request (%s)', (adapter) => {
  let t: TestApp;

  beforeAll(async () => {
    await downstream.start();
  });

  afterAll(async () => {
    await downstream.stop();
  });

  beforeEach(async () => {
    stops.length = 0;
    t = await createApp(
      adapter,
      rootModule({
        imports: [CancellationModule.forRoot({ deadlineHeader: DEADLINE_HEADER })],
        controllers: [OutController],
      }),
    );
  });

  afterEach(async () => {
    await t.close();
    expect(t.logs.errors).toEqual([]);
  });

  it("keeps the Request's headers, adds init.headers over them, and sends the remaining budget", async () => {
    const response = await request(t.port, '/out/headers');
    expect(response.status).toBe(200);
    const seen = response.json as Record<string, string>;
    expect(seen['x-from-request']).toBe('request');
    expect(seen.authorization).toBe('Bearer t');
    expect(seen['x-from-init']).toBe('init');
    expect(seen['x-both']).toBe('init');
    const budget = Number(seen[DEADLINE_HEADER]);
    expect(budget).toBeGreaterThan(0);
    expect(budget).toBeLessThanOrEqual(5_000);
  });

  it("sends a Request's headers when no init is given", async () => {
    const seen = (await request(t.port, '/out/request-only')).json as Record<string, string>;
    expect(seen['x-from-request']).toBe('alone');
    // No budget on this route: no deadline header.
    expect(seen[DEADLINE_HEADER]).toBeUndefined();
  });

  it("stops when the Request's own signal aborts, the request itself still running", async () => {
    const before = downstream.closedEarly;
    const response = await request(t.port, '/out/own-signal');
    expect(response.json).toEqual({ stopped: true, name: 'TimeoutError' });
    expect(isCancellationError(stops[0].error)).toBe(false);
    await waitFor(() => downstream.closedEarly > before, { message: 'the outgoing connection to close' });
  });

  it('stops when init.signal aborts, though the Request carries a signal too', async () => {
    const response = await request(t.port, '/out/init-signal');
    expect(response.json).toEqual({ stopped: true, name: 'TimeoutError' });
  });

  it("stops with the request's signal when its client hangs up, though the Request carries a signal", async () => {
    const before = { hanging: downstream.hanging, closed: downstream.closedEarly };
    const client = startRequest(t.port, '/out/client-gone');
    await waitFor(() => downstream.hanging > before.hanging, { message: 'the outgoing call to arrive' });
    client.abort();
    await waitFor(() => stops.some((stop) => stop.route === 'client-gone'), {
      message: 'the outgoing call to stop',
    });
    await waitFor(() => downstream.closedEarly > before.closed, {
      message: 'the outgoing connection to close',
    });
    const { error } = stops.find((stop) => stop.route === 'client-gone') as { error: unknown };
    // fetch rejects with the signal's reason: the CancellationError of the client's hang-up.
    expect(isCancellationError(error)).toBe(true);
    expect((error as { kind: string }).kind).toBe('client-disconnected');
  });
});
