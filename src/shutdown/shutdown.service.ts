import { Inject, Injectable, Logger } from '@nestjs/common';
import type {
  BeforeApplicationShutdown,
  OnApplicationBootstrap,
  OnApplicationShutdown,
  OnModuleDestroy,
} from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import type { Server } from 'node:http';
import { Server as NetServer } from 'node:net';
import { RESOLVED_OPTIONS } from '../module/cancellation.module-definition.js';
import type { ResolvedCancellationOptions } from '../module/cancellation.options.js';
import { InFlightRegistry } from '../registry/in-flight.registry.js';
import { ApplicationSignals } from './application-signals.js';
import { acceptQueueLength } from './accept-queue.js';
import { ConnectionTracker } from './connection-tracker.js';
import { SignalWitness } from './signal-witness.js';

/** How long shutdown waits at most for the handlers it cancelled to settle before the other modules' hooks run. */
const SETTLE_MS = 250;
/** It stops waiting sooner once none of them has settled for this long: the rest ignore their signal. */
const SETTLE_QUIET_MS = 100;
/**
 * How long the listener may stay open at the most, once the drain is over, for the event loop to accept what the
 * kernel has queued: Node accepts one connection a turn, so a queue that grew while the process was busy (or
 * descheduled) takes as many turns.
 */
const ACCEPT_MAX_MS = 250;

/** Resolves after one turn of the event loop, its poll phase (where connections are accepted) included. */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * The application's shutdown, in two phases: drain (refuse new work, give work in flight
 * `shutdownGracePeriodMs` to finish), then abort what is left; with a hard deadline that ends whatever still
 * holds the HTTP server open.
 *
 * It starts in `onModuleDestroy`, which `CancellationModule` makes the first module to run (`hook-order.ts`),
 * so that in-flight work is stopped and answered before any other module takes apart what that work uses
 * (closes its pool in its own `onModuleDestroy`, flushes a client in `beforeApplicationShutdown`), on
 * `app.close()` and on a signal alike. `beforeApplicationShutdown` and `onApplicationShutdown` only confirm it
 * (idempotent), for the case where an earlier hook failed.
 *
 * Before aborting, it closes the HTTP server's listener, once the event loop has accepted what the kernel had
 * queued: aborting many requests keeps the event loop busy, and connections that wait, unaccepted, in the
 * listen queue meanwhile would be reset when the listener closes afterwards.
 * @internal
 */
