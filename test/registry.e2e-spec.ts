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
const seen = new Map<string, { id?: string; reason?: unknown; settled?: boolean }>();
function record(tag: string): { id?: string; reason?: unknown; settled?: boolean } {
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

  /** Waits until the registry lists a request with this id. */
  function listed(id: string): Promise<InFlightRequest> {
    return waitFor(() => cancellation.inFlight().find((entry) => entry.id === id), {
      message: `${id} in the registry`,
    });
  }

  it('lists a request in flight with the id from x-request-id, its route and its age', async () => {
    const handle = startRequest(t.port, '/jobs/wait?tag=list', { headers: { 'x-request-id': 'req-list-1' } });
    const entry = await listed('req-list-1');
    expect(entry).toMatchObject({ id: 'req-list-1', method: 'GET', route: '/jobs/wait' });
    expect(entry.elapsedMs).toBeGreaterThanOrEqual(0);
    expect(Math.abs(entry.startedAt - Date.now())).toBeLessThan(5_000);
    expect(entry).not.toHaveProperty('remainingMs');
    expect(entry).not.toHaveProperty('cancelled');
    expect(record('list').id).toBe('req-list-1');
    handle.abort();
    await waitFor(() => record('list').settled, { message: 'the handler to stop' });
    expect(cancellation.inFlight().some((e) => e.id === 'req-list-1')).toBe(false);
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
  ])('generates a UUID when the request id header has %s', async (_what, value) => {
    const tag = `invalid-${_what}`;
    const handle = startRequest(t.port, `/jobs/wait?tag=${encodeURIComponent(tag)}`, {
      headers: { 'x-request-id': value },
    });
    const id = await waitFor(() => record(tag).id, { message: 'the handler to start' });
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect((await listed(id)).route).toBe('/jobs/wait');
    handle.abort();
  });

  it('cancels one request by id: its client gets 503 with the message, its signal says manual', async () => {
    const target = startRequest(t.port, '/jobs/wait?tag=target', { headers: { 'x-request-id': 'target' } });
    const bystander = startRequest(t.port, '/jobs/wait?tag=bystander', {
      headers: { 'x-request-id': 'bystander' },
    });
    await listed('target');
    await listed('bystander');
    expect(cancellation.cancel('target', 'Stopped by the on-call engineer')).toBe(1);
    const response = await target.response();
    expect(response.status).toBe(503);
    expect(response.json).toMatchObject({ message: 'Stopped by the on-call engineer' });
    const reason = record('target').reason;
    expect(isCancellationError(reason)).toBe(true);
    expect((reason as CancellationError).kind).toBe('manual');
    // The other request goes on.
    expect(cancellation.inFlight().map((entry) => entry.id)).toContain('bystander');
    expect(record('bystander').reason).toBeUndefined();
    expect(cancellation.cancel('target')).toBe(0);
    expect(cancellation.cancel('no-such-request')).toBe(0);
    bystander.abort();
    expect(() => cancellation.cancel('bystander', 'x'.repeat(501))).toThrow(/at most 500 characters/);
  });

  it('reports every cancellation, then its handler settling, with the same id', async () => {
    cancelled.length = 0;
    settled.length = 0;
    const handle = startRequest(t.port, '/jobs/wait?tag=events', { headers: { 'x-request-id': 'events-1' } });
    await listed('events-1');
    handle.abort();
    await waitFor(() => settled.find((event) => event.id === 'events-1'), { message: 'settled event' });
    expect(cancelled.filter((event) => event.id === 'events-1')).toEqual([
      expect.objectContaining({
        id: 'events-1',
        kind: 'client-disconnected',
        method: 'GET',
        route: '/jobs/wait',
      }),
    ]);
    const event = settled.find((e) => e.id === 'events-1');
    expect(event?.settledAfterMs).toBeGreaterThanOrEqual(0);
    expect(event?.settledAfterMs).toBeLessThan(1_000);
  });

  it('keeps listing a cancelled handler that ignores its signal until it settles, and says so', async () => {
    settled.length = 0;
    const handle = startRequest(t.port, '/jobs/stubborn?tag=stubborn&ms=400', {
      headers: { 'x-request-id': 'stubborn-1' },
    });
    await listed('stubborn-1');
    handle.abort();
    const lingering = await waitFor(
      () => cancellation.inFlight().find((e) => e.id === 'stubborn-1' && e.cancelled !== undefined),
      { message: 'the cancelled handler to be listed as still running' },
    );
    expect(lingering.cancelled).toBe('client-disconnected');
    const event = await waitFor(() => settled.find((e) => e.id === 'stubborn-1'), {
      message: 'settled event',
    });
    expect(record('stubborn').settled).toBe(true);
    // It went on for the rest of its 400 ms after the hang-up.
    expect(event.settledAfterMs).toBeGreaterThan(150);
    expect(cancellation.inFlight().some((e) => e.id === 'stubborn-1')).toBe(false);
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
      await listed('admin-1');
      const list = await request(t.port, '/ops/cancellation/requests', {
        headers: { ...AUTH, 'x-request-id': 'operator-list' },
      });
      expect(list.status).toBe(200);
      const ids = (list.json as InFlightRequest[]).map((entry) => entry.id);
      expect(ids).toContain('admin-1');
      expect(ids).not.toContain('operator-list');
      const cancel = await request(t.port, '/ops/cancellation/requests/admin-1/cancel', {
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
      await listed('bad-msg');
      const bad = await request(t.port, '/ops/cancellation/requests/bad-msg/cancel', {
        method: 'POST',
        headers: AUTH,
        body: { message: 42 },
      });
      expect(bad.status).toBe(400);
      expect(cancellation.inFlight().some((e) => e.id === 'bad-msg')).toBe(true);
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
