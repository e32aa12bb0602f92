import 'reflect-metadata';
import { ApolloDriver } from '@nestjs/apollo';
import type { ApolloDriverConfig } from '@nestjs/apollo';
import { Inject } from '@nestjs/common';
import {
  Args,
  Context,
  Field,
  GraphQLModule,
  Int,
  ObjectType,
  Parent,
  Query,
  ResolveField,
  Resolver,
} from '@nestjs/graphql';
import http from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { setTimeout as delay } from 'node:timers/promises';
import {
  CancellationModule,
  CancellationService,
  RequestSignal,
  RequestTimeout,
  isCancellationError,
} from 'nestjs-cancellation';
import type { CancellationError, CancellationModuleOptions } from 'nestjs-cancellation';
import { createApp, request, rootModule, startRequest, waitFor } from './utils/harness.js';
import type { RawResponse, TestApp } from './utils/harness.js';

/** What a resolver saw of its request. */
interface Probe {
  started: boolean;
  finished: boolean;
  signal: AbortSignal | undefined;
  /** What `@RequestSignal()` resolved to in the same resolver. */
  paramSignal: AbortSignal | undefined;
  requestId: string | undefined;
  error: unknown;
  /** The HTTP response the resolver's operation is answered on (Express's `req.res`). */
  response: ServerResponse | undefined;
  /** How many of the response's `'close'` listeners are the library's (`onResponseClose` of the scope). */
  ownCloseListeners: number;
}

const probes = new Map<string, Probe>();
function probe(tag: string): Probe {
  let found = probes.get(tag);
  if (found === undefined) {
    found = {
      started: false,
      finished: false,
      signal: undefined,
      paramSignal: undefined,
      requestId: undefined,
      error: undefined,
      response: undefined,
      ownCloseListeners: 0,
    };
    probes.set(tag, found);
  }
  return found;
}

/** The `'close'` listeners of a response that are the library's shared one, by its function's name. */
function ownCloseListeners(response: ServerResponse): number {
  return response.listeners('close').filter((listener) => listener.name === 'onResponseClose').length;
}

/** The GraphQL context Nest's Apollo driver builds by default. */
interface GqlContext {
  req: IncomingMessage & { res: ServerResponse };
}

@ObjectType()
class Report {
  @Field()
  tag!: string;
}

@Resolver(() => Report)
class WorkResolver {
  constructor(@Inject(CancellationService) private readonly cancellation: CancellationService) {}

  /** Works for `ms` on a timer that honours the request's signal, then answers its tag. */
  @Query(() => String, { nullable: true })
  work(
    @Args('tag') tag: string,
    @Args('ms', { type: () => Int }) ms: number,
    @Context() context: GqlContext,
    @RequestSignal() paramSignal: AbortSignal,
  ): Promise<string> {
    return this.doWork(tag, ms, context, paramSignal);
  }

  /** The same work with a budget of its own. */
  @Query(() => String, { nullable: true })
  @RequestTimeout(150)
  hurried(
    @Args('tag') tag: string,
    @Args('ms', { type: () => Int }) ms: number,
    @Context() context: GqlContext,
    @RequestSignal() paramSignal: AbortSignal,
  ): Promise<string> {
    return this.doWork(tag, ms, context, paramSignal);
  }

  @Query(() => Report)
  report(@Args('tag') tag: string): Report {
    return { tag };
  }

  /** A field resolver (the module enables interceptors on field resolvers), working for 50 ms. */
  @ResolveField(() => String)
  detail(
    @Parent() report: Report,
    @Context() context: GqlContext,
    @RequestSignal() paramSignal: AbortSignal,
  ): Promise<string> {
    return this.doWork(`${report.tag}-detail`, 50, context, paramSignal);
  }

  /** Works for `ms` without looking at its signal: it goes on after its request is cancelled. */
  @Query(() => String, { nullable: true })
  async stubborn(@Args('tag') tag: string, @Args('ms', { type: () => Int }) ms: number): Promise<string> {
    const record = probe(tag);
    record.started = true;
    record.signal = this.cancellation.signal;
    await delay(ms);
    record.finished = true;
    return tag;
  }

