import { Inject, Injectable } from '@nestjs/common';
import type { OnModuleInit } from '@nestjs/common';
import type { ClientGrpc } from '@nestjs/microservices';
import { propagateCancellation } from 'nestjs-cancellation/grpc';
import { lastValueFrom } from 'rxjs';
import type { Observable } from 'rxjs';

export const RENDER_CLIENT = Symbol('RENDER_CLIENT');

export interface RenderRequest {
  pages: number;
  page_ms: number;
}
export interface RenderReply {
  pages: number;
  elapsed_ms: number;
}
interface Renderer {
  render(request: RenderRequest): Observable<RenderReply>;
}

/** Calls `render.Renderer` (this app's own gRPC server, or RENDER_URL) with the caller's cancellation. */
@Injectable()
export class RenderClient implements OnModuleInit {
  private renderer!: Renderer;

  constructor(@Inject(RENDER_CLIENT) private readonly client: ClientGrpc) {}

  onModuleInit(): void {
    // Each call gets the remaining budget of the request it is made for as its deadline, and is cancelled
    // when that request's signal aborts.
    this.renderer = propagateCancellation(this.client.getService<Renderer>('Renderer'));
  }

  render(request: RenderRequest): Promise<RenderReply> {
    return lastValueFrom(this.renderer.render(request));
  }
}
