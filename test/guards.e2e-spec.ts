import 'reflect-metadata';
import { Body, Controller, Get, Injectable, Module, Param, Post, UseGuards } from '@nestjs/common';
import type {
  CanActivate,
  ExecutionContext,
  MiddlewareConsumer,
  NestMiddleware,
  NestModule,
  PipeTransform,
} from '@nestjs/common';
import { setTimeout as delay } from 'node:timers/promises';
import { CancellationModule, CancellationService, isCancellationError } from 'nestjs-cancellation';
import type { CancellationError } from 'nestjs-cancellation';
import { ADAPTERS, createApp, request, sleep, startRequest, waitFor } from './utils/harness.js';
import type { TestApp } from './utils/harness.js';

/** What the guard, the pipe, the middleware and the handler saw, per request tag. */
interface Seen {
  guardReason?: unknown;
  pipeId?: string;
  pipeReason?: unknown;
  middlewareSawRequestSignal?: boolean;
  handlerRan?: boolean;
}
const seen = new Map<string, Seen>();
function seenBy(tag: string): Seen {
  let entry = seen.get(tag);
  if (entry === undefined) seen.set(tag, (entry = {}));
  return entry;
}
function tagOf(context: ExecutionContext): string {
  return context.switchToHttp().getRequest<{ params: { tag: string } }>().params.tag;
}

// #region guard
/** A guard that awaits a slow authorization call, passing the request's signal on. */
@Injectable()
class SlowAuthGuard implements CanActivate {
  constructor(private readonly cancellation: CancellationService) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    const record = seenBy(tagOf(context));
    try {
      await delay(5_000, undefined, { signal: this.cancellation.signal }); // the auth call
      return true;
    } catch (err) {
      record.guardReason = this.cancellation.signal.reason;
      throw err; // answered as the cancellation it is: 503 at shutdown, nothing for a client gone
    }
  }
}
// #endregion guard

/** Sleeps without a signal, then checks. */
@Injectable()
class CheckingGuard implements CanActivate {
  constructor(private readonly cancellation: CancellationService) {}

  async canActivate(): Promise<boolean> {
    await sleep(300);
    this.cancellation.throwIfCancelled();
    return true;
  }
}

/** Fails the ordinary way. */
@Injectable()
class BrokenGuard implements CanActivate {
  canActivate(): boolean {
    throw new Error('the auth service is down');
  }
}

/** A pipe that awaits a lookup with the request's signal. */
@Injectable()
class SlowLookupPipe implements PipeTransform<string, Promise<string>> {
  constructor(private readonly cancellation: CancellationService) {}

  async transform(tag: string): Promise<string> {
    const record = seenBy(tag);
    record.pipeId = this.cancellation.correlationId;
    try {
      await delay(5_000, undefined, { signal: this.cancellation.signal });
    } catch (err) {
      record.pipeReason = this.cancellation.signal.reason;
      throw err;
    }
    return tag;
  }
}

/** Application middleware: sees the request's early signal, not the application's. */
@Injectable()
class ProbeMiddleware implements NestMiddleware {
  constructor(private readonly cancellation: CancellationService) {}

  use(request: { url?: string; originalUrl?: string }, _response: unknown, next: () => void): void {
    const tag = /\/guarded\/[^/]+\/([^/?]+)/.exec(request.originalUrl ?? request.url ?? '')?.[1];
    if (tag !== undefined) {
      seenBy(tag).middlewareSawRequestSignal =
        this.cancellation.signal !== this.cancellation.shutdownSignal && !this.cancellation.isCancelled;
    }
    next();
  }
}

@Controller('guarded')
class GuardedController {
  @Get('slow-auth/:tag')
  @UseGuards(SlowAuthGuard)
  slowAuth(@Param('tag') tag: string): string {
    seenBy(tag).handlerRan = true;
    return 'ok';
  }

  @Post('slow-auth/:tag')
  @UseGuards(SlowAuthGuard)
  slowAuthPost(@Param('tag') tag: string, @Body() body: unknown): unknown {
    seenBy(tag).handlerRan = true;
    return body;
  }

  @Get('checking/:tag')
  @UseGuards(CheckingGuard)
  checking(@Param('tag') tag: string): string {
    seenBy(tag).handlerRan = true;
    return 'ok';
  }

  @Get('broken/:tag')
  @UseGuards(BrokenGuard)
  broken(): string {
    return 'never';
  }

  @Get('pipe/:tag')
  piped(@Param('tag', SlowLookupPipe) tag: string): string {
    seenBy(tag).handlerRan = true;
    return 'ok';
  }
}

