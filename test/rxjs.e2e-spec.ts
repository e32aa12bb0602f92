import 'reflect-metadata';
import { HttpModule, HttpService } from '@nestjs/axios';
import { Controller, Get, Inject, Query } from '@nestjs/common';
import type { INestMicroservice } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { ClientsModule, MessagePattern, Payload, Transport } from '@nestjs/microservices';
import type { ClientProxy, MicroserviceOptions } from '@nestjs/microservices';
import { getEventListeners, once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { lastValueFrom, map, NEVER, Observable, of, takeUntil, timer } from 'rxjs';
import {
  CancellationError,
  CancellationModule,
  CancellationRegistry,
  CancellationService,
  fromAbortSignal,
  RequestTimeout,
  takeUntilCancelled,
} from 'nestjs-cancellation';
import {
  ADAPTERS,
  createApp,
  LogCapture,
  request,
  rootModule,
  startRequest,
  waitFor,
} from './utils/harness.js';
import type { TestApp } from './utils/harness.js';
import { QuotesModule } from './readme/rxjs.js';

/** A downstream service that never answers, and counts the calls whose connection closed unanswered. */
const slow = {
  server: http.createServer((req, res) => {
    if (req.url === '/prices/ok') {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ price: 42 }));
      return;
    }
    slow.received++;
    res.once('close', () => slow.abandoned++);
  }),
  received: 0,
  abandoned: 0,
  url: '',
};

/** How each handler's call ended, by tag. */
const outcomes = new Map<string, unknown>();
/** The tags of the handlers that started. */
const started = new Set<string>();

async function settle<T>(tag: string, work: Promise<T>): Promise<T> {
  try {
    const value = await work;
    outcomes.set(tag, { value });
    return value;
  } catch (err) {
    outcomes.set(tag, err);
    throw err;
  }
}

@Controller('rx')
class RxController {
  constructor(
    @Inject(HttpService) private readonly http: HttpService,
    @Inject('WORKERS') private readonly workers: ClientProxy,
    @Inject(CancellationService) private readonly cancellation: CancellationService,
  ) {}

  /** `HttpService` through `lastValueFrom`, ended by the request's cancellation. */
  @Get('http')
  @RequestTimeout(300)
  viaHttp(@Query('tag') tag: string): Promise<unknown> {
    return settle(tag, lastValueFrom(this.http.get(slow.url).pipe(takeUntilCancelled())));
  }

  /** The same Observable returned to Nest. */
  @Get('http-observable')
  @RequestTimeout(300)
  httpObservable(): Observable<unknown> {
    return this.http.get(slow.url).pipe(
      map((response) => response.data),
      takeUntilCancelled(),
    );
  }

  /** A `ClientProxy` request to a TCP microservice that never replies. */
  @Get('client-proxy')
  @RequestTimeout(300)
  viaClientProxy(@Query('tag') tag: string): Promise<unknown> {
    started.add(tag);
    return settle(tag, lastValueFrom(this.workers.send('never', {}).pipe(takeUntilCancelled())));
  }

  /** A signal of the handler's own that aborts first, with its reason. */
  @Get('own-signal')
  async ownSignal(): Promise<unknown> {
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error('given up by the handler')), 100);
    try {
      await lastValueFrom(this.http.get(slow.url).pipe(takeUntilCancelled(controller.signal)));
      return { ended: 'value' };
    } catch (err) {
      return { ended: (err as Error).message };
    }
  }

  /** A call that completes: the operator passes the value on and leaves no listener on the signal. */
  @Get('completes')
  async completes(): Promise<unknown> {
    const { signal } = this.cancellation;
    const before = getEventListeners(signal, 'abort').length;
    let during = 0;
    const value = await lastValueFrom(
      timer(20).pipe(
        map(() => {
          during = getEventListeners(signal, 'abort').length;
          return 'done';
        }),
        takeUntilCancelled(),
      ),
    );
    return { value, added: during - before, left: getEventListeners(signal, 'abort').length - before };
  }

  /** `fromAbortSignal()` ending a stream of ticks when the request is cancelled. */
  @Get('ticks')
  @RequestTimeout(250)
  ticks(@Query('tag') tag: string): Promise<unknown> {
    return settle(
      tag,
      lastValueFrom(timer(0, 20).pipe(takeUntil(fromAbortSignal(this.cancellation.signal))), {
        defaultValue: 'no tick',
      }),
    );
  }
}

