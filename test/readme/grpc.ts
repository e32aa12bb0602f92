// The examples of docs/grpc.md, verbatim between the region markers: test/readme.e2e-spec.ts checks each copy
// and test/grpc.e2e-spec.ts runs the code against a real gRPC server and client (@grpc/grpc-js, loopback).
import { Metadata } from '@grpc/grpc-js';
import { Controller, Get, Inject, Injectable, Module, Param, Query } from '@nestjs/common';
import type { INestApplication, OnModuleInit } from '@nestjs/common';
import { ClientsModule, GrpcMethod, Transport } from '@nestjs/microservices';
import type { ClientGrpc, MicroserviceOptions } from '@nestjs/microservices';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { interval, lastValueFrom, map, take, toArray } from 'rxjs';
import type { Observable } from 'rxjs';
import { CancellationModule, CancellationService, RequestTimeout } from 'nestjs-cancellation';
import { grpcCallOptions, propagateCancellation, untilAborted } from 'nestjs-cancellation/grpc';

/** test/readme/grpc/work.proto */
export const WORK_PROTO = fileURLToPath(new URL('./grpc/work.proto', import.meta.url));

export interface RunRequest {
  tag: string;
  ms: number;
}
export interface RunReply {
  tag: string;
  remaining: number;
}
export interface TicksRequest {
  ms: number;
  count: number;
}
export interface Tick {
  n: number;
}

// #region grpc-handler
@Controller()
export class WorkController {
  constructor(private readonly cancellation: CancellationService) {}

  @GrpcMethod('Work', 'Run')
  async run({ tag, ms }: RunRequest): Promise<RunReply> {
    // The call's signal: aborts when the caller cancels, when the call's deadline passes, at shutdown.
    await sleep(ms, undefined, { signal: this.cancellation.signal });
    return { tag, remaining: Math.round(this.cancellation.remainingMs ?? -1) };
  }

  @GrpcMethod('Work', 'Ticks')
  ticks({ ms, count }: TicksRequest): Observable<Tick> {
    // An Observable is unsubscribed when the call is cancelled.
    return interval(ms).pipe(
      take(count),
      map((n) => ({ n })),
    );
  }
}
// #endregion grpc-handler

/** Binds the gRPC server of a hybrid application to `url` (`host:port`) and starts it. */
export async function connectGrpc(app: INestApplication, url: string): Promise<void> {
  // #region grpc-hybrid
  app.connectMicroservice<MicroserviceOptions>(
    { transport: Transport.GRPC, options: { package: 'work', protoPath: WORK_PROTO, url } },
    // The gRPC calls run CancellationModule's interceptor and exception filter only with this.
    { inheritAppConfig: true },
  );
  app.enableShutdownHooks();
  await app.startAllMicroservices();
  // #endregion grpc-hybrid
}

// #region grpc-client
export const WORK_CLIENT = Symbol('WORK_CLIENT');

interface WorkService {
  run(request: RunRequest): Observable<RunReply>;
  ticks(request: TicksRequest, metadata?: Metadata, options?: object): Observable<Tick>;
}

@Injectable()
export class WorkClient implements OnModuleInit {
  private work!: WorkService;

  constructor(@Inject(WORK_CLIENT) private readonly client: ClientGrpc) {}

  onModuleInit(): void {
    // Each call carries the remaining budget of the request (or gRPC call) it is made for as its
    // deadline, and is cancelled when that request's signal aborts.
    this.work = propagateCancellation(this.client.getService<WorkService>('Work'));
  }

  run(request: RunRequest): Promise<RunReply> {
    return lastValueFrom(this.work.run(request));
  }
}

@Controller()
export class RelayController {
  constructor(private readonly work: WorkClient) {}

  // gRPC -> gRPC: the service called sees what is left of this call's deadline.
  @GrpcMethod('Work', 'Relay')
  relay(request: RunRequest): Promise<RunReply> {
    return this.work.run(request);
  }
}

@Controller('runs')
export class RunsController {
  constructor(private readonly work: WorkClient) {}

  // HTTP -> gRPC: the request's budget, or the shorter one its caller sent in x-request-timeout-ms.
  @Get(':tag')
  @RequestTimeout(5_000)
  run(@Param('tag') tag: string, @Query('ms') ms: string): Promise<RunReply> {
    return this.work.run({ tag, ms: Number(ms) });
  }
}
// #endregion grpc-client

// #region grpc-call-options
@Controller('ticks')
export class TicksController {
  private readonly work: WorkService;

  constructor(@Inject(WORK_CLIENT) client: ClientGrpc) {
    this.work = client.getService<WorkService>('Work');
  }

  @Get()
  ticks(@Query('ms') ms: string, @Query('count') count: string): Promise<Tick[]> {
    const metadata = new Metadata();
    metadata.set('x-caller', 'ticks-controller');
    // By hand: the deadline in the call options, the cancel as an RxJS operator.
    const ticks$ = this.work.ticks({ ms: Number(ms), count: Number(count) }, metadata, grpcCallOptions());
    return lastValueFrom(ticks$.pipe(untilAborted(), toArray()));
  }
}
// #endregion grpc-call-options

// #region grpc-module
@Module({
  imports: [
    CancellationModule.forRoot({ deadlineHeader: 'x-request-timeout-ms' }),
    ClientsModule.registerAsync([
      {
        name: WORK_CLIENT,
        useFactory: () => ({
          transport: Transport.GRPC,
          options: { package: 'work', protoPath: WORK_PROTO, url: process.env.WORK_URL ?? 'localhost:5000' },
        }),
      },
    ]),
  ],
  controllers: [WorkController, RelayController, RunsController, TicksController],
  providers: [WorkClient],
})
export class WorkModule {}
// #endregion grpc-module
