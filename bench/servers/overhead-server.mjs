// One server of the overhead suite, run as its own process: `node overhead-server.mjs <variant> <adapter>`.
// It listens on 127.0.0.1:0, reports `{ ready, port }` over IPC, and closes the app and exits on 'stop'.
//
// Routes (the same in every variant):
//   GET /hello  returns a string
//   GET /io     awaits ~1 ms (BENCH_IO_MS; a timer standing in for I/O), then returns a string
import 'reflect-metadata';
import { AsyncLocalStorage } from 'node:async_hooks';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { Controller, Get, Inject, Injectable, Module, RequestTimeoutException, Scope } from '@nestjs/common';
import { APP_INTERCEPTOR, NestFactory, REQUEST } from '@nestjs/core';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { TimeoutError, catchError, throwError, timeout } from 'rxjs';
import { decorateClass, decorateMethod, decorateParam } from '../lib/decorate.mjs';
import { HELLO, IO, VARIANTS } from '../lib/overhead-variants.mjs';

// The library as built: the parent passes its snapshot of dist/ (see snapshotDist in ../lib/harness.mjs), or
// for the variant `cancellation-base` its snapshot of BENCH_BASE_DIST_DIR.
const { CancellationModule, RequestSignal } = await import(process.env.BENCH_DIST ?? '../../dist/index.js');

/** How long GET /io waits: BENCH_IO_MS (1 ms). */
const IO_MS = Number(process.env.BENCH_IO_MS ?? 1);

// --- the Nest pieces, decorated by hand (see ../lib/decorate.mjs) ---

function plainController() {
  // A fresh class per app, so that no metadata is shared between variants.
  class AppController {
    hello() {
      return HELLO;
    }

    async io() {
      await sleep(IO_MS);
      return IO;
    }
  }
  decorateMethod(AppController, 'hello', [Get('hello')]);
  decorateMethod(AppController, 'io', [Get('io')]);
  return decorateClass(AppController, [Controller()]);
}

/** A handler that takes the request's signal, as one that passes it on to fetch or a driver would. */
function signalController() {
  class SignalController {
    hello(signal) {
      return signal.aborted ? '' : HELLO;
    }

    async io(signal) {
      await sleep(IO_MS, undefined, { signal });
      return IO;
    }
  }
  decorateParam(SignalController, 'hello', 0, RequestSignal());
  decorateParam(SignalController, 'io', 0, RequestSignal());
  decorateMethod(SignalController, 'hello', [Get('hello')], [AbortSignal]);
  decorateMethod(SignalController, 'io', [Get('io')], [AbortSignal]);
  return decorateClass(SignalController, [Controller()]);
}

/** `intercept(ctx, next) { return next.handle(); }`: the price of leaving Nest's no-interceptor fast path. */
class EmptyInterceptor {
  intercept(_context, next) {
    return next.handle();
  }
}
decorateClass(EmptyInterceptor, [Injectable()]);

/**
 * The empty interceptor running the rest of the chain inside an AsyncLocalStorage store, as CancellationModule
 * does: on Node 20 the first `run()` installs promise hooks that then fire for every promise in the process.
 * Nest 12 binds `next.handle()` to the async context it is called in, so the handler sees the store.
 */
const storage = new AsyncLocalStorage();
class AlsInterceptor {
  intercept(context, next) {
    return storage.run(context, () => next.handle());
  }
}
decorateClass(AlsInterceptor, [Injectable()]);

/** The TimeoutInterceptor of https://docs.nestjs.com/interceptors (section "More operators"), verbatim. */
class TimeoutInterceptor {
  intercept(_context, next) {
    return next.handle().pipe(
      timeout(5000),
      catchError((err) => {
        if (err instanceof TimeoutError) {
          return throwError(() => new RequestTimeoutException());
        }
        return throwError(() => err);
      }),
    );
  }
}
decorateClass(TimeoutInterceptor, [Injectable()]);

/**
 * The way people get a per-request signal today without a library: a REQUEST-scoped provider that owns an
 * AbortController and listens for the request to close (as nestjs-aborter and most blog posts do). Injecting
 * it makes the controller request-scoped too, so Nest builds both per request.
 */
class RequestAbort {
  constructor(request) {
    this.controller = new AbortController();
    const raw = request.raw ?? request;
    raw.once('close', () => this.controller.abort());
  }

  get signal() {
    return this.controller.signal;
  }
}
decorateParam(RequestAbort, undefined, 0, Inject(REQUEST));
decorateClass(RequestAbort, [Injectable({ scope: Scope.REQUEST })], [Object]);

