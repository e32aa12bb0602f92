import 'reflect-metadata';
import { ApolloDriver } from '@nestjs/apollo';
import type { ApolloDriverConfig } from '@nestjs/apollo';
import { Controller, Get, NotFoundException } from '@nestjs/common';
import { Args, GraphQLModule, Query, Resolver } from '@nestjs/graphql';
import { setTimeout as delay } from 'node:timers/promises';
import { CancellationModule, CancellationRegistry, RequestTimeout } from 'nestjs-cancellation';
import type { CancelledEvent } from 'nestjs-cancellation';
import { ADAPTERS, createApp, rootModule, startRequest } from './utils/harness.js';
import type { AdapterName, TestApp } from './utils/harness.js';

/**
 * Holds the event loop past a 50 ms budget, so that the deadline's timer cannot fire before the failure that
 * follows arrives: the budget is spent, and what fails next decides the answer.
 */
function outlastTheBudget(): void {
  const until = performance.now() + 100;
  while (performance.now() < until);
}

/** What fails once the budget is spent, by name. */
const FAILURES = {
  'not-found': () => new NotFoundException('no such report'),
  bug: () => new Error('a bug, late'),
  'timeout-error': () => new DOMException('The operation was aborted due to timeout', 'TimeoutError'),
  'socket-timeout': () =>
    new TypeError('fetch failed', {
      cause: Object.assign(new Error('Headers Timeout Error'), { code: 'UND_ERR_HEADERS_TIMEOUT' }),
    }),
} as const;
type Failure = keyof typeof FAILURES;

@Controller('late')
@RequestTimeout(50)
class LateController {
  @Get('not-found')
  notFound(): never {
    outlastTheBudget();
    throw FAILURES['not-found']();
  }

  @Get('bug')
  async bug(): Promise<never> {
    outlastTheBudget();
    throw FAILURES.bug();
  }

  @Get('timeout-error')
  async timeoutError(): Promise<never> {
    outlastTheBudget();
    throw FAILURES['timeout-error']();
  }

  /** A downstream's own deadline, as `timers/promises` reports it: an AbortError caused by a TimeoutError. */
  @Get('abort-timeout')
  async abortTimeout(): Promise<never> {
    const signal = AbortSignal.timeout(1);
    await delay(5);
    outlastTheBudget();
    await delay(1_000, undefined, { signal });
    throw new Error('unreachable');
  }

  @Get('socket-timeout')
  async socketTimeout(): Promise<never> {
    outlastTheBudget();
    throw FAILURES['socket-timeout']();
  }
}

describe.each(ADAPTERS)('a failure that arrives once the budget is spent (%s)', (adapter: AdapterName) => {
  let t: TestApp;
  const cancelled: CancelledEvent[] = [];

  beforeAll(async () => {
    t = await createApp(
      adapter,
      rootModule({ imports: [CancellationModule.forRoot()], controllers: [LateController] }),
    );
    t.app.get(CancellationRegistry).onCancelled((event) => cancelled.push(event));
  });
  afterEach(() => {
    cancelled.length = 0;
    t.logs.clear();
  });
  afterAll(async () => {
    await t.close();
  });

  it('a NotFoundException stays 404, and is no cancellation', async () => {
    const response = await startRequest(t.port, '/late/not-found').response();
    expect(response.status).toBe(404);
    expect(response.json).toMatchObject({ message: 'no such report' });
    expect(cancelled).toEqual([]);
    expect(t.logs.errors).toEqual([]);
  });

  it('a bug stays a 500, logged as the error it is', async () => {
    const response = await startRequest(t.port, '/late/bug').response();
    expect(response.status).toBe(500);
    expect(cancelled).toEqual([]);
    expect(t.logs.errors.some((line) => line.text.includes('a bug, late'))).toBe(true);
  });

  it.each(['timeout-error', 'abort-timeout', 'socket-timeout'])(
    'a downstream timeout (%s) is the timeout it is: 504',
    async (route) => {
      const response = await startRequest(t.port, `/late/${route}`).response();
      expect(response.status).toBe(504);
      expect(cancelled.map((event) => event.kind)).toEqual(['timeout']);
      expect(t.logs.errors).toEqual([]);
    },
  );
});

@Resolver()
class LateResolver {
  @Query(() => String)
  @RequestTimeout(50)
  async late(@Args('failure') failure: string): Promise<string> {
    outlastTheBudget();
    throw FAILURES[failure as Failure]();
  }
}

describe('a GraphQL resolver failing once the budget is spent (Apollo on Express)', () => {
  let t: TestApp;

  beforeAll(async () => {
    t = await createApp(
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
        providers: [LateResolver],
      }),
    );
  });
  afterAll(async () => {
    await t.close();
  });

  async function query(failure: Failure): Promise<{ message: string; extensions: Record<string, unknown> }> {
    const response = await startRequest(t.port, '/graphql', {
      method: 'POST',
      body: { query: `{ late(failure: "${failure}") }` },
    }).response();
    return (response.json as { errors: { message: string; extensions: Record<string, unknown> }[] })
      .errors[0];
  }

  it('a NotFoundException stays what it is', async () => {
    const error = await query('not-found');
    expect(error.message).toBe('no such report');
    expect(error.extensions.code).not.toBe('GATEWAY_TIMEOUT');
    expect(error.extensions.kind).toBeUndefined();
  });

  it('a downstream timeout is the request’s timeout', async () => {
    const error = await query('timeout-error');
    expect(error.extensions).toMatchObject({ code: 'GATEWAY_TIMEOUT', kind: 'timeout' });
  });
});
