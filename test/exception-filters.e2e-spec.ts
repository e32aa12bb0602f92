import 'reflect-metadata';
import { ApolloDriver } from '@nestjs/apollo';
import type { ApolloDriverConfig } from '@nestjs/apollo';
import { Catch, Controller, Get, HttpException, Injectable, Logger, Param, UseGuards } from '@nestjs/common';
import type { ArgumentsHost, CanActivate, ExceptionFilter, ExecutionContext } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import { Args, GraphQLModule, Query, Resolver } from '@nestjs/graphql';
import { ClientProxyFactory, MessagePattern, Transport } from '@nestjs/microservices';
import { once } from 'node:events';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import {
  CancellationError,
  CancellationException,
  CancellationModule,
  CancellationService,
  ClientClosedRequestException,
  DeadlineExceededException,
  RequestCancelledException,
  RequestTimeout,
  ServiceShuttingDownException,
} from 'nestjs-cancellation';
import { ADAPTERS, createApp, rootModule, sleep, startRequest, waitFor } from './utils/harness.js';
import type { AdapterName, TestApp } from './utils/harness.js';

/** What the guards and handlers saw, per request tag. */
const started = new Set<string>();
const stopped = new Map<string, unknown>();

/**
 * The catch-all filter of Nest's documentation, as applications register it with `app.useGlobalFilters()`: an
 * `HttpException` is answered with its status and body, anything else with 500 and an ERROR line.
 */
@Catch()
class AllExceptionsFilter implements ExceptionFilter {
  private readonly logger = new Logger('AllExceptionsFilter');

  constructor(private readonly adapterHost: HttpAdapterHost) {}

  catch(exception: unknown, host: ArgumentsHost): void {
    const { httpAdapter } = this.adapterHost;
    const http = host.switchToHttp();
    const isHttp = exception instanceof HttpException;
    const status = isHttp ? exception.getStatus() : 500;
    if (!isHttp) this.logger.error('Unhandled exception', (exception as Error)?.stack);
    const body = {
      statusCode: status,
      message: isHttp ? exception.message : 'Internal server error',
      path: httpAdapter.getRequestUrl(http.getRequest()) as string,
      envelope: 'app',
    };
    httpAdapter.reply(http.getResponse(), body, status);
  }
}

/** Awaits a slow authorization call with the request's signal, and lets its abort propagate. */
@Injectable()
class SlowAuthGuard implements CanActivate {
  constructor(private readonly cancellation: CancellationService) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    const tag = context.switchToHttp().getRequest<{ params: { tag: string } }>().params.tag;
    started.add(tag);
    try {
      await delay(10_000, undefined, { signal: this.cancellation.signal });
    } catch (err) {
      stopped.set(tag, err);
      throw err;
    }
    return true;
  }
}

/** Sleeps without a signal, then checks. */
@Injectable()
class CheckingGuard implements CanActivate {
  constructor(private readonly cancellation: CancellationService) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    started.add(context.switchToHttp().getRequest<{ params: { tag: string } }>().params.tag);
    await sleep(300);
    this.cancellation.throwIfCancelled();
    return true;
  }
}

@Controller('filtered')
class FilteredController {
  constructor(private readonly cancellation: CancellationService) {}

  @Get('slow-auth/:tag')
  @UseGuards(SlowAuthGuard)
  guarded(): string {
    return 'never';
  }

  @Get('checking/:tag')
  @UseGuards(CheckingGuard)
  checking(): string {
    return 'ok';
  }

  @Get('handler/:tag')
  async handler(@Param('tag') tag: string): Promise<string> {
    started.add(tag);
    try {
      return await delay(10_000, 'late', { signal: this.cancellation.signal });
    } catch (err) {
      stopped.set(tag, err);
      throw err;
    }
  }

  @Get('budget/:tag')
  @RequestTimeout(100)
  budget(@Param('tag') tag: string): Promise<string> {
    return this.handler(tag);
  }

  @Get('broken/:tag')
  broken(): never {
    throw new Error('an ordinary failure');
  }
}

