import 'reflect-metadata';
import { Controller, Get, Injectable, Module, Query } from '@nestjs/common';
import type { CanActivate, ExecutionContext } from '@nestjs/common';
import { setTimeout as delay } from 'node:timers/promises';
import {
  CancellationError,
  CancellationModule,
  CancellationService,
  RequestSignal,
  RequestTimeout,
  isCancellationError,
} from 'nestjs-cancellation';
import type { CancelledEvent, InFlightRequest, SettledEvent } from 'nestjs-cancellation';
import { ADAPTERS, createApp, request, rootModule, sleep, startRequest, waitFor } from './utils/harness.js';
import type { TestApp } from './utils/harness.js';

/** What each request (by its `tag`) saw. */
const seen = new Map<string, Seen>();
interface Seen {
  id?: string;
  correlationId?: string;
  reason?: unknown;
  settled?: boolean;
}
function record(tag: string): Seen {
  let entry = seen.get(tag);
  if (entry === undefined) seen.set(tag, (entry = {}));
  return entry;
}

@Controller('jobs')
class JobsController {
  constructor(private readonly cancellation: CancellationService) {}

  /** Honours its signal: waits up to 10 s. */
  @Get('wait')
  async wait(@Query('tag') tag: string, @RequestSignal() signal: AbortSignal): Promise<string> {
    const entry = record(tag);
    entry.id = this.cancellation.requestId;
    entry.correlationId = this.cancellation.correlationId;
    try {
      await delay(10_000, undefined, { signal });
      return 'done';
    } catch (err) {
      entry.reason = signal.reason;
      throw err;
    } finally {
      entry.settled = true;
    }
  }

  /** Has a 5 s budget. */
  @Get('budgeted')
  @RequestTimeout(5_000)
  async budgeted(@RequestSignal() signal: AbortSignal): Promise<string> {
    await delay(10_000, undefined, { signal });
    return 'done';
  }

  /** Ignores its signal: goes on for `ms` after being called. */
  @Get('stubborn')
  async stubborn(@Query('tag') tag: string, @Query('ms') ms = '300'): Promise<string> {
    await sleep(Number(ms));
    record(tag).settled = true;
    return 'late';
  }
}

@Injectable()
class TokenStore {
  readonly operatorToken = 'let-me-in';
}

@Module({ providers: [TokenStore], exports: [TokenStore] })
class TokenModule {}

/** Lets a request through when it carries the operator's token (from another module: `admin.imports`). */
@Injectable()
class TokenGuard implements CanActivate {
  constructor(private readonly tokens: TokenStore) {}
  canActivate(context: ExecutionContext): boolean {
    const req = context.switchToHttp().getRequest<{ headers: Record<string, string | undefined> }>();
    return req.headers.authorization === `Bearer ${this.tokens.operatorToken}`;
  }
}

