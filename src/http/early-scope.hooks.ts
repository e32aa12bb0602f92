import { Inject, Injectable } from '@nestjs/common';
import type { NestMiddleware } from '@nestjs/common';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { scopeStorage } from '../core/async-context.js';
import { ApplicationSignals } from '../shutdown/application-signals.js';
import { EarlyScope } from './early-scope.js';
import { watchUpload } from './fastify-upload.js';

/**
 * Express: runs the rest of the request (later middleware, guards, then the interceptor, which opens the
 * request's own scope) inside an `EarlyScope`.
 * @internal
 */
@Injectable()
export class CancellationMiddleware implements NestMiddleware {
  constructor(@Inject(ApplicationSignals) private readonly signals: ApplicationSignals) {}

  use(_request: unknown, response: ServerResponse, next: () => void): void {
    scopeStorage.run(new EarlyScope(response, this.signals), next);
  }
}

/** The shape of the Fastify request and reply the hooks use. */
type FastifyHook = (
  request: { raw: IncomingMessage },
  reply: { raw: ServerResponse; hijack(): unknown },
  done: () => void,
) => void;

/**
 * Fastify: the same from an `onRequest` hook, which runs before Fastify's and Nest's middleware and costs less
 * than a middleware through `@fastify/middie`. It also watches a request body's upload (`watchUpload`).
 * @internal
 */
export function earlyScopeHook(signals: ApplicationSignals): FastifyHook {
  return (request, reply, done) => {
    watchUpload(request.raw, reply);
    scopeStorage.run(new EarlyScope(reply.raw, signals), done);
  };
}

/**
 * Fastify with `asyncContext: false`: the `onRequest` hook only watches a request body's upload.
 * @internal
 */
export const uploadHook: FastifyHook = (request, reply, done) => {
  watchUpload(request.raw, reply);
  done();
};
