import { Module } from '@nestjs/common';
import { ClientsModule, Transport } from '@nestjs/microservices';
import type { GrpcOptions } from '@nestjs/microservices';
import { fileURLToPath } from 'node:url';
import { RENDER_CLIENT, RenderClient } from './render.client.js';
import { RenderController } from './render.controller.js';

/** render.proto, beside this file's source (the same path from sample-app/render and dist-sample/render). */
const RENDER_PROTO = fileURLToPath(new URL('../../sample-app/render/render.proto', import.meta.url));

/** The gRPC server's options: main.ts connects it to the application (a hybrid app) on `url`. */
export function renderServerOptions(url: string): GrpcOptions {
  // keepCase: fields keep their proto names (page_ms), as the handler and the client spell them.
  return {
    transport: Transport.GRPC,
    options: { package: 'render', protoPath: RENDER_PROTO, url, loader: { keepCase: true } },
  };
}

@Module({
  imports: [
    ClientsModule.registerAsync([
      {
        name: RENDER_CLIENT,
        // main.ts sets GRPC_URL to where it binds the server, before the application is created.
        useFactory: () =>
          renderServerOptions(process.env.RENDER_URL ?? process.env.GRPC_URL ?? '127.0.0.1:50051'),
      },
    ]),
  ],
  controllers: [RenderController],
  providers: [RenderClient],
})
export class RenderModule {}