const AUTH = { authorization: 'Bearer let-me-in' };
/** A server-made request id. */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe.each(ADAPTERS)('in-flight registry (%s)', (adapter) => {
  let t: TestApp;
  let cancellation: CancellationService;
  const cancelled: CancelledEvent[] = [];
  const settled: SettledEvent[] = [];

  beforeAll(async () => {
    seen.clear();
    t = await createApp(
      adapter,
      rootModule({
        imports: [
          CancellationModule.forRoot({
            admin: { guard: TokenGuard, path: 'ops/cancellation', imports: [TokenModule] },
          }),
        ],
        controllers: [JobsController],
      }),
    );
    cancellation = t.app.get(CancellationService);
    cancellation.onCancelled((event) => cancelled.push(event));
    cancellation.onSettled((event) => settled.push(event));
  });
  afterAll(() => t.close());

  /** Waits until the registry lists a request that carried this `x-request-id` (its correlation id). */
  function listed(correlationId: string): Promise<InFlightRequest> {
    return waitFor(() => cancellation.inFlight().find((entry) => entry.correlationId === correlationId), {
      message: `${correlationId} in the registry`,
    });
  }

  it("lists a request in flight with the server's id, x-request-id as its correlation id, its route and its age", async () => {
    const handle = startRequest(t.port, '/jobs/wait?tag=list', { headers: { 'x-request-id': 'req-list-1' } });
    const entry = await listed('req-list-1');
    expect(entry).toMatchObject({
      id: expect.stringMatching(UUID),
      correlationId: 'req-list-1',
      method: 'GET',
      route: '/jobs/wait',
    });
    expect(entry.elapsedMs).toBeGreaterThanOrEqual(0);
    expect(Math.abs(entry.startedAt - Date.now())).toBeLessThan(5_000);
    expect(entry).not.toHaveProperty('remainingMs');
    expect(entry).not.toHaveProperty('cancelled');
    expect(record('list')).toMatchObject({ id: entry.id, correlationId: 'req-list-1' });
    handle.abort();
    await waitFor(() => record('list').settled, { message: 'the handler to stop' });
    expect(cancellation.inFlight().some((e) => e.id === entry.id)).toBe(false);
  });

  it('gives two requests that carry the same x-request-id two ids; cancel(id) stops only one', async () => {
    const first = startRequest(t.port, '/jobs/wait?tag=same-1', { headers: { 'x-request-id': 'same' } });
    const second = startRequest(t.port, '/jobs/wait?tag=same-2', { headers: { 'x-request-id': 'same' } });
    const both = await waitFor(
      () => {
        const entries = cancellation.inFlight().filter((entry) => entry.correlationId === 'same');
        return entries.length === 2 ? entries : undefined;
      },
      { message: 'both requests in the registry' },
    );
    expect(both[0].id).not.toBe(both[1].id);
    // The client's value never reaches cancel().
    expect(cancellation.cancel('same')).toBe(0);
    const target = both.find((entry) => entry.id === record('same-1').id) as InFlightRequest;
    expect(cancellation.cancel(target.id, 'Only this one')).toBe(1);
    expect((await first.response()).status).toBe(503);
    expect(record('same-2').reason).toBeUndefined();
    expect(cancellation.inFlight().filter((entry) => entry.correlationId === 'same')).toHaveLength(1);
    second.abort();
  });

  it('shows the remaining budget of a request that has one', async () => {
    const handle = startRequest(t.port, '/jobs/budgeted', { headers: { 'x-request-id': 'req-budget' } });
    const entry = await listed('req-budget');
    expect(entry.remainingMs).toBeGreaterThan(3_000);
    expect(entry.remainingMs).toBeLessThanOrEqual(5_000);
    handle.abort();
  });

  it.each([
    ['too long', 'x'.repeat(129)],
    ['a space', 'two words'],
    ['a slash', 'a/b'],
    ['a quote', 'a"b'],
  ])('keeps no correlation id when the request id header has %s', async (_what, value) => {
    const tag = `invalid-${_what}`;
    const handle = startRequest(t.port, `/jobs/wait?tag=${encodeURIComponent(tag)}`, {
      headers: { 'x-request-id': value },
    });
    const id = await waitFor(() => record(tag).id, { message: 'the handler to start' });
    expect(id).toMatch(UUID);
    expect(record(tag).correlationId).toBeUndefined();
    const entry = cancellation.inFlight().find((e) => e.id === id);
    expect(entry?.route).toBe('/jobs/wait');
    expect(entry).not.toHaveProperty('correlationId');
    handle.abort();
  });

  it('cancels one request by id: its client gets 503 with the message, its signal says manual', async () => {
    const target = startRequest(t.port, '/jobs/wait?tag=target', { headers: { 'x-request-id': 'target' } });
    const bystander = startRequest(t.port, '/jobs/wait?tag=bystander', {
      headers: { 'x-request-id': 'bystander' },
    });
    const { id } = await listed('target');
    const other = await listed('bystander');
    expect(cancellation.cancel(id, 'Stopped by the on-call engineer')).toBe(1);
    const response = await target.response();
    expect(response.status).toBe(503);
    expect(response.json).toMatchObject({ message: 'Stopped by the on-call engineer' });
    const reason = record('target').reason;
    expect(isCancellationError(reason)).toBe(true);
    expect((reason as CancellationError).kind).toBe('manual');
    // The other request goes on.
    expect(cancellation.inFlight().map((entry) => entry.id)).toContain(other.id);
    expect(record('bystander').reason).toBeUndefined();
    expect(cancellation.cancel(id)).toBe(0);
    expect(cancellation.cancel('no-such-request')).toBe(0);
    bystander.abort();
    expect(() => cancellation.cancel(other.id, 'x'.repeat(501))).toThrow(/at most 500 characters/);
  });

  it('reports every cancellation, then its handler settling, with the same id and correlation id', async () => {
    cancelled.length = 0;
    settled.length = 0;
    const handle = startRequest(t.port, '/jobs/wait?tag=events', { headers: { 'x-request-id': 'events-1' } });
    const { id } = await listed('events-1');
    handle.abort();
    await waitFor(() => settled.find((event) => event.id === id), { message: 'settled event' });
    expect(cancelled.filter((event) => event.id === id)).toEqual([
      expect.objectContaining({
        id,
        correlationId: 'events-1',
        kind: 'client-disconnected',
        method: 'GET',
        route: '/jobs/wait',
      }),
    ]);
    const event = settled.find((e) => e.id === id);
    expect(event?.correlationId).toBe('events-1');
    expect(event?.settledAfterMs).toBeGreaterThanOrEqual(0);
    expect(event?.settledAfterMs).toBeLessThan(1_000);
  });

  it('keeps listing a cancelled handler that ignores its signal until it settles, and says so', async () => {
    settled.length = 0;
    const handle = startRequest(t.port, '/jobs/stubborn?tag=stubborn&ms=400', {
      headers: { 'x-request-id': 'stubborn-1' },
    });
    const { id } = await listed('stubborn-1');
    handle.abort();
    const lingering = await waitFor(
      () => cancellation.inFlight().find((e) => e.id === id && e.cancelled !== undefined),
      { message: 'the cancelled handler to be listed as still running' },
    );
    expect(lingering.cancelled).toBe('client-disconnected');
    const event = await waitFor(() => settled.find((e) => e.id === id), {
      message: 'settled event',
    });
    expect(record('stubborn').settled).toBe(true);
    // It went on for the rest of its 400 ms after the hang-up.
    expect(event.settledAfterMs).toBeGreaterThan(150);
    expect(cancellation.inFlight().some((e) => e.id === id)).toBe(false);
  });

  describe('admin controller', () => {
    it('refuses a caller the guard rejects, without listing anything', async () => {
      const list = await request(t.port, '/ops/cancellation/requests');
      expect(list.status).toBe(403);
      expect(list.json).toEqual({ statusCode: 403, message: 'Forbidden resource', error: 'Forbidden' });
      const cancel = await request(t.port, '/ops/cancellation/requests/x/cancel', { method: 'POST' });
      expect(cancel.status).toBe(403);
    });

    it('lists the requests in flight (not its own) and cancels one by id', async () => {
      const handle = startRequest(t.port, '/jobs/wait?tag=admin', { headers: { 'x-request-id': 'admin-1' } });
      const { id } = await listed('admin-1');
      const list = await request(t.port, '/ops/cancellation/requests', {
        headers: { ...AUTH, 'x-request-id': 'operator-list' },
      });
      expect(list.status).toBe(200);
      const entries = list.json as InFlightRequest[];
      expect(entries.map((entry) => entry.id)).toContain(id);
      expect(entries.find((entry) => entry.id === id)?.correlationId).toBe('admin-1');
      expect(entries.map((entry) => entry.correlationId)).not.toContain('operator-list');
      // A correlation id is not an id: 404.
      const byCorrelation = await request(t.port, '/ops/cancellation/requests/admin-1/cancel', {
        method: 'POST',
        headers: AUTH,
      });
      expect(byCorrelation.status).toBe(404);
      const cancel = await request(t.port, `/ops/cancellation/requests/${id}/cancel`, {
        method: 'POST',
        headers: AUTH,
        body: { message: 'Stuck for too long' },
      });
      expect(cancel.status).toBe(200);
      expect(cancel.json).toEqual({ cancelled: 1 });
      const response = await handle.response();
      expect(response.status).toBe(503);
      expect(response.json).toMatchObject({ message: 'Stuck for too long' });
    });

    it('answers 404 for an unknown id and 400 for a bad message', async () => {
      const unknown = await request(t.port, '/ops/cancellation/requests/nobody/cancel', {
        method: 'POST',
        headers: AUTH,
      });
      expect(unknown.status).toBe(404);
      const handle = startRequest(t.port, '/jobs/wait?tag=bad', { headers: { 'x-request-id': 'bad-msg' } });
      const { id } = await listed('bad-msg');
      const bad = await request(t.port, `/ops/cancellation/requests/${id}/cancel`, {
        method: 'POST',
        headers: AUTH,
        body: { message: 42 },
      });
      expect(bad.status).toBe(400);
      expect(cancellation.inFlight().some((e) => e.id === id)).toBe(true);
      handle.abort();
    });
  });
});

