import type { DynamicModule, INestApplication, LoggerService, Type } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { ExpressAdapter } from '@nestjs/platform-express';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { once } from 'node:events';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Socket } from 'node:net';
import { inspect, types } from 'node:util';

/** The HTTP platforms every e2e suite runs on. */
export type AdapterName = 'express' | 'fastify';
export const ADAPTERS: readonly AdapterName[] = ['express', 'fastify'];

export type LogLevel = 'log' | 'error' | 'warn' | 'debug' | 'verbose' | 'fatal';

export interface LogLine {
  readonly level: LogLevel;
  /** The message and every optional parameter (context, stack) joined, so a search sees all of it. */
  readonly text: string;
  readonly message: string;
  readonly context: string | undefined;
}

/**
 * A Nest logger that records every line instead of printing it, so a test can assert that nothing was
 * logged at error level and find the cancellation's verbose line. Set `E2E_LOGS=1` to print them as well.
 */
export class LogCapture implements LoggerService {
  readonly lines: LogLine[] = [];

  log(message: unknown, ...rest: unknown[]): void {
    this.record('log', message, rest);
  }
  error(message: unknown, ...rest: unknown[]): void {
    this.record('error', message, rest);
  }
  warn(message: unknown, ...rest: unknown[]): void {
    this.record('warn', message, rest);
  }
  debug(message: unknown, ...rest: unknown[]): void {
    this.record('debug', message, rest);
  }
  verbose(message: unknown, ...rest: unknown[]): void {
    this.record('verbose', message, rest);
  }
  fatal(message: unknown, ...rest: unknown[]): void {
    this.record('fatal', message, rest);
  }

  /** Lines at `error` or `fatal` level. */
  get errors(): LogLine[] {
    return this.lines.filter((line) => line.level === 'error' || line.level === 'fatal');
  }

  /** Lines logged with `context` (e.g. 'Cancellation'). */
  inContext(context: string): LogLine[] {
    return this.lines.filter((line) => line.context === context);
  }

  /** Forgets every line recorded so far (after a test asserted the error lines it expected). */
  clear(): void {
    this.lines.length = 0;
  }

  /** Every line as `level: text`, for failure messages. */
  dump(): string {
    return this.lines.map((line) => `${line.level}: ${line.text}`).join('\n');
  }

  private record(level: LogLevel, message: unknown, rest: unknown[]): void {
    const last = rest.at(-1);
    const context = typeof last === 'string' ? last : undefined;
    // `types.isNativeError`, not `instanceof Error`: errors made by Node itself come from another realm
    // than the test's under Jest's VM modules.
    const parts = [message, ...rest].map((part) =>
      types.isNativeError(part)
        ? (part.stack ?? String(part))
        : typeof part === 'string'
          ? part
          : inspect(part),
    );
    const line: LogLine = { level, text: parts.join(' '), message: String(message), context };
    this.lines.push(line);
    if (process.env.E2E_LOGS) process.stderr.write(`[${level}] ${line.text}\n`);
  }
}

export interface TestApp {
  readonly app: INestApplication;
  readonly adapter: AdapterName;
  readonly port: number;
  readonly url: string;
  readonly logs: LogCapture;
  /**
   * Every Node `ServerResponse` the server created, in arrival order (recorded by an extra `'request'`
   * listener on the node server, so it works the same under Express and Fastify). After a response ended,
   * its `statusCode` is what the application answered, even to a client that was gone.
   */
  readonly responses: http.ServerResponse[];
  /** Closes the app (idempotent) and reports how long `app.close()` took, in milliseconds. */
  close(): Promise<number>;
}

export interface CreateAppOptions {
  readonly logs?: LogCapture;
  /** Runs after the app is created and before it listens (e.g. to register a Fastify content-type parser). */
  readonly configure?: (app: INestApplication, adapter: AdapterName) => void | Promise<void>;
  /** Serves HTTPS with this key and certificate (see test/utils/tls.ts) instead of HTTP. */
  readonly https?: { readonly key: string; readonly cert: string };
}

/**
 * Builds a Nest application on Express or Fastify, listening on an ephemeral port of 127.0.0.1, with a
 * `LogCapture` as its logger.
 */