describe.each(ADAPTERS)('an application with a catch-all exception filter (%s)', (adapter: AdapterName) => {
  let t: TestApp;
  let seq = 0;
  const tag = (name: string) => `${adapter}-${name}-${++seq}`;

  beforeEach(async () => {
    t = await createApp(
      adapter,
      rootModule({ imports: [CancellationModule.forRoot()], controllers: [FilteredController] }),
      {
        configure: (app) => {
          app.useGlobalFilters(new AllExceptionsFilter(app.get(HttpAdapterHost)));
        },
      },
    );
  });
  afterEach(async () => {
    await t.close();
  });

  /** The cancellation's verbose line, and no ERROR line at all. */
  function expectQuietCancellation(kind: string): void {
    expect(t.logs.errors).toEqual([]);
    const lines = t.logs.inContext('Cancellation').map((line) => line.message);
    expect(lines.some((line) => line.includes(`cancelled (${kind})`))).toBe(true);
  }

  it.each(['slow-auth', 'checking'])(
    'a %s guard cut by shutdown: 503 with Retry-After, not the filter’s 500',
    async (route) => {
      const id = tag(route);
      const client = startRequest(t.port, `/filtered/${route}/${id}`);
      await waitFor(() => started.has(id), { message: 'the guard to start' });
      const closing = t.close();
      const response = await client.response();
      expect(response.status).toBe(503);
      expect(response.headers['retry-after']).toBe('1');
      expect(response.headers.connection).toBe('close');
      expect(await closing).toBeLessThan(2_000);
      expectQuietCancellation('shutdown');
    },
  );

  it('a handler rethrowing its abort at shutdown: 503 with Retry-After, answered by the app’s filter', async () => {
    const id = tag('handler');
    const client = startRequest(t.port, `/filtered/handler/${id}`);
    await waitFor(() => started.has(id), { message: 'the handler to start' });
    const closing = t.close();
    const response = await client.response();
    expect(response.status).toBe(503);
    expect(response.headers['retry-after']).toBe('1');
    // The outcome reaches the application's filter as an HttpException, which answers it its own way.
    expect(response.json).toMatchObject({ statusCode: 503, envelope: 'app' });
    await closing;
    expect((stopped.get(id) as Error).name).toBe('AbortError');
    expectQuietCancellation('shutdown');
  });

  it('a handler out of time: 504', async () => {
    const id = tag('budget');
    const response = await startRequest(t.port, `/filtered/budget/${id}`).response();
    expect(response.status).toBe(504);
    expect(response.json).toMatchObject({ statusCode: 504, envelope: 'app' });
    expectQuietCancellation('timeout');
  });

  it.each(['slow-auth', 'handler'])(
    'a client that hangs up in %s: nothing logged as an error',
    async (route) => {
      const id = tag(route);
      const client = startRequest(t.port, `/filtered/${route}/${id}`);
      await waitFor(() => started.has(id), { message: 'the work to start' });
      client.abort();
      await waitFor(() => stopped.has(id), { message: 'the work to stop' });
      await waitFor(() => t.logs.inContext('Cancellation').length > 0, { message: 'the verbose line' });
      await sleep(50);
      expectQuietCancellation('client-disconnected');
    },
  );

  it('leaves every other failure to the application’s filter', async () => {
    const response = await startRequest(t.port, `/filtered/broken/${tag('broken')}`).response();
    expect(response.status).toBe(500);
    expect(response.json).toMatchObject({ envelope: 'app' });
    expect(t.logs.errors.map((line) => line.context)).toEqual(['AllExceptionsFilter']);
    t.logs.clear();
  });
});

/** What the application's filter of outcome exceptions caught. */
const caught: CancellationException[] = [];

// #region outcome-filter
/** Answers every cancellation its own way: a body of the application's, and a header. */
@Catch(CancellationException)
class OutcomeFilter implements ExceptionFilter {
  constructor(private readonly adapterHost: HttpAdapterHost) {}

  catch(exception: CancellationException, host: ArgumentsHost): void {
    caught.push(exception); // (what the test checks)
    const { httpAdapter } = this.adapterHost;
    const response = host.switchToHttp().getResponse<unknown>();
    // exception.kind: 'shutdown' | 'timeout' | 'client-disconnected' | 'manual'; exception.reason: the
    // CancellationError. A shutdown's response carries Retry-After and Connection: close already.
    httpAdapter.setHeader(response, 'x-cancelled', exception.kind);
    httpAdapter.reply(response, { cancelled: exception.kind, name: exception.name }, exception.getStatus());
  }
}
// #endregion outcome-filter

