import { Logger } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { MicroserviceOptions } from '@nestjs/microservices';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { AppModule } from './app.module.js';
import { renderServerOptions } from './render/render.module.js';

function portFromEnv(): number {
  const raw = process.env.PORT ?? '3000';
  const port = Number(raw);
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    throw new Error(`PORT must be a whole number from 0 to 65535, got ${JSON.stringify(raw)}`);
  }
  return port;
}

/**
 * Where the gRPC server listens: GRPC_PORT, by default 50051, or a free port when PORT is 0 (as the tests and
 * the demo start the app, several at once).
 */
async function grpcUrl(host: string): Promise<string> {
  const raw = process.env.GRPC_PORT ?? (process.env.PORT === '0' ? '0' : '50051');
  let port = Number(raw);
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    throw new Error(`GRPC_PORT must be a whole number from 0 to 65535, got ${JSON.stringify(raw)}`);
  }
  if (port === 0) {
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, host, resolve));
    port = (probe.address() as AddressInfo).port;
    await new Promise((resolve) => probe.close(resolve));
  }
  return `${host}:${port}`;
}

async function bootstrap(): Promise<void> {
  const host = process.env.HOST ?? '127.0.0.1';
  // Read by RenderModule's gRPC client (GET /render calls this app's own gRPC server).
  process.env.GRPC_URL = await grpcUrl(host);
  const app = await NestFactory.create(AppModule);
  // A hybrid application: the gRPC service render.Renderer runs beside the HTTP routes, with the same
  // global interceptor and filter (inheritAppConfig), so each call gets its own cancellable scope.
  app.connectMicroservice<MicroserviceOptions>(renderServerOptions(process.env.GRPC_URL), {
    inheritAppConfig: true,
  });
  // SIGTERM (a deployment, `docker stop`, Kubernetes) and Ctrl+C run Nest's shutdown hooks.
  // CancellationModule cancels the requests in flight in the first of them, so the HTTP server can close
  // at once instead of waiting for every long handler to finish on its own.
  app.enableShutdownHooks();
  await app.startAllMicroservices();
  Logger.log(`gRPC render.Renderer on ${process.env.GRPC_URL}`, 'Bootstrap');
  await app.listen(portFromEnv(), host);
  // With PORT=0 the system picks a free port: print the real address (the demo and the e2e test read it).
  Logger.log(`Listening on ${await app.getUrl()}`, 'Bootstrap');
}

await bootstrap();
