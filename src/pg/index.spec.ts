import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import type { AddressInfo, Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import { Logger } from '@nestjs/common';
import { globalState, scopeStorage } from '../core/async-context.js';
import type { ScopeState } from '../core/async-context.js';
import { CancellationError } from '../core/cancellation-error.js';
import { queryWithSignal } from './index.js';
import type { PgClientLike } from './index.js';

// Unit tests with a fake server standing in for the postmaster. The behaviour against a real PostgreSQL
// (queries gone from pg_stat_activity, pools reused) is in test/downstream.e2e-spec.ts.

/** A stand-in for the postmaster: records every cancel request it gets, then closes the connection. */
async function fakePostmaster(listen: (server: Server) => void): Promise<{
  server: Server;
  packets: Buffer[];
  received: Promise<Buffer>;
  close(): Promise<void>;
}> {
  const packets: Buffer[] = [];
  let onPacket: (packet: Buffer) => void = () => undefined;
  const received = new Promise<Buffer>((resolve) => (onPacket = resolve));
  const server = createServer((socket) => {
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('end', () => {
      const packet = Buffer.concat(chunks);
      packets.push(packet);
      onPacket(packet);
      socket.end();
    });
  });
  listen(server);
  await new Promise((resolve) => server.once('listening', resolve));
  return {
    server,
    packets,
    received,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

interface FakeClient extends PgClientLike {
  processID: number | null;
  secretKey: number;
  host: string;
  port: number;
  released: Array<boolean | undefined>;
  release(destroy?: boolean): void;
  /** Settles the query that is running. */
  finish(outcome: { rows: unknown[] } | { code: string }): void;
}

function fakeClient(host: string, port: number): FakeClient {
  let settle: (outcome: { rows: unknown[] } | { code: string }) => void = () => undefined;
  return {
    processID: 4242,
    secretKey: 0xdeadbeef | 0, // pg reads the key as a signed int32
    host,
    port,
    released: [],
    release(destroy?: boolean) {
      this.released.push(destroy);
    },
    finish: (outcome) => settle(outcome),
    query: () =>
      new Promise((resolve, reject) => {
        settle = (outcome) =>
          'code' in outcome ? reject(Object.assign(new Error('x'), outcome)) : resolve(outcome);
      }),
  };
}

function fakePool(client: FakeClient) {
  return { idleCount: 0, connect: async () => client };
}

describe('nestjs-cancellation/pg', () => {
  it('exports exactly queryWithSignal', async () => {
    expect(Object.keys(await import('./index.js'))).toEqual(['queryWithSignal']);
  });

  describe('queryWithSignal', () => {
    let postmaster: Awaited<ReturnType<typeof fakePostmaster>>;

    beforeEach(async () => {
      postmaster = await fakePostmaster((server) => server.listen(0, '127.0.0.1'));
    });

    afterEach(async () => {
      await postmaster.close();
    });

    function client(): FakeClient {
      return fakeClient('127.0.0.1', (postmaster.server.address() as AddressInfo).port);
    }

    it('sends the protocol CancelRequest with the backend key, and gives back a cleanly cancelled connection', async () => {
      const conn = client();
      const controller = new AbortController();
      const reason = new CancellationError('client-disconnected');
      const running = queryWithSignal(fakePool(conn), 'SELECT pg_sleep(30)', [], controller.signal);
      await new Promise((resolve) => setImmediate(resolve));
      controller.abort(reason);

      const packet = await postmaster.received;
      // length 16, code 80877102 (1234 << 16 | 5678), process id, secret key
      expect(packet).toEqual(Buffer.from('00000010' + '04d2162e' + '00001092' + 'deadbeef', 'hex'));
      conn.finish({ code: '57014' }); // what the server answers: canceling statement due to user request
      await expect(running).rejects.toBe(reason);
      expect(conn.released).toEqual([false]);
    });

    it('destroys the connection when the query ended some other way than by the cancel', async () => {
      const conn = client();
      const controller = new AbortController();
      const running = queryWithSignal(fakePool(conn), 'SELECT 1', undefined, controller.signal);
      await new Promise((resolve) => setImmediate(resolve));
      controller.abort(new CancellationError('shutdown'));
      conn.finish({ rows: [{ one: 1 }] }); // finished just as the cancel went out
      await postmaster.received;
      await expect(running).rejects.toMatchObject({ kind: 'shutdown' });
      expect(conn.released).toEqual([true]);
    });

    it('rejects after a second at the latest when the cancel cannot be sent, and destroys the connection', async () => {
      // Nothing listens on port 1: the cancel request fails. A client still connecting has no backend key yet.
      const refused = fakeClient('127.0.0.1', 1);
      const connecting = Object.assign(client(), { processID: null });
      const controller = new AbortController();
      const running = [
        queryWithSignal(fakePool(refused), 'SELECT 1', undefined, controller.signal),
        queryWithSignal(fakePool(connecting), 'SELECT 1', undefined, controller.signal),
      ];
      await new Promise((resolve) => setImmediate(resolve));
      const aborted = performance.now();
      controller.abort(new CancellationError('timeout'));
      for (const query of running) await expect(query).rejects.toMatchObject({ kind: 'timeout' });
      expect(performance.now() - aborted).toBeGreaterThan(900);
      expect([refused.released, connecting.released]).toEqual([[true], [true]]);
      expect(postmaster.packets).toEqual([]);
    });

    it("uses the current request's signal by default", async () => {
      const conn = client();
      const controller = new AbortController();
      const scope = { signal: controller.signal } as unknown as ScopeState;
      const running = scopeStorage.run(scope, () => queryWithSignal(conn, 'SELECT pg_sleep(30)'));
      await new Promise((resolve) => setImmediate(resolve));
      controller.abort(new CancellationError('client-disconnected'));
      await postmaster.received;
      conn.finish({ code: '57014' });
      await expect(running).rejects.toMatchObject({ kind: 'client-disconnected' });
      expect(conn.released).toEqual([]); // a client passed in is not released: it is the caller's
    });

    it('resolves with the result and releases the connection when nothing aborts', async () => {
      const conn = client();
      const running = queryWithSignal(fakePool(conn), 'SELECT 1', undefined, new AbortController().signal);
      await new Promise((resolve) => setImmediate(resolve));
      conn.finish({ rows: [{ one: 1 }] });
      await expect(running).resolves.toEqual({ rows: [{ one: 1 }] });
      expect(conn.released).toEqual([undefined]);
      expect(postmaster.packets).toEqual([]);
    });
  });

  it('reaches a server on a Unix socket (host is a directory)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pg-cancel-'));
    const postmaster = await fakePostmaster((server) => server.listen(join(dir, '.s.PGSQL.5432')));
    try {
      const conn = fakeClient(dir, 5432);
      const controller = new AbortController();
      const running = queryWithSignal(conn, 'SELECT 1', undefined, controller.signal);
      controller.abort(new CancellationError('manual'));
      expect((await postmaster.received).length).toBe(16);
      conn.finish({ code: '57014' });
      await expect(running).rejects.toMatchObject({ kind: 'manual' });
    } finally {
      await postmaster.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses what is neither a pg pool nor a pure-JavaScript pg client', async () => {
    const nativeLike = { query: async () => ({ rows: [] }), connect: async () => undefined };
    await expect(queryWithSignal(nativeLike as never, 'SELECT 1')).rejects.toThrow(/pg\.native/);
    await expect(queryWithSignal({} as never, 'SELECT 1')).rejects.toThrow(TypeError);
  });
});

describe('queryWithSignal() while an application runs with asyncContext: false', () => {
  let warn: jest.SpiedFunction<Logger['warn']>;

  beforeEach(() => {
    globalState.contextlessApps = 1;
    globalState.warnedCalls = undefined;
    warn = jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
  });
  afterEach(() => {
    globalState.contextlessApps = 0;
    globalState.warnedCalls = undefined;
    warn.mockRestore();
  });

  /** A query on a fake pool that answers at once. */
  async function query(signal?: AbortSignal): Promise<void> {
    const client = fakeClient('127.0.0.1', 1);
    const running = queryWithSignal(fakePool(client), 'SELECT 1', undefined, signal);
    await new Promise((resolve) => setImmediate(resolve));
    client.finish({ rows: [] });
    await running;
  }

  it('warns once, naming the call, when given no signal outside any scope', async () => {
    await query();
    await query();
    expect(warn).toHaveBeenCalledTimes(1);
    expect(warn.mock.calls[0][0]).toMatch(/^queryWithSignal\(\) was called without a signal/);
  });

  it('says nothing when given a signal, or inside a scope', async () => {
    await query(new AbortController().signal);
    await scopeStorage.run({ signal: new AbortController().signal } as ScopeState, () => query());
    expect(warn).not.toHaveBeenCalled();
  });
});