  /** Reads nothing of the cancellation. */
  @Query(() => String)
  hello(): string {
    return 'hello';
  }

  private async doWork(
    tag: string,
    ms: number,
    context: GqlContext,
    paramSignal: AbortSignal,
  ): Promise<string> {
    const record = probe(tag);
    record.started = true;
    record.signal = this.cancellation.signal;
    record.paramSignal = paramSignal;
    record.requestId = this.cancellation.requestId;
    record.response = context.req.res;
    record.ownCloseListeners = ownCloseListeners(context.req.res);
    try {
      await delay(ms, undefined, { signal: record.signal });
    } catch (err) {
      record.error = err;
      throw err;
    }
    record.finished = true;
    return tag;
  }
}

interface GraphQLError {
  readonly message: string;
  readonly path?: readonly string[];
  readonly extensions?: { readonly code?: string; readonly kind?: string };
}

interface GraphQLBody {
  readonly data?: Record<string, unknown> | null;
  readonly errors?: readonly GraphQLError[];
}

/** The probe of the resolver call `tag`, once it has started. */
function started(tag: string): Promise<Probe> {
  return waitFor(() => (probes.get(tag)?.started ? probes.get(tag) : undefined), {
    message: `resolver ${tag} to start`,
  });
}

function post(port: number, query: string, headers: Record<string, string> = {}) {
  return startRequest(port, '/graphql', { method: 'POST', body: { query }, headers });
}

function bodyOf(response: RawResponse): GraphQLBody {
  return response.json as GraphQLBody;
}

function reasonOf(record: Probe): CancellationError | undefined {
  return record.signal?.reason as CancellationError | undefined;
}

/** An Express application serving `WorkResolver` with Nest's Apollo driver, its default context included. */
function graphQLApp(options: CancellationModuleOptions): Promise<TestApp> {
  return createApp(
    'express',
    rootModule({
      imports: [
        CancellationModule.forRoot(options),
        GraphQLModule.forRoot<ApolloDriverConfig>({
          driver: ApolloDriver,
          autoSchemaFile: true,
          graphiql: false,
          fieldResolverEnhancers: ['interceptors'],
          // Apollo drains its HTTP server (waiting up to 10 s for requests in flight) when it stops; by
          // default that is in onModuleDestroy, before the shutdown hooks that cancel those requests.
          stopOnApplicationShutdown: true,
        }),
      ],
      providers: [WorkResolver],
    }),
  );
}