describe('admin controller options', () => {
  it('is off by default', async () => {
    const t = await createApp(
      'express',
      rootModule({ imports: [CancellationModule.forRoot()], controllers: [JobsController] }),
    );
    try {
      expect((await request(t.port, '/cancellation/requests')).status).toBe(404);
    } finally {
      await t.close();
    }
  });

  it.each([
    [{}, /invalid option "admin.guard": undefined/],
    [{ guard: 'yes' }, /invalid option "admin.guard": "yes"/],
    [{ guard: { canActivate: 1 } }, /invalid option "admin.guard"/],
    [{ guard: TokenGuard, path: 'requests/:id' }, /invalid option "admin.path": "requests\/:id"/],
    [{ guard: TokenGuard, open: true }, /unknown option "admin.open"/],
    [null, /invalid option "admin": null/],
  ])('refuses to start with admin %j', (admin, message) => {
    expect(() =>
      CancellationModule.forRoot({ admin: admin as never as { guard: typeof TokenGuard } }),
    ).toThrow(message);
    expect(() =>
      CancellationModule.forRootAsync({
        admin: admin as never as { guard: typeof TokenGuard },
        useFactory: () => ({}),
      }),
    ).toThrow(message);
  });

  it('works with forRootAsync, and says where admin belongs when a factory returns it', async () => {
    const t = await createApp(
      'fastify',
      rootModule({
        imports: [
          CancellationModule.forRootAsync({
            admin: { guard: { canActivate: () => true } },
            useFactory: () => ({ timeoutMs: 60_000 }),
          }),
        ],
        controllers: [JobsController],
      }),
    );
    try {
      const list = await request(t.port, '/cancellation/requests');
      expect(list.status).toBe(200);
      expect(list.json).toEqual([]);
    } finally {
      await t.close();
    }
    await expect(
      createApp(
        'express',
        rootModule({
          imports: [
            CancellationModule.forRootAsync({
              useFactory: () => ({ admin: { guard: TokenGuard } }) as never,
            }),
          ],
        }),
      ),
    ).rejects.toThrow(/option "admin" is given to forRoot\(\) \/ forRootAsync\(\) itself/);
  });
});