@Module({ imports: [CancellationModule.forRoot()], controllers: [GuardedController] })
class GuardedModule implements NestModule {
  configure(consumer: MiddlewareConsumer): void {
    consumer.apply(ProbeMiddleware).forRoutes('*');
  }
}

function kindOf(reason: unknown): string | undefined {
  return isCancellationError(reason) ? (reason as CancellationError).kind : undefined;
}

describe.each(ADAPTERS)('guards, pipes and middleware (%s)', (adapter) => {
  let t: TestApp;

  beforeEach(async () => {
    t = await createApp(adapter, GuardedModule);
  });
  afterEach(async () => {
    await t.close();
    expect(t.logs.errors.filter((line) => !line.text.includes('the auth service is down'))).toEqual([]);
  });

  it('a guard awaiting slow work with the signal stops when the client hangs up', async () => {
    const tag = `hang-up-${adapter}`;
    const client = startRequest(t.port, `/guarded/slow-auth/${tag}`);
    await sleep(100);
    client.abort();
    await waitFor(() => seenBy(tag).guardReason, { message: 'the guard to stop' });
    expect(kindOf(seenBy(tag).guardReason)).toBe('client-disconnected');
    await sleep(50);
    expect(seenBy(tag).handlerRan).toBeUndefined();
    expect(t.logs.errors).toEqual([]);
  });

  it('a guard of a POST (its body read first) stops when the client hangs up', async () => {
    const tag = `post-hang-up-${adapter}`;
    const client = startRequest(t.port, `/guarded/slow-auth/${tag}`, {
      method: 'POST',
      // About 90 kB (under Express's 100 kB JSON limit): several TCP reads.
      body: { report: 'quarterly', rows: Array.from({ length: 15_000 }, (_, i) => i) },
    });
    await sleep(150);
    client.abort();
    await waitFor(() => seenBy(tag).guardReason, { message: 'the guard to stop' });
    expect(kindOf(seenBy(tag).guardReason)).toBe('client-disconnected');
    expect(seenBy(tag).handlerRan).toBeUndefined();
  });

  it('a guard awaiting slow work with the signal stops at shutdown, and its client gets 503', async () => {
    const tag = `shutdown-${adapter}`;
    const client = startRequest(t.port, `/guarded/slow-auth/${tag}`);
    await sleep(100);
    const closing = t.close();
    const response = await client.response();
    expect(response.status).toBe(503);
    expect(response.headers['retry-after']).toBe('1');
    expect(kindOf(seenBy(tag).guardReason)).toBe('shutdown');
    expect(await closing).toBeLessThan(2_000);
    expect(seenBy(tag).handlerRan).toBeUndefined();
  });

  it('throwIfCancelled() in a guard answers 503 at shutdown, never 500', async () => {
    const tag = `checking-${adapter}`;
    const client = startRequest(t.port, `/guarded/checking/${tag}`);
    await sleep(100);
    const closing = t.close();
    const response = await client.response();
    expect(response.status).toBe(503);
    await closing;
    expect(seenBy(tag).handlerRan).toBeUndefined();
  });

  it('leaves every other guard failure to the application filters', async () => {
    const response = await request(t.port, `/guarded/broken/x`);
    expect(response.status).toBe(500);
    expect(t.logs.errors.some((line) => line.text.includes('the auth service is down'))).toBe(true);
  });

  it('a pipe sees the request itself: its correlation id, and a signal that aborts when the client hangs up', async () => {
    const tag = `pipe-${adapter}`;
    const client = startRequest(t.port, `/guarded/pipe/${tag}`, { headers: { 'x-request-id': tag } });
    await waitFor(() => seenBy(tag).pipeId, { message: 'the pipe to run' });
    expect(seenBy(tag).pipeId).toBe(tag);
    client.abort();
    await waitFor(() => seenBy(tag).pipeReason, { message: 'the pipe to stop' });
    expect(kindOf(seenBy(tag).pipeReason)).toBe('client-disconnected');
    expect(seenBy(tag).handlerRan).toBeUndefined();
  });

  // Express runs CancellationModule's middleware first; Fastify runs Nest's middleware (through
  // @fastify/middie) in an onRequest hook that Nest registers before any module can add its own, so there
  // application middleware sees the application's shutdown signal (as the README says).
  it(`middleware of the application's modules ${adapter === 'express' ? 'sees' : 'does not see'} the request's signal`, async () => {
    const tag = `middleware-${adapter}`;
    const client = startRequest(t.port, `/guarded/checking/${tag}`);
    await waitFor(() => seenBy(tag).middlewareSawRequestSignal !== undefined, {
      message: 'the middleware to run',
    });
    expect(seenBy(tag).middlewareSawRequestSignal).toBe(adapter === 'express');
    expect((await client.response()).status).toBe(200);
  });
});