describe('GraphQL resolvers (Apollo driver on Express)', () => {
  let t: TestApp;
  let cancellation: CancellationService;

  beforeEach(async () => {
    t = await graphQLApp({ shutdownTimeoutMs: 4000, deadlineHeader: 'x-request-timeout-ms' });
    cancellation = t.app.get(CancellationService);
  });

  afterEach(async () => {
    await t.close();
    expect(t.logs.errors).toEqual([]);
  });

  it('aborts the resolvers of a client that hangs up, without an error log', async () => {
    const events: string[] = [];
    cancellation.onCancelled((event) =>
      events.push(`cancelled ${event.kind} ${event.method} ${event.route}`),
    );
    cancellation.onSettled((event) => events.push(`settled ${event.kind}`));
    const client = post(t.port, '{ work(tag: "gone-1", ms: 10000) }');
    const record = await started('gone-1');
    expect(cancellation.inFlight()).toHaveLength(1);

    client.abort();
    await waitFor(() => record.error, { message: 'the resolver to fail' });
    expect(isCancellationError(record.error)).toBe(true);
    expect(reasonOf(record)?.kind).toBe('client-disconnected');
    expect(record.finished).toBe(false);
    await waitFor(() => cancellation.inFlight().length === 0, { message: 'the registry to empty' });
    expect(ownCloseListeners(record.response as ServerResponse)).toBe(0);
    expect(events).toEqual(['cancelled client-disconnected POST /graphql', 'settled client-disconnected']);

    const line = t.logs
      .inContext('Cancellation')
      .find((entry) => entry.message.includes('client-disconnected'));
    expect(line?.level).toBe('verbose');
    expect(line?.message).toMatch(/^POST \/graphql \[[^\]]+\] cancelled \(client-disconnected\)/);
    expect(t.logs.errors).toEqual([]);
  });

  it('lists a cancelled request until its last resolver settles, and reports how long that took', async () => {
    const settled: number[] = [];
    cancellation.onSettled((event) => settled.push(event.settledAfterMs));
    const client = post(
      t.port,
      '{ stubborn(tag: "stubborn-1", ms: 400) quick: work(tag: "stubborn-q", ms: 5000) }',
    );
    const record = await started('stubborn-1');
    await started('stubborn-q');

    client.abort();
    const entry = await waitFor(() =>
      cancellation.inFlight().find((request) => request.cancelled !== undefined),
    );
    expect(entry).toMatchObject({ route: '/graphql', cancelled: 'client-disconnected' });
    expect(cancellation.inFlight()).toHaveLength(1);
    expect(record.finished).toBe(false);

    await waitFor(() => cancellation.inFlight().length === 0, { message: 'the stubborn resolver to settle' });
    expect(record.finished).toBe(true);
    expect(settled).toHaveLength(1);
    // It went on for most of its 400 ms after the abort (generous bound: only its order matters).
    expect(settled[0]).toBeGreaterThan(100);
  });

  it('aborts a query in flight on app.close() and answers it with a SERVICE_UNAVAILABLE error', async () => {
    const agent = new http.Agent({ keepAlive: true });
    const client = startRequest(t.port, '/graphql', {
      method: 'POST',
      body: { query: '{ work(tag: "shutdown-1", ms: 10000) }' },
      agent,
    });
    const record = await started('shutdown-1');

    const closeMs = await t.close();
    // Generous: without the cancellation, close() would wait out the 10 s resolver.
    expect(closeMs).toBeLessThan(3000);
    expect(reasonOf(record)?.kind).toBe('shutdown');
    expect(isCancellationError(record.error)).toBe(true);
    expect(record.finished).toBe(false);

    const response = await client.response();
    agent.destroy();
    expect(response.status).toBe(200);
    expect(response.headers['retry-after']).toBe('1');
    expect(response.headers.connection).toBe('close');
    const body = bodyOf(response);
    expect(body.data).toEqual({ work: null });
    expect(body.errors).toHaveLength(1);
    expect(body.errors?.[0]).toMatchObject({
      path: ['work'],
      message: expect.stringContaining('shutting down') as unknown,
      extensions: { code: 'SERVICE_UNAVAILABLE', kind: 'shutdown' },
    });
  });

  it('lets a query in flight finish during the grace period, closing its connection', async () => {
    await t.close();
    t = await graphQLApp({ shutdownGracePeriodMs: 3000, shutdownTimeoutMs: 4000 });
    cancellation = t.app.get(CancellationService);
    const agent = new http.Agent({ keepAlive: true });
    const client = startRequest(t.port, '/graphql', {
      method: 'POST',
      body: { query: '{ work(tag: "drain-1", ms: 300) }' },
      agent,
    });
    const record = await started('drain-1');

    const closeMs = await t.close();
    const response = await client.response();
    agent.destroy();
    expect(bodyOf(response)).toEqual({ data: { work: 'drain-1' } });
    expect(response.headers.connection).toBe('close');
    expect(record.signal?.aborted).toBe(false);
    // It waited for the query (about 300 ms), not for the whole grace period.
    expect(closeMs).toBeLessThan(2500);
  });

  it('gives every resolver of one request (root fields, field resolvers) one signal and one registry entry', async () => {
    const client = post(
      t.port,
      '{ a: work(tag: "pair-a", ms: 300) b: work(tag: "pair-b", ms: 300) report(tag: "pair-r") { detail } }',
    );
    const [a, b, detail] = await Promise.all(['pair-a', 'pair-b', 'pair-r-detail'].map(started));

    expect(a.signal).toBeInstanceOf(AbortSignal);
    expect(b.signal).toBe(a.signal);
    expect(detail.signal).toBe(a.signal);
    expect(a.paramSignal).toBe(a.signal);
    expect(detail.paramSignal).toBe(a.signal);
    expect(a.signal).not.toBe(cancellation.shutdownSignal);
    expect(b.requestId).toBe(a.requestId);
    expect(detail.requestId).toBe(a.requestId);

    const inFlight = cancellation.inFlight();
    expect(inFlight).toHaveLength(1);
    expect(inFlight[0]).toMatchObject({ id: a.requestId, method: 'POST', route: '/graphql' });
    // One listener on the response, however many resolvers run.
    expect(b.response).toBe(a.response);
    expect([a, b, detail].map((record) => record.ownCloseListeners)).toEqual([1, 1, 1]);

    const response = await client.response();
    expect(bodyOf(response)).toEqual({
      data: { a: 'pair-a', b: 'pair-b', report: { detail: 'pair-r-detail' } },
    });
    expect(a.signal?.aborted).toBe(false);
  });

  it('leaves no registry entry and no listener behind a completed query', async () => {
    const response = await request(t.port, '/graphql', {
      method: 'POST',
      body: { query: '{ hello done: work(tag: "done-1", ms: 1) }' },
    });
    expect(bodyOf(response)).toEqual({ data: { hello: 'hello', done: 'done-1' } });
    const record = probes.get('done-1') as Probe;
    const served = record.response as ServerResponse;

    await waitFor(() => served.closed, { message: 'the response to close' });
    expect(cancellation.inFlight()).toEqual([]);
    expect(record.ownCloseListeners).toBe(1);
    expect(ownCloseListeners(served)).toBe(0);
    expect(record.signal?.aborted).toBe(false);
    expect(t.logs.inContext('Cancellation')).toEqual([]);
  });

  it('times the request out on the budget of a resolver, failing the resolvers still running', async () => {
    const response = await post(
      t.port,
      '{ hurried(tag: "late-1", ms: 5000) quick: work(tag: "quick-1", ms: 10) slow: work(tag: "slow-1", ms: 5000) }',
    ).response();

    const body = bodyOf(response);
    expect(body.data).toEqual({ hurried: null, quick: 'quick-1', slow: null });
    const errors = [...(body.errors ?? [])].sort((x, y) => String(x.path).localeCompare(String(y.path)));
    expect(errors).toMatchObject([
      { path: ['hurried'], extensions: { code: 'GATEWAY_TIMEOUT', kind: 'timeout' } },
      { path: ['slow'], extensions: { code: 'GATEWAY_TIMEOUT', kind: 'timeout' } },
    ]);
    expect(reasonOf(probe('late-1'))?.message).toBe('The request ran out of time (150 ms)');
    expect(probe('slow-1').signal).toBe(probe('late-1').signal);
    await waitFor(() => cancellation.inFlight().length === 0, { message: 'the registry to empty' });
  });

  it("takes the caller's propagated budget, and refuses a request that arrives with none left", async () => {
    const late = await post(t.port, '{ work(tag: "header-1", ms: 5000) }', {
      'x-request-timeout-ms': '100',
    }).response();
    expect(bodyOf(late).errors).toMatchObject([
      {
        path: ['work'],
        message: 'The request ran out of time (100 ms)',
        extensions: { code: 'GATEWAY_TIMEOUT', kind: 'timeout' },
      },
    ]);
    expect(probe('header-1').finished).toBe(false);

    const spent = await post(t.port, '{ work(tag: "header-0", ms: 5000) }', {
      'x-request-timeout-ms': '0',
    }).response();
    expect(bodyOf(spent).errors).toMatchObject([
      { path: ['work'], extensions: { code: 'GATEWAY_TIMEOUT', kind: 'timeout' } },
    ]);
    // The resolver never ran.
    expect(probes.has('header-0')).toBe(false);
    await waitFor(() => cancellation.inFlight().length === 0, { message: 'the registry to empty' });
  });
});