export async function createApp(
  adapter: AdapterName,
  module: Type<unknown> | DynamicModule,
  options: CreateAppOptions = {},
): Promise<TestApp> {
  const logs = options.logs ?? new LogCapture();
  const tls = options.https;
  const httpAdapter =
    adapter === 'express' ? new ExpressAdapter() : new FastifyAdapter(tls && { https: { ...tls } });
  const app = await NestFactory.create(module, httpAdapter, {
    logger: logs,
    abortOnError: false,
    ...(tls && adapter === 'express' ? { httpsOptions: { ...tls } } : {}),
  });
  await options.configure?.(app, adapter);
  await app.listen(0, '127.0.0.1');
  const server = app.getHttpServer() as http.Server;
  const responses: http.ServerResponse[] = [];
  server.on('request', (_req: http.IncomingMessage, res: http.ServerResponse) => responses.push(res));
  const { port } = server.address() as AddressInfo;
  let closing: Promise<number> | undefined;
  return {
    app,
    adapter,
    port,
    url: `${tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    logs,
    responses,
    close() {
      closing ??= (async () => {
        const started = performance.now();
        await app.close();
        return performance.now() - started;
      })();
      return closing;
    },
  };
}

/** A dynamic root module for a test app: `{ imports, controllers, providers }` under a fresh class. */
export function rootModule(metadata: Omit<DynamicModule, 'module'>): DynamicModule {
  class TestRootModule {}
  return { module: TestRootModule, ...metadata };
}

export interface RawResponse {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
  /** The body parsed as JSON, or `undefined` when it is not JSON. */
  readonly json: unknown;
}

/** How a request ended for its client: a complete response, or an error (reset, hang-up, our abort). */
export type RequestResult = { readonly response: RawResponse } | { readonly error: Error };

export interface RequestOptions {
  readonly method?: string;
  /** Sent as JSON (with Content-Type and Content-Length) unless it is a string. */
  readonly body?: unknown;
  readonly headers?: http.OutgoingHttpHeaders;
  /** `false` (the default here) opens a fresh connection that closes after the response. */
  readonly agent?: http.Agent | false;
  /** A certificate to trust: the request goes over HTTPS (to a server of `createApp(..., { https })`). */
  readonly ca?: string;
}

export interface RequestHandle {
  readonly request: http.ClientRequest;
  /** Resolves once the request has a socket (the connection may still be in progress). */
  readonly socket: Promise<Socket>;
  /** Hangs up: destroys the request and its socket, as a client that goes away does. */
  abort(): void;
  /** The complete response; rejects if the request fails or is aborted. */
  response(): Promise<RawResponse>;
  /** The response or the error, never rejects. */
  settled(): Promise<RequestResult>;
}

/** Starts an HTTP request with `node:http` and hands back ways to abort it mid-flight or to await it. */
export function startRequest(port: number, path: string, options: RequestOptions = {}): RequestHandle {
  const headers: http.OutgoingHttpHeaders = { ...options.headers };
  let payload: string | undefined;
  if (options.body !== undefined) {
    payload = typeof options.body === 'string' ? options.body : JSON.stringify(options.body);
    headers['content-type'] ??= 'application/json';
    headers['content-length'] = Buffer.byteLength(payload);
  }
  const target = {
    host: '127.0.0.1',
    port,
    path,
    method: options.method ?? 'GET',
    headers,
    agent: options.agent ?? false,
  };
  const request =
    options.ca === undefined ? http.request(target) : https.request({ ...target, ca: options.ca });
  const socket = new Promise<Socket>((resolve) => request.once('socket', resolve));
  const result = new Promise<RequestResult>((resolve) => {
    request.once('error', (error) => resolve({ error }));
    request.once('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.once('error', (error) => resolve({ error }));
      res.once('aborted', () => resolve({ error: new Error('response aborted') }));
      res.once('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = JSON.parse(body);
        } catch {
          json = undefined;
        }
        resolve({ response: { status: res.statusCode ?? 0, headers: res.headers, body, json } });
      });
    });
  });
  request.end(payload);
  return {
    request,
    socket,
    abort: () => void request.destroy(),
    response: async () => {
      const outcome = await result;
      if ('error' in outcome) throw outcome.error;
      return outcome.response;
    },
    settled: () => result,
  };
}

/** One request, awaited: the complete response (rejects if there is none). */
export function request(port: number, path: string, options?: RequestOptions): Promise<RawResponse> {
  return startRequest(port, path, options).response();
}

/**
 * Polls `condition` (which may be async: a query, an HTTP call) until it returns a truthy value (which is
 * returned), or fails after `timeoutMs` with `message`.
 */
export async function waitFor<T>(
  condition: () => T | Promise<T>,
  {
    timeoutMs = 3000,
    intervalMs = 5,
    message = 'condition',
  }: { timeoutMs?: number; intervalMs?: number; message?: string } = {},
): Promise<NonNullable<T>> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value) return value as NonNullable<T>;
    if (performance.now() > deadline)
      throw new Error(`waitFor: timed out after ${timeoutMs} ms waiting for ${message}`);
    await sleep(intervalMs);
  }
}

/** A plain (not signal-aware) delay. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * A local HTTP server that accepts requests and never answers them (until closed): a downstream service
 * that is too slow, for handlers that `fetch` it with the request's signal.
 */
export async function startSlowServer(): Promise<{
  url: string;
  received: () => number;
  close(): Promise<void>;
}> {
  let received = 0;
  const server = http.createServer(() => {
    received++;
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/slow`,
    received: () => received,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
