/**
 * Refusal at the door (issue #14, item 2): while the application drains, every new request is answered
 * `503` + `Retry-After` + `Connection: close` by the Express middleware or the Fastify `onRequest` hook, before
 * routing, guards and pipes: an unknown path gets 503, not 404; a guarded route 503, not 401, and its guard does
 * not run; a route whose pipe would fail 503, not 400. Routes left out of cancellation keep answering. A
 * keep-alive connection that carries a request during the drain is closed after its response. A connection
 * accepted just before the listener closed whose request comes late is answered the same way, not reset, and one
 * that sends nothing is closed rather than holding `app.close()`. Express and Fastify, over HTTP and HTTPS.
 */
import 'reflect-metadata';
import {
  Controller,
  Get,
  Injectable,
  Module,
  Param,
  ParseIntPipe,
  Post,
  UnauthorizedException,
  UseGuards,
} from '@nestjs/common';
import type { CanActivate, ExecutionContext } from '@nestjs/common';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import tlsSockets from 'node:tls';
import {
  CancellationModule,
  CancellationService,
  RequestTimeout,
  SkipCancellation,
} from 'nestjs-cancellation';
import { ADAPTERS, createApp, request, sleep, startRequest, waitFor } from './utils/harness.js';
import type { RawResponse, RequestOptions, TestApp } from './utils/harness.js';
import { testCertificate } from './utils/tls.js';

let guardRuns = 0;
let pipeRuns = 0;
let slowStarted = 0;

@Injectable()
class TokenGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    guardRuns++;
    const { authorization } = context.switchToHttp().getRequest<http.IncomingMessage>().headers;
    if (authorization !== 'Bearer ok') throw new UnauthorizedException();
    return true;
  }
}

class CountingIntPipe extends ParseIntPipe {
  override async transform(value: string, metadata: Parameters<ParseIntPipe['transform']>[1]) {
    pipeRuns++;
    return super.transform(value, metadata);
  }
}

@Controller('door')
class DoorController {
  @Get('quick')
  quick() {
    return 'quick';
  }

  @Get('slow')
  @RequestTimeout(false)
  async slow() {
    slowStarted++;
    await sleep(1_500);
    return { done: true };
  }

  @Get('guarded')
  @UseGuards(TokenGuard)
  guarded() {
    return 'secret';
  }

  @Get('items/:id')
  item(@Param('id', CountingIntPipe) id: number) {
    return { id };
  }

  @Post('items')
  create() {
    return { created: true };
  }

  @Get('health')
  @SkipCancellation()
  health() {
    return { status: 'ok' };
  }
}

@Module({
  imports: [CancellationModule.forRoot({ shutdownGracePeriodMs: 5_000 })],
  controllers: [DoorController],
})
class AppModule {}

function expectRefused(response: RawResponse): void {
  expect(response.status).toBe(503);
  expect(response.headers['retry-after']).toBe('1');
  expect(response.headers.connection).toBe('close');
  expect(response.json).toEqual({
    statusCode: 503,
    message: 'The application is shutting down',
    error: 'Service Unavailable',
  });
}

/** With no grace period: the listener closes and the handlers are aborted at once. */
@Module({
  imports: [CancellationModule.forRoot({ shutdownGracePeriodMs: 0 })],
  controllers: [DoorController],
})
class NoGraceModule {}

/**
 * A raw connection that sends nothing until `send()` (as a client whose process is busy between its connect and
 * its write), and then reads whatever comes back until the server closes it.
 */
