import { Logger } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { AppModule } from './app.module.js';

function portFromEnv(): number {
  const raw = process.env.PORT ?? '3000';
  const port = Number(raw);
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    throw new Error(`PORT must be a whole number from 0 to 65535, got ${JSON.stringify(raw)}`);
  }
  return port;
}

async function bootstrap(): Promise<void> {
  const app = await NestFactory.create(AppModule);
  // SIGTERM (a deployment, `docker stop`, Kubernetes) and Ctrl+C run Nest's shutdown hooks.
  // CancellationModule cancels the requests in flight in the first of them, so the HTTP server can close
  // at once instead of waiting for every long handler to finish on its own.
  app.enableShutdownHooks();
  await app.listen(portFromEnv(), process.env.HOST ?? '127.0.0.1');
  // With PORT=0 the system picks a free port: print the real address (the demo and the e2e test read it).
  Logger.log(`Listening on ${await app.getUrl()}`, 'Bootstrap');
}

await bootstrap();