describe.each(ADAPTERS)('outcome exceptions an application catches (%s)', (adapter: AdapterName) => {
  let t: TestApp;
  let seq = 0;
  const tag = (name: string) => `${adapter}-outcome-${name}-${++seq}`;

  beforeEach(async () => {
    caught.length = 0;
    t = await createApp(
      adapter,
      rootModule({
        imports: [CancellationModule.forRoot({ timeoutStatus: 503, retryAfterSeconds: 7 })],
        controllers: [FilteredController],
      }),
      {
        configure: (app) => {
          app.useGlobalFilters(new OutcomeFilter(app.get(HttpAdapterHost)));
        },
      },
    );
  });
  afterEach(async () => {
    await t.close();
    expect(t.logs.errors).toEqual([]);
  });

  it('shutdown: a ServiceShuttingDownException, the response already carrying Retry-After', async () => {
    const id = tag('shutdown');
    const client = startRequest(t.port, `/filtered/handler/${id}`);
    await waitFor(() => started.has(id), { message: 'the handler to start' });
    const closing = t.close();
    const response = await client.response();
    await closing;
    expect(response.status).toBe(503);
    expect(response.headers['retry-after']).toBe('7');
    expect(response.headers['x-cancelled']).toBe('shutdown');
    expect(response.json).toEqual({ cancelled: 'shutdown', name: 'ServiceShuttingDownException' });
    const [exception] = caught as [ServiceShuttingDownException];
    expect(exception).toBeInstanceOf(ServiceShuttingDownException);
    expect(exception).toBeInstanceOf(HttpException);
    expect(exception.reason).toBeInstanceOf(CancellationError);
    expect(exception.reason.kind).toBe('shutdown');
    expect(exception.cause).toBe(exception.reason);
    expect(exception.retryAfterSeconds).toBe(7);
  });

  it('timeout: a DeadlineExceededException with the configured timeoutStatus', async () => {
    const response = await startRequest(t.port, `/filtered/budget/${tag('budget')}`).response();
    expect(response.status).toBe(503);
    expect(response.json).toEqual({ cancelled: 'timeout', name: 'DeadlineExceededException' });
    expect(caught).toHaveLength(1);
    expect(caught[0]).toBeInstanceOf(DeadlineExceededException);
    expect(caught[0].getStatus()).toBe(503);
  });

  it('client gone: a ClientClosedRequestException (499)', async () => {
    const id = tag('gone');
    const client = startRequest(t.port, `/filtered/handler/${id}`);
    await waitFor(() => started.has(id), { message: 'the handler to start' });
    client.abort();
    await waitFor(() => caught.length > 0, { message: 'the filter to run' });
    expect(caught[0]).toBeInstanceOf(ClientClosedRequestException);
    expect(caught[0].getStatus()).toBe(499);
    expect(caught[0].kind).toBe('client-disconnected');
  });

  it('an operator cancelling: a RequestCancelledException (503) with the message', async () => {
    const id = tag('manual');
    const client = startRequest(t.port, `/filtered/handler/${id}`, { headers: { 'x-request-id': id } });
    await waitFor(() => started.has(id), { message: 'the handler to start' });
    const { CancellationRegistry } = await import('nestjs-cancellation');
    const registry = t.app.get(CancellationRegistry);
    const listed = registry.inFlight().find((entry) => entry.correlationId === id);
    expect(registry.cancel(listed?.id ?? '', 'stopped by an operator')).toBe(1);
    const response = await client.response();
    expect(response.status).toBe(503);
    expect(response.json).toEqual({ cancelled: 'manual', name: 'RequestCancelledException' });
    expect(caught[0]).toBeInstanceOf(RequestCancelledException);
    expect(caught[0].message).toBe('stopped by an operator');
  });
});