@Injectable()
export class CancellationShutdown
  implements OnApplicationBootstrap, OnModuleDestroy, BeforeApplicationShutdown, OnApplicationShutdown
{
  private readonly logger = new Logger('Cancellation');
  private hardDeadline: NodeJS.Timeout | undefined = undefined;
  private shutdown: Promise<void> | undefined = undefined;
  /** When the hard deadline passes (`performance.now()` time). */
  private deadlineAt = 0;
  private readonly witness = new SignalWitness();

  constructor(
    @Inject(RESOLVED_OPTIONS) private readonly options: ResolvedCancellationOptions,
    @Inject(ApplicationSignals) private readonly signals: ApplicationSignals,
    @Inject(InFlightRegistry) private readonly registry: InFlightRegistry,
    @Inject(ConnectionTracker) private readonly connections: ConnectionTracker,
    @Inject(HttpAdapterHost) private readonly adapterHost: HttpAdapterHost,
  ) {}

  /**
   * Starts counting the HTTP server's sockets, for the drain and the hard deadline, and watches for the
   * process signal that `enableShutdownHooks()` will turn into a shutdown (for the reason's message).
   */
  onApplicationBootstrap(): void {
    const server = this.server();
    if (server !== undefined && typeof server.on === 'function') this.connections.attach(server);
    this.witness.watch();
  }

  /** The first shutdown hook of the application: drains, then aborts (see the class). */
  onModuleDestroy(): Promise<void> {
    return this.beforeApplicationShutdown(this.witness.signal);
  }

  /**
   * Drains, then aborts what is still running: refuses new work and aborts `drainingSignal`, gives work in
   * flight `shutdownGracePeriodMs` to finish, closes the listener, then aborts `shutdownSignal` and cancels
   * everything still in flight. Arms the hard deadline first. Idempotent: a second call awaits the first.
   */
  beforeApplicationShutdown(signal?: string): Promise<void> {
    return (this.shutdown ??= this.run(signal));
  }

  /** The HTTP server is closed: make sure everything was aborted, and disarm the hard deadline. */
  onApplicationShutdown(signal?: string): void {
    this.abortInFlight(signal);
    clearTimeout(this.hardDeadline);
    this.witness.stop();
  }

  private async run(signal: string | undefined): Promise<void> {
    if (!this.signals.beginDrain(signal)) return;
    this.deadlineAt = performance.now() + this.options.shutdownTimeoutMs;
    this.hardDeadline = setTimeout(() => this.connections.forceClose(), this.options.shutdownTimeoutMs);
    this.hardDeadline.unref();
    const grace = this.options.shutdownGracePeriodMs;
    if (grace > 0) await this.drain(grace);
    // Synchronous up to the abort when there is no listener to close (an application context, a test).
    if (this.server()?.listening === true) {
      await this.stopListening();
      this.connections.closeSilentConnections(this.deadlineAt);
    }
    this.abortInFlight(signal);
    await this.settle();
  }

  /**
   * Waits a moment for the handlers just cancelled to settle (a query being cancelled on its server, a `finally`
   * releasing a connection), then for a turn in which the answers are written: the other modules' hooks, which run
   * next, may close what those handlers use. It stops waiting once none has settled for `SETTLE_QUIET_MS` (the
   * rest ignore their signal), after `SETTLE_MS` at most, and within the hard deadline.
   */
  private async settle(): Promise<void> {
    const { registry } = this;
    if (registry.lingeringCount > 0) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(cap);
          clearTimeout(quiet);
          resolve();
        };
        const cap = setTimeout(done, Math.min(SETTLE_MS, Math.max(0, this.deadlineAt - performance.now())));
        let quiet = setTimeout(done, SETTLE_QUIET_MS);
        registry.whenSettled(() => {
          if (registry.lingeringCount === 0) return done();
          clearTimeout(quiet);
          quiet = setTimeout(done, SETTLE_QUIET_MS);
        });
      });
      registry.whenSettled(undefined);
    }
    if (this.server() !== undefined) await nextTurn();
  }

  private server(): Server | undefined {
    return this.adapterHost.httpAdapter?.getHttpServer?.() as Server | undefined;
  }

  /**
   * Lets the event loop accept what the kernel has queued, then closes the listener: new connections are
   * refused by the kernel from then on, while the ones accepted keep going until they are answered (a request
   * on them meets the door's 503). Nest's own `close()` of the server later waits for them. A connection still
   * queued when the listener closes is reset, so it closes right after the kernel reports an empty queue
   * (Linux), or else after a turn that accepted nothing new; within `ACCEPT_MAX_MS` at the most.
   */
  private async stopListening(): Promise<void> {
    const server = this.server();
    if (server?.listening !== true) return;
    const address = server.address();
    const { connections } = this;
    const until = performance.now() + ACCEPT_MAX_MS;
    for (;;) {
      const seen = connections.acceptedCount;
      await nextTurn();
      if (performance.now() >= until) break;
      const queued = typeof address === 'object' && address !== null ? acceptQueueLength(address) : undefined;
      if (queued === 0 || (queued === undefined && connections.acceptedCount === seen)) break;
    }
    // The listener only: `http.Server#close()` would also destroy the idle keep-alive connections now, and a
    // client sending its next request on one at that moment gets a reset. Left open until Nest closes the
    // server, after the abort and the other modules' hooks, most carry that request meanwhile and get the
    // door's 503 with `Connection: close`.
    if (server.listening) NetServer.prototype.close.call(server);
  }

  /** Waits up to `grace` ms for the work in flight and the requests admitted before the drain to end. */
  private async drain(grace: number): Promise<void> {
    const { registry, connections } = this;
    await new Promise<void>((resolve) => {
      const check = (): void => {
        if (registry.size > 0 || connections.openAdmitted > 0) return;
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(resolve, grace);
      connections.admitOpenRequests(check);
      registry.whenUntracked(check);
      const open = Math.max(registry.size, connections.openAdmitted);
      if (open > 0 && this.options.logCancellations) {
        this.logger.log(`Draining ${open} request(s) in flight for up to ${grace} ms`);
      }
      check();
    });
    registry.whenUntracked(undefined);
    connections.stopWatchingAdmitted();
  }

  private abortInFlight(signal: string | undefined): void {
    if (!this.signals.beginShutdown(signal)) return;
    const count = this.registry.cancelAll(this.signals.shutdownReason());
    if (count > 0 && this.options.logCancellations) {
      this.logger.log(`Shutdown cancelled ${count} request${count === 1 ? '' : 's'} in flight`);
    }
  }
}