function openConnection(port: number, ca: string | undefined) {
  const socket =
    ca === undefined
      ? net.connect({ host: '127.0.0.1', port })
      : tlsSockets.connect({ host: '127.0.0.1', port, ca });
  const ready = new Promise<void>((resolve, reject) => {
    socket.once(ca === undefined ? 'connect' : 'secureConnect', resolve);
    socket.once('error', reject);
  });
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  const ended = new Promise<{ text: string; error?: string }>((resolve) => {
    socket.once('error', (err: NodeJS.ErrnoException) =>
      resolve({ text: Buffer.concat(chunks).toString(), error: err.code }),
    );
    socket.once('close', () => resolve({ text: Buffer.concat(chunks).toString() }));
  });
  return {
    ready,
    ended,
    send: (path: string) => socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`),
  };
}

const SCHEMES = ['http', 'https'] as const;

describe.each(ADAPTERS.flatMap((adapter) => SCHEMES.map((scheme) => [adapter, scheme] as const)))(
  'the door on %s over %s',
  (adapter, scheme) => {
    let t: TestApp | undefined;
    const certificate = scheme === 'https' ? testCertificate() : undefined;
    const tls: RequestOptions = certificate === undefined ? {} : { ca: certificate.cert };
    const get = (path: string, options: RequestOptions = {}) =>
      request(t!.port, path, { ...tls, ...options });

    afterEach(async () => {
      if (t === undefined) return;
      await t.close();
      expect(t.logs.errors).toEqual([]);
      t = undefined;
    });

    it('refuses every new request with 503 before routing, guards and pipes while draining', async () => {
      t = await createApp(adapter, AppModule, certificate === undefined ? {} : { https: certificate });
      // Before the drain: the application's own answers.
      expect((await get('/nowhere')).status).toBe(404);
      expect((await get('/door/guarded')).status).toBe(401);
      expect((await get('/door/items/abc')).status).toBe(400);

      const agentOptions = { keepAlive: true, maxSockets: 1 };
      const agent =
        certificate === undefined
          ? new http.Agent(agentOptions)
          : new https.Agent({ ...agentOptions, ca: certificate.cert });
      try {
        const warm = await get('/door/quick', { agent });
        expect(warm.headers.connection).toBe('keep-alive');

        const before = slowStarted;
        const inFlight = startRequest(t.port, '/door/slow', tls);
        await waitFor(() => slowStarted > before, { message: 'the slow handler to start' });
        const closing = t.close();
        const cancellation = t.app.get(CancellationService);
        await waitFor(() => cancellation.drainingSignal.aborted, { message: 'the drain to begin' });

        const [guards, pipes] = [guardRuns, pipeRuns];
        const refused = await Promise.all([
          get('/nowhere'),
          get('/door/guarded'),
          get('/door/items/abc'),
          get('/door/items', { method: 'POST', body: { name: 'x' } }),
          get('/door/quick'),
        ]);
        for (const response of refused) expectRefused(response);
        // Neither the guard nor the pipe ran for the refused requests.
        expect([guardRuns, pipeRuns]).toEqual([guards, pipes]);

        // The keep-alive connection opened before the drain: its next request is refused, and it closes.
        const idle = Object.values(agent.freeSockets).flat();
        expect(idle).toHaveLength(1);
        const [socket] = idle;
        const onKeptAlive = await get('/door/quick', { agent });
        expectRefused(onKeptAlive);
        await waitFor(() => socket?.destroyed === true, { message: 'the keep-alive connection to close' });

        // A route left out of cancellation still answers.
        const health = await get('/door/health');
        expect(health.status).toBe(200);
        expect(health.json).toEqual({ status: 'ok' });

        // The request admitted before the drain finishes normally, and its connection is not kept.
        const done = await inFlight.response();
        expect(done.status).toBe(200);
        expect(done.headers.connection).toBe('close');
        await closing;
      } finally {
        agent.destroy();
      }
    });

    it('connections accepted before the listener closed: a late request gets 503, not a reset; a silent one does not hold app.close()', async () => {
      t = await createApp(adapter, NoGraceModule, certificate === undefined ? {} : { https: certificate });
      const server = t.app.getHttpServer() as http.Server;
      let accepted = 0;
      server.on(scheme === 'https' ? 'secureConnection' : 'connection', () => accepted++);
      const late = openConnection(t.port, certificate?.cert);
      const silent = openConnection(t.port, certificate?.cert);
      await Promise.all([late.ready, silent.ready]);
      await waitFor(() => accepted === 2, { message: 'the server to accept both connections' });

      const closing = t.close();
      await waitFor(() => !server.listening, { message: 'the listener to close' });
      // The client's request comes after the listener closed (a busy client): it meets the door, not a reset.
      late.send('/door/quick');
      const answer = await late.ended;
      expect(answer.error).toBeUndefined();
      expect(answer.text).toMatch(/^HTTP\/1\.1 503 /);
      // (The door's, or, once Nest closes a Fastify server, Nest's and Fastify's own 503, which has no Retry-After.)
      expect(answer.text).toMatch(/\r\nconnection: close\r\n/i);
      // A connection that sends nothing is closed a second after it connected, rather than holding app.close().
      expect(await silent.ended).toEqual({ text: '' });
      // (It held it until the hard deadline, 10 s, before.)
      expect(await closing).toBeLessThan(2_000);
    });
  },
);