/** A message guard that awaits slow work with `CancellationService.signal` (the application's, for a message). */
@Injectable()
class SlowMessageGuard implements CanActivate {
  constructor(private readonly cancellation: CancellationService) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    const { tag } = context.switchToRpc().getData<{ tag: string }>();
    started.add(tag);
    try {
      await delay(10_000, undefined, { signal: this.cancellation.signal });
    } catch (err) {
      stopped.set(tag, err);
      throw err;
    }
    return true;
  }
}

@Controller()
class MessageController {
  @MessagePattern('guarded')
  @UseGuards(SlowMessageGuard)
  guarded(): string {
    return 'never';
  }
}

/** A TCP port that was free a moment ago (the TCP transport reports no port it bound to 0). */
async function freePort(): Promise<number> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe.each(ADAPTERS)('a microservice message cancelled in its guard (hybrid on %s)', (adapter) => {
  it('ends without an ERROR line from Nest’s RPC exception handler', async () => {
    const port = await freePort();
    const t = await createApp(
      adapter,
      rootModule({ imports: [CancellationModule.forRoot()], controllers: [MessageController] }),
      {
        configure: async (app) => {
          app.connectMicroservice(
            { transport: Transport.TCP, options: { host: '127.0.0.1', port } },
            { inheritAppConfig: true },
          );
          await app.startAllMicroservices();
        },
      },
    );
    const client = ClientProxyFactory.create({
      transport: Transport.TCP,
      options: { host: '127.0.0.1', port },
    });
    try {
      const id = `${adapter}-rpc-guard`;
      const settled = new Promise<unknown>((resolve) =>
        client.send('guarded', { tag: id }).subscribe({
          next: resolve,
          error: resolve,
          complete: () => resolve('completed'),
        }),
      );
      await waitFor(() => started.has(id), { message: 'the guard to start' });
      await t.close();
      expect((stopped.get(id) as Error).name).toBe('AbortError');
      // The caller learns that the call may be retried elsewhere, not an empty answer.
      expect(await settled).toMatchObject({ kind: 'shutdown', retryable: true, statusCode: 503 });
      expect(t.logs.errors).toEqual([]);
      const lines = t.logs.inContext('Cancellation').map((line) => line.message);
      expect(lines).toContain('RPC message cancelled (shutdown) before its handler ran');
    } finally {
      await client.close();
      await t.close();
    }
  });
});

/** A resolver guard that awaits slow work with the request's signal (the early scope's, before the resolver). */
@Injectable()
class SlowResolverGuard implements CanActivate {
  constructor(private readonly cancellation: CancellationService) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    const tag = (context.getArgByIndex<{ tag: string }>(1) ?? { tag: '' }).tag;
    started.add(tag);
    try {
      await delay(10_000, undefined, { signal: this.cancellation.signal });
    } catch (err) {
      stopped.set(tag, err);
      throw err;
    }
    return true;
  }
}

@Resolver()
class GuardedResolver {
  @Query(() => String)
  @UseGuards(SlowResolverGuard)
  guarded(@Args('tag') tag: string): string {
    return tag;
  }
}

describe('a GraphQL resolver cancelled in its guard (Apollo on Express)', () => {
  it('fails with the SERVICE_UNAVAILABLE error at shutdown, without an ERROR line', async () => {
    const t = await createApp(
      'express',
      rootModule({
        imports: [
          CancellationModule.forRoot(),
          GraphQLModule.forRoot<ApolloDriverConfig>({
            driver: ApolloDriver,
            autoSchemaFile: true,
            stopOnApplicationShutdown: true,
          }),
        ],
        providers: [GuardedResolver, SlowResolverGuard],
      }),
    );
    try {
      const id = 'graphql-guard-shutdown';
      const client = startRequest(t.port, '/graphql', {
        method: 'POST',
        body: { query: `{ guarded(tag: "${id}") }` },
      });
      await waitFor(() => started.has(id), { message: 'the guard to start' });
      const closing = t.close();
      const response = await client.response();
      await closing;
      expect((stopped.get(id) as Error).name).toBe('AbortError');
      expect((response.json as { errors: unknown[] }).errors).toMatchObject([
        { path: ['guarded'], extensions: { code: 'SERVICE_UNAVAILABLE', kind: 'shutdown' } },
      ]);
      expect(t.logs.errors).toEqual([]);
    } finally {
      await t.close();
    }
  });
});