function requestScopedController() {
  class ScopedController {
    constructor(abort) {
      this.abort = abort;
    }

    hello() {
      return HELLO;
    }

    async io() {
      await sleep(IO_MS);
      return IO;
    }
  }
  decorateParam(ScopedController, undefined, 0, Inject(RequestAbort));
  decorateMethod(ScopedController, 'hello', [Get('hello')]);
  decorateMethod(ScopedController, 'io', [Get('io')]);
  return decorateClass(ScopedController, [Controller()], [RequestAbort]);
}

/**
 * nestjs-cls carrying a signal, as its users do today: its middleware, mounted on every route, runs the rest of
 * the request inside `AsyncLocalStorage.run()` and `setup` stores an AbortController's signal that the
 * response's 'close' aborts when the response did not finish. The middleware gets Node's own response on both
 * platforms (Nest runs Fastify middleware through middie, on the raw objects). Imported only by this variant:
 * loading nestjs-cls must not change the other servers.
 */
async function clsModule() {
  const { ClsModule } = await import('nestjs-cls');
  return ClsModule.forRoot({
    global: true,
    middleware: {
      mount: true,
      setup(cls, _req, res) {
        const controller = new AbortController();
        res.on('close', () => {
          if (!res.writableFinished) controller.abort();
        });
        cls.set('signal', controller.signal);
      },
    },
  });
}

async function appModule(variant) {
  class AppModule {}
  const metadata = { imports: [], controllers: [plainController()], providers: [] };
  switch (variant) {
    case 'bare-nest':
      break;
    case 'empty-interceptor':
      metadata.providers.push({ provide: APP_INTERCEPTOR, useClass: EmptyInterceptor });
      break;
    case 'als-interceptor':
      metadata.providers.push({ provide: APP_INTERCEPTOR, useClass: AlsInterceptor });
      break;
    case 'cancellation':
    case 'cancellation-base':
      metadata.imports.push(CancellationModule.forRoot());
      break;
    case 'cancellation-signal':
      metadata.imports.push(CancellationModule.forRoot());
      metadata.controllers = [signalController()];
      break;
    case 'cancellation-no-als':
      metadata.imports.push(CancellationModule.forRoot({ asyncContext: false }));
      break;
    case 'cancellation-timeout':
      metadata.imports.push(CancellationModule.forRoot({ timeoutMs: 30_000 }));
      break;
    case 'timeout-recipe':
      metadata.providers.push({ provide: APP_INTERCEPTOR, useClass: TimeoutInterceptor });
      break;
    case 'request-scoped':
      metadata.controllers = [requestScopedController()];
      metadata.providers.push(RequestAbort);
      break;
    case 'nestjs-cls':
      metadata.imports.push(await clsModule());
      break;
    default:
      throw new Error(`unknown variant ${variant}`);
  }
  return decorateClass(AppModule, [Module(metadata)]);
}

async function startNest(variant, adapter) {
  const module = await appModule(variant);
  const app =
    adapter === 'fastify'
      ? await NestFactory.create(module, new FastifyAdapter(), { logger: false })
      : await NestFactory.create(module, { logger: false });
  await app.listen(0, '127.0.0.1');
  return { port: app.getHttpServer().address().port, close: () => app.close() };
}

async function startRawNode() {
  const server = http.createServer((req, res) => {
    if (req.url === '/hello') {
      res.setHeader('content-type', 'text/plain; charset=utf-8');
      res.end(HELLO);
    } else if (req.url === '/io') {
      sleep(IO_MS).then(() => {
        res.setHeader('content-type', 'text/plain; charset=utf-8');
        res.end(IO);
      });
    } else {
      res.statusCode = 404;
      res.end();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: server.address().port,
    close: () =>
      new Promise((resolve) => {
        server.close(resolve);
        server.closeAllConnections();
      }),
  };
}

async function main() {
  const [variant, adapter] = process.argv.slice(2);
  if (!(variant in VARIANTS)) throw new Error(`unknown variant ${variant}`);
  const server = variant === 'raw-node' ? await startRawNode() : await startNest(variant, adapter);
  process.on('message', async (message) => {
    if (message === 'cpu') {
      // CPU time of the whole process (every thread), for CPU per request: steadier than req/s when
      // other processes compete for the cores.
      process.send({ cpu: process.cpuUsage() });
      return;
    }
    if (message !== 'stop') return;
    // Exit through process.exit so that --cpu-prof writes its profile; do not wait forever for close().
    const timer = setTimeout(() => process.exit(0), 2000);
    timer.unref();
    try {
      await server.close();
    } finally {
      process.exit(0);
    }
  });
  // The parent is gone (killed, crashed): do not outlive it.
  process.on('disconnect', () => process.exit(0));
  process.send({ ready: true, port: server.port, pid: process.pid });
}

if (process.send !== undefined) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
