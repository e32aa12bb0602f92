import 'reflect-metadata';
import { ApolloDriver } from '@nestjs/apollo';
import type { ApolloDriverConfig } from '@nestjs/apollo';
import { Controller, Get, Param, UseInterceptors } from '@nestjs/common';
import { Args, GraphQLModule, Query, Resolver } from '@nestjs/graphql';
import { setTimeout as delay } from 'node:timers/promises';
import {
  CancellationInterceptor,
  CancellationModule,
  CancellationRegistry,
  CancellationService,
  RequestTimeout,
} from 'nestjs-cancellation';
import type { CancelledEvent, SettledEvent } from 'nestjs-cancellation';
import { ADAPTERS, createApp, rootModule, sleep, startRequest, waitFor } from './utils/harness.js';
import type { AdapterName, TestApp } from './utils/harness.js';

const started = new Set<string>();
const settled = new Set<string>();

/** What the README advises for Nest 11 gateways, put on a controller too: under the global interceptor. */
@Controller('twice')
@UseInterceptors(CancellationInterceptor)
class TwiceController {
  constructor(private readonly cancellation: CancellationService) {}

  @Get('work/:tag')
  async work(@Param('tag') tag: string): Promise<string> {
    started.add(tag);
    try {
      return await delay(10_000, 'done', { signal: this.cancellation.signal });
    } finally {
      settled.add(tag);
    }
  }

  @Get('budget/:tag')
  @RequestTimeout(100)
  budget(@Param('tag') tag: string): Promise<string> {
    return this.work(tag);
  }

  @Get('quick')
  quick(): { correlationId: string | undefined } {
    return { correlationId: this.cancellation.correlationId };
  }
}

/** Records the module's events, per request id. */
function recordEvents(t: TestApp): { cancelled: CancelledEvent[]; settled: SettledEvent[] } {
  const registry = t.app.get(CancellationRegistry);
  const events = { cancelled: [] as CancelledEvent[], settled: [] as SettledEvent[] };
  registry.onCancelled((event) => events.cancelled.push(event));
  registry.onSettled((event) => events.settled.push(event));
  return events;
}

function verboseLines(t: TestApp, id: string): string[] {
  return t.logs
    .inContext('Cancellation')
    .map((line) => line.message)
    .filter((line) => line.includes(id));
}

describe.each(ADAPTERS)('the interceptor applied twice (%s)', (adapter: AdapterName) => {
  let t: TestApp;

  beforeEach(async () => {
    t = await createApp(
      adapter,
      rootModule({ imports: [CancellationModule.forRoot()], controllers: [TwiceController] }),
    );
  });
  afterEach(async () => {
    await t.close();
    expect(t.logs.errors).toEqual([]);
  });

  it('one hang-up: one registry entry, one cancelled event, one settled event, one verbose line', async () => {
    const events = recordEvents(t);
    const id = `${adapter}-hang-up`;
    const client = startRequest(t.port, `/twice/work/${id}`, { headers: { 'x-request-id': id } });
    await waitFor(() => started.has(id), { message: 'the handler to start' });
    expect(
      t.app
        .get(CancellationRegistry)
        .inFlight()
        .map((work) => work.correlationId),
    ).toEqual([id]);
    client.abort();
    await waitFor(() => settled.has(id) && events.settled.length > 0, { message: 'the handler to settle' });
    await sleep(50);
    expect(events.cancelled.map((event) => [event.correlationId, event.kind])).toEqual([
      [id, 'client-disconnected'],
    ]);
    expect(events.settled.map((event) => event.correlationId)).toEqual([id]);
    expect(verboseLines(t, id)).toHaveLength(1);
    expect(t.app.get(CancellationRegistry).inFlight()).toEqual([]);
  });

  it('one budget: one 504, one cancelled event', async () => {
    const events = recordEvents(t);
    const id = `${adapter}-budget`;
    const response = await startRequest(t.port, `/twice/budget/${id}`, {
      headers: { 'x-request-id': id },
    }).response();
    expect(response.status).toBe(504);
    await waitFor(() => settled.has(id), { message: 'the handler to settle' });
    await sleep(50);
    expect(events.cancelled.map((event) => [event.correlationId, event.kind])).toEqual([[id, 'timeout']]);
    expect(verboseLines(t, id)).toHaveLength(1);
  });

  it('an answered request runs in the one scope', async () => {
    const response = await startRequest(t.port, '/twice/quick', {
      headers: { 'x-request-id': `${adapter}-quick` },
    }).response();
    expect(response.json).toEqual({ correlationId: `${adapter}-quick` });
    expect(t.app.get(CancellationRegistry).inFlight()).toEqual([]);
  });
});

/** A resolver class with the interceptor on it, under the global one. */
@Resolver()
@UseInterceptors(CancellationInterceptor)
class TwiceResolver {
  constructor(private readonly cancellation: CancellationService) {}

  @Query(() => String)
  async slow(@Args('tag') tag: string): Promise<string> {
    started.add(tag);
    try {
      return await delay(10_000, 'done', { signal: this.cancellation.signal });
    } finally {
      settled.add(tag);
    }
  }
}

describe('the interceptor applied twice to a GraphQL resolver (Apollo on Express)', () => {
  it('one hang-up: one cancelled event, one verbose line, the resolver run once', async () => {
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
        providers: [TwiceResolver],
      }),
    );
    try {
      const events = recordEvents(t);
      const id = 'graphql-hang-up';
      const client = startRequest(t.port, '/graphql', {
        method: 'POST',
        headers: { 'x-request-id': id },
        body: { query: `{ slow(tag: "${id}") }` },
      });
      await waitFor(() => started.has(id), { message: 'the resolver to start' });
      client.abort();
      await waitFor(() => settled.has(id) && events.settled.length > 0, {
        message: 'the resolver to settle',
      });
      await sleep(50);
      expect(events.cancelled.map((event) => [event.correlationId, event.kind])).toEqual([
        [id, 'client-disconnected'],
      ]);
      expect(events.settled).toHaveLength(1);
      expect(verboseLines(t, id)).toHaveLength(1);
    } finally {
      await t.close();
    }
    expect(t.logs.errors).toEqual([]);
  });
});