class WorkersController {
  @MessagePattern('never')
  never(): Observable<never> {
    return NEVER;
  }

  @MessagePattern('stock')
  stock(@Payload() sku: string): Observable<number> {
    return sku === 'ok' ? of(7) : NEVER;
  }
}

/** A TCP port that was free a moment ago (the TCP transport reports no port it bound to 0). */
async function freePort(): Promise<number> {
  const server = net.createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function reasonOf(tag: string): CancellationError {
  const outcome = outcomes.get(tag);
  // The CancellationError itself, not an error caused by it (nor RxJS's EmptyError).
  if (!(outcome instanceof CancellationError))
    throw new Error(`${tag} did not end with a CancellationError: ${String(outcome)}`);
  return outcome;
}

let workers: INestMicroservice;
let workersPort = 0;

beforeAll(async () => {
  slow.server.listen(0, '127.0.0.1');
  await once(slow.server, 'listening');
  const base = `http://127.0.0.1:${(slow.server.address() as AddressInfo).port}`;
  slow.url = `${base}/slow`;
  workersPort = await freePort();
  process.env.PRICING_URL = base;
  process.env.INVENTORY_PORT = String(workersPort);
  workers = await NestFactory.createMicroservice<MicroserviceOptions>(
    rootModule({ controllers: [WorkersController] }),
    { transport: Transport.TCP, options: { host: '127.0.0.1', port: workersPort }, logger: new LogCapture() },
  );
  await workers.listen();
});

afterAll(async () => {
  await workers.close();
  slow.server.closeAllConnections();
  await new Promise<void>((resolve) => slow.server.close(() => resolve()));
});

describe.each(ADAPTERS)('RxJS: takeUntilCancelled() and fromAbortSignal() (%s)', (adapter) => {
  let t: TestApp;
  let seq = 0;
  const tag = (name: string) => `${adapter}-${name}-${++seq}`;

  beforeEach(async () => {
    t = await createApp(
      adapter,
      rootModule({
        imports: [
          CancellationModule.forRoot(),
          HttpModule,
          ClientsModule.register([
            { name: 'WORKERS', transport: Transport.TCP, options: { host: '127.0.0.1', port: workersPort } },
          ]),
        ],
        controllers: [RxController],
      }),
    );
  });

  afterEach(async () => {
    await t.close();
    expect(t.logs.errors).toEqual([]);
  });

  it('HttpService: the budget rejects lastValueFrom with the timeout, 504, and aborts the HTTP call', async () => {
    const id = tag('budget');
    const abandoned = slow.abandoned;
    const response = await request(t.port, `/rx/http?tag=${id}`);
    expect(response.status).toBe(504);
    expect(reasonOf(id).kind).toBe('timeout');
    await waitFor(() => slow.abandoned > abandoned, { message: 'the HTTP call to be aborted' });
  });

  it('HttpService: a client hanging up rejects with client-disconnected and aborts the HTTP call', async () => {
    const id = tag('hang-up');
    const received = slow.received;
    const abandoned = slow.abandoned;
    const client = startRequest(t.port, `/rx/http?tag=${id}`);
    await waitFor(() => slow.received > received, { message: 'the HTTP call to arrive' });
    client.abort();
    await waitFor(() => outcomes.has(id), { message: 'the call to end' });
    expect(reasonOf(id).kind).toBe('client-disconnected');
    await waitFor(() => slow.abandoned > abandoned, { message: 'the HTTP call to be aborted' });
  });

  it('HttpService: shutdown rejects with the shutdown, 503', async () => {
    const id = tag('shutdown');
    const received = slow.received;
    const client = startRequest(t.port, `/rx/http?tag=${id}`);
    await waitFor(() => slow.received > received, { message: 'the HTTP call to arrive' });
    await t.close();
    expect((await client.response()).status).toBe(503);
    expect(reasonOf(id).kind).toBe('shutdown');
  });

  it('HttpService: an Observable returned to Nest ends with 504 on its budget', async () => {
    const abandoned = slow.abandoned;
    const response = await request(t.port, '/rx/http-observable');
    expect(response.status).toBe(504);
    await waitFor(() => slow.abandoned > abandoned, { message: 'the HTTP call to be aborted' });
  });

  it('ClientProxy: the budget rejects with the timeout, 504; a hang-up with client-disconnected', async () => {
    const budget = tag('proxy-budget');
    expect((await request(t.port, `/rx/client-proxy?tag=${budget}`)).status).toBe(504);
    expect(reasonOf(budget).kind).toBe('timeout');

    const hangUp = tag('proxy-hang-up');
    const client = startRequest(t.port, `/rx/client-proxy?tag=${hangUp}`);
    await waitFor(() => started.has(hangUp), { message: 'the handler to start' });
    client.abort();
    await waitFor(() => outcomes.has(hangUp), { message: 'the call to end' });
    expect(reasonOf(hangUp).kind).toBe('client-disconnected');
  });

  it("takes a signal of the caller's own, and errors with its reason", async () => {
    const response = await request(t.port, '/rx/own-signal');
    expect(response.json).toEqual({ ended: 'given up by the handler' });
  });

  it('passes the values of a call that completes, and leaves no listener behind', async () => {
    const response = await request(t.port, '/rx/completes');
    expect(response.json).toEqual({ value: 'done', added: 1, left: 0 });
  });

  it('fromAbortSignal() ends a stream with takeUntil() when the budget runs out', async () => {
    const id = tag('ticks');
    const response = await request(t.port, `/rx/ticks?tag=${id}`);
    // takeUntil() completes the stream: the handler got its last tick, and the request still timed out.
    expect(outcomes.get(id)).toEqual({ value: expect.any(Number) });
    expect(response.status).toBe(504);
  });
});

describe('fromAbortSignal() and takeUntilCancelled() outside a request', () => {
  it('fromAbortSignal() emits the reason once and completes, at once for an aborted signal', async () => {
    const controller = new AbortController();
    const seen: unknown[] = [];
    const done = lastValueFrom(fromAbortSignal(controller.signal).pipe(map((reason) => seen.push(reason))));
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(1);
    const reason = new CancellationError('manual', 'stop');
    controller.abort(reason);
    await done;
    expect(seen).toEqual([reason]);
    await expect(lastValueFrom(fromAbortSignal(controller.signal))).resolves.toBe(reason);
  });

  it('fromAbortSignal() removes its listener when unsubscribed', () => {
    const controller = new AbortController();
    const subscription = fromAbortSignal(controller.signal).subscribe();
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(1);
    subscription.unsubscribe();
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
  });

  it('takeUntilCancelled() without a signal and without a request passes everything through', async () => {
    await expect(lastValueFrom(of(1, 2, 3).pipe(takeUntilCancelled()))).resolves.toBe(3);
  });

  it('takeUntilCancelled(signal) errors at once when the signal is already aborted', async () => {
    const reason = new CancellationError('shutdown');
    await expect(lastValueFrom(NEVER.pipe(takeUntilCancelled(AbortSignal.abort(reason))))).rejects.toBe(
      reason,
    );
  });
});

describe.each(ADAPTERS)('the RxJS recipe of docs/recipes.md (%s)', (adapter) => {
  let t: TestApp;

  beforeEach(async () => {
    t = await createApp(adapter, QuotesModule);
  });

  afterEach(async () => {
    await t.close();
    expect(t.logs.errors).toEqual([]);
  });

  it('answers from HttpService and the ClientProxy', async () => {
    const response = await request(t.port, '/quotes/ok');
    expect(response.json).toEqual({ sku: 'ok', price: 42, stock: 7 });
  });

  it('a hang-up aborts the HTTP call and stops waiting for the microservice', async () => {
    const received = slow.received;
    const abandoned = slow.abandoned;
    const client = startRequest(t.port, '/quotes/slow');
    await waitFor(() => slow.received > received, { message: 'the pricing call to arrive' });
    client.abort();
    await waitFor(() => slow.abandoned > abandoned, { message: 'the pricing call to be aborted' });
    await waitFor(() => t.app.get(CancellationRegistry).inFlight().length === 0, {
      message: 'the request to leave the registry',
    });
    const lines = t.logs.inContext('Cancellation').map((line) => line.message);
    expect(lines.some((line) => /^GET \/quotes\/:sku .*cancelled \(client-disconnected\)/.test(line))).toBe(
      true,
    );
  });

  it('a shutdown answers 503 while both calls wait', async () => {
    const received = slow.received;
    const client = startRequest(t.port, '/quotes/slow');
    await waitFor(() => slow.received > received, { message: 'the pricing call to arrive' });
    await t.close();
    expect((await client.response()).status).toBe(503);
  });
});
