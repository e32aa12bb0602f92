import 'reflect-metadata';
import { jest } from '@jest/globals';
import { Logger } from '@nestjs/common';
import type { HttpAdapterHost } from '@nestjs/core';
import { CancellationError } from '../core/cancellation-error.js';
import { CancellationRuntime } from '../module/cancellation-runtime.js';
import { DEFAULT_OPTIONS } from '../module/cancellation.options.js';
import type { ResolvedCancellationOptions } from '../module/cancellation.options.js';
import { CancellationEvents } from '../registry/cancellation-events.js';
import { InFlightRegistry } from '../registry/in-flight.registry.js';
import { StillRunningDetector } from '../registry/still-running.detector.js';
import type { TrackedWork } from '../registry/tracked-work.js';
import { ApplicationSignals } from './application-signals.js';
import { ConnectionTracker } from './connection-tracker.js';
import { CancellationShutdown } from './shutdown.service.js';

type LogLevel = 'log' | 'error' | 'warn' | 'debug' | 'verbose' | 'fatal';
const LEVELS: readonly LogLevel[] = ['log', 'error', 'warn', 'debug', 'verbose', 'fatal'];

function adapterHost(type: string | undefined = 'express'): HttpAdapterHost {
  const httpAdapter = type === undefined ? undefined : { getType: () => type };
  return { httpAdapter } as unknown as HttpAdapterHost;
}

/** A request as the tests below describe it: its platform request, its id and how long it ran. */
interface FakeRequest {
  readonly request: object;
  readonly elapsedMs: number;
  readonly id?: string;
}

/** The application's shutdown parts wired as `CancellationModule` wires them, seen through one object. */
function wire(options: Partial<ResolvedCancellationOptions>, type: string | undefined) {
  const resolved = { ...DEFAULT_OPTIONS, ...options };
  const host = adapterHost(type);
  const signals = new ApplicationSignals();
  const registry = new InFlightRegistry(new StillRunningDetector(resolved));
  const events = new CancellationEvents(resolved);
  const connections = new ConnectionTracker(resolved);
  const runtime = new CancellationRuntime(resolved, signals, registry, events, connections, host);
  const shutdown = new CancellationShutdown(resolved, signals, registry, connections, host);
  return {
    get shutdownSignal(): AbortSignal {
      return signals.shutdownSignal;
    },
    get isShuttingDown(): boolean {
      return signals.isShuttingDown;
    },
    shutdownReason: () => signals.shutdownReason(),
    track: (work: TrackedWork) => registry.track(work),
    untrack: (work: TrackedWork) => registry.untrack(work),
    get inFlightCount(): number {
      return registry.size;
    },
    beforeApplicationShutdown: (signal?: string) => shutdown.beforeApplicationShutdown(signal),
    onApplicationShutdown: (signal?: string) => shutdown.onApplicationShutdown(signal),
    /** Reports `request` cancelled, as a request scope does. */
    reportCancelled(request: FakeRequest, reason: CancellationError): void {
      const { platform } = runtime;
      const work = {
        id: request.id ?? 'req',
        method: platform.method(request.request),
        route: platform.route(request.request),
        startedAt: 0,
        abortedAt: request.elapsedMs,
      } as unknown as TrackedWork;
      events.cancelled(work, reason);
    },
    get platform() {
      return runtime.platform;
    },
  };
}

type Lifecycle = ReturnType<typeof wire>;

/** Every wiring a test made, so that `afterEach` can disarm the hard-deadline timers they started. */
const made: Lifecycle[] = [];

function lifecycleWith(options: Partial<ResolvedCancellationOptions> = {}, type?: string): Lifecycle {
  const lifecycle = wire(options, type);
  made.push(lifecycle);
  return lifecycle;
}

interface FakeScope {
  readonly scope: TrackedWork;
  readonly cancel: jest.Mock<(reason: CancellationError) => void>;
}

/** A request in flight that, like the real one, leaves the registry when it is cancelled. */
function trackedScope(lifecycle: Lifecycle, check?: (reason: CancellationError) => void): FakeScope {
  const cancel = jest.fn((reason: CancellationError) => {
    check?.(reason);
    lifecycle.untrack(scope);
  });
  const scope = { cancel } as unknown as TrackedWork;
  lifecycle.track(scope);
  return { scope, cancel };
}

describe('shutdown: signals, registry, events and hooks together', () => {
  let logs: Record<LogLevel, jest.Mock<(...args: unknown[]) => void>>;

  beforeEach(() => {
    logs = {} as typeof logs;
    for (const level of LEVELS) {
      logs[level] = jest.fn<(...args: unknown[]) => void>();
      jest.spyOn(Logger.prototype, level).mockImplementation(logs[level]);
    }
  });

  afterEach(() => {
    // What Nest does after closing the server: disarms the hard deadline (and logs nothing new).
    for (const lifecycle of made.splice(0)) lifecycle.onApplicationShutdown();
    jest.restoreAllMocks();
  });

  describe('before shutdown', () => {
    it('has a live shutdown signal and tracks requests', () => {
      const lifecycle = lifecycleWith();
      expect(lifecycle.shutdownSignal.aborted).toBe(false);
      expect(lifecycle.isShuttingDown).toBe(false);
      const a = trackedScope(lifecycle);
      trackedScope(lifecycle);
      expect(lifecycle.inFlightCount).toBe(2);
      lifecycle.untrack(a.scope);
      expect(lifecycle.inFlightCount).toBe(1);
      lifecycle.untrack(a.scope);
      expect(lifecycle.inFlightCount).toBe(1);
    });

    it('returns the same shutdown signal every time', () => {
      const lifecycle = lifecycleWith();
      expect(lifecycle.shutdownSignal).toBe(lifecycle.shutdownSignal);
    });
  });

  describe('beforeApplicationShutdown', () => {
    it("aborts the shutdown signal with a CancellationError of kind 'shutdown' that names the signal", () => {
      const lifecycle = lifecycleWith();
      lifecycle.beforeApplicationShutdown('SIGTERM');
      const { shutdownSignal } = lifecycle;
      expect(shutdownSignal.aborted).toBe(true);
      expect(shutdownSignal.reason).toBeInstanceOf(CancellationError);
      expect(shutdownSignal.reason).toMatchObject({ kind: 'shutdown' });
      expect((shutdownSignal.reason as CancellationError).message).toContain('SIGTERM');
      expect(lifecycle.isShuttingDown).toBe(true);
      expect(lifecycle.shutdownReason()).toBe(shutdownSignal.reason);
    });

    it('gives the default shutdown message for app.close(), which passes no signal', () => {
      const lifecycle = lifecycleWith();
      lifecycle.beforeApplicationShutdown();
      expect(lifecycle.shutdownReason().kind).toBe('shutdown');
      expect(lifecycle.shutdownReason().message).toBe('The application is shutting down');
    });

    it('fires abort listeners of the shutdown signal once', () => {
      const lifecycle = lifecycleWith();
      const listener = jest.fn();
      lifecycle.shutdownSignal.addEventListener('abort', listener);
      lifecycle.beforeApplicationShutdown('SIGTERM');
      lifecycle.onApplicationShutdown('SIGTERM');
      lifecycle.beforeApplicationShutdown('SIGINT');
      expect(listener).toHaveBeenCalledTimes(1);
    });

    it('cancels every request in flight exactly once, with the shutdown reason, after aborting the signal', () => {
      const lifecycle = lifecycleWith();
      const seenAborted: boolean[] = [];
      const scopes = Array.from({ length: 10 }, () =>
        trackedScope(lifecycle, () => seenAborted.push(lifecycle.shutdownSignal.aborted)),
      );
      lifecycle.beforeApplicationShutdown('SIGTERM');
      for (const { cancel } of scopes) {
        expect(cancel).toHaveBeenCalledTimes(1);
        expect(cancel).toHaveBeenCalledWith(lifecycle.shutdownSignal.reason);
      }
      expect(seenAborted).toEqual(Array.from({ length: 10 }, () => true));
      expect(lifecycle.inFlightCount).toBe(0);
    });

    it('cancels a request that ends in the middle of the walk only if it is still in flight', () => {
      const lifecycle = lifecycleWith();
      let second: FakeScope | undefined = undefined;
      // Cancelling the first request ends the second one as well (e.g. they share a connection).
      const first = trackedScope(lifecycle, () => lifecycle.untrack(second!.scope));
      second = trackedScope(lifecycle);
      lifecycle.beforeApplicationShutdown('SIGTERM');
      expect(first.cancel).toHaveBeenCalledTimes(1);
      expect(second.cancel).not.toHaveBeenCalled();
    });
  });

  describe('onApplicationShutdown', () => {
    it('does nothing after beforeApplicationShutdown', () => {
      const lifecycle = lifecycleWith();
      const { cancel } = trackedScope(lifecycle);
      lifecycle.beforeApplicationShutdown('SIGTERM');
      const reason = lifecycle.shutdownSignal.reason as CancellationError;
      const late = trackedScope(lifecycle);
      logs.log.mockClear();

      lifecycle.onApplicationShutdown('SIGTERM');

      expect(lifecycle.shutdownSignal.reason).toBe(reason);
      expect(cancel).toHaveBeenCalledTimes(1);
      expect(late.cancel).not.toHaveBeenCalled();
      expect(logs.log).not.toHaveBeenCalled();
    });

    it('starts the shutdown itself if beforeApplicationShutdown never ran (an earlier hook failed)', () => {
      const lifecycle = lifecycleWith();
      const { cancel } = trackedScope(lifecycle);
      lifecycle.onApplicationShutdown('SIGINT');
      expect(lifecycle.shutdownSignal.aborted).toBe(true);
      expect(lifecycle.shutdownReason().message).toContain('SIGINT');
      expect(cancel).toHaveBeenCalledTimes(1);
    });
  });

  describe('logging', () => {
    it("logs one summary line at 'log' level when shutdown cancelled requests in flight", () => {
      const lifecycle = lifecycleWith();
      trackedScope(lifecycle);
      trackedScope(lifecycle);
      trackedScope(lifecycle);
      lifecycle.beforeApplicationShutdown('SIGTERM');
      lifecycle.onApplicationShutdown('SIGTERM');
      expect(logs.log).toHaveBeenCalledTimes(1);
      expect(logs.log.mock.calls[0]![0]).toMatch(/3 requests/);
      expect(logs.error).not.toHaveBeenCalled();
      expect(logs.warn).not.toHaveBeenCalled();
      expect(logs.fatal).not.toHaveBeenCalled();
    });

    it('says "1 request" for one', () => {
      const lifecycle = lifecycleWith();
      trackedScope(lifecycle);
      lifecycle.beforeApplicationShutdown();
      expect(logs.log).toHaveBeenCalledTimes(1);
      expect(logs.log.mock.calls[0]![0]).toMatch(/\b1 request\b/);
    });

    it('logs nothing when no request was in flight', () => {
      const lifecycle = lifecycleWith();
      lifecycle.beforeApplicationShutdown('SIGTERM');
      lifecycle.onApplicationShutdown('SIGTERM');
      for (const level of LEVELS) expect(logs[level]).not.toHaveBeenCalled();
    });

    it('logs nothing when logCancellations is false', () => {
      const lifecycle = lifecycleWith({ logCancellations: false });
      const { cancel } = trackedScope(lifecycle);
      lifecycle.beforeApplicationShutdown('SIGTERM');
      expect(cancel).toHaveBeenCalledTimes(1);
      for (const level of LEVELS) expect(logs[level]).not.toHaveBeenCalled();
    });

    it('reports a cancelled Express request at verbose level, with method, route, kind and elapsed ms', () => {
      const lifecycle = lifecycleWith({}, 'express');
      const request = { method: 'GET', baseUrl: '/reports', route: { path: '/:id' }, url: '/reports/7' };
      const scope = { request, elapsedMs: 201.6, id: 'req-7' };
      lifecycle.reportCancelled(scope, new CancellationError('client-disconnected'));
      expect(logs.verbose).toHaveBeenCalledTimes(1);
      expect(logs.verbose.mock.calls[0]![0]).toBe(
        'GET /reports/:id [req-7] cancelled (client-disconnected) after 202 ms',
      );
      expect(logs.error).not.toHaveBeenCalled();
      expect(logs.log).not.toHaveBeenCalled();
    });

    it('reports a cancelled Fastify request with its route pattern', () => {
      const lifecycle = lifecycleWith({}, 'fastify');
      const request = { method: 'POST', url: '/jobs/3', routeOptions: { url: '/jobs/:id' }, raw: {} };
      const scope = { request, elapsedMs: 12, id: 'job-3' };
      lifecycle.reportCancelled(scope, new CancellationError('timeout'));
      expect(logs.verbose.mock.calls[0]![0]).toBe('POST /jobs/:id [job-3] cancelled (timeout) after 12 ms');
    });

    it('reports nothing when logCancellations is false', () => {
      const lifecycle = lifecycleWith({ logCancellations: false });
      const scope = { request: { method: 'GET', url: '/' }, elapsedMs: 1 };
      lifecycle.reportCancelled(scope, new CancellationError('shutdown'));
      for (const level of LEVELS) expect(logs[level]).not.toHaveBeenCalled();
    });
  });

  describe('platform', () => {
    it('is chosen from the HTTP adapter once it exists, and defaults to Express without one', () => {
      const request = {
        method: 'GET',
        url: '/x',
        originalUrl: '/x',
        routeOptions: { url: '/fastify-route' },
      };
      expect(lifecycleWith({}, 'fastify').platform.route(request)).toBe('/fastify-route');
      expect(lifecycleWith({}, 'express').platform.route(request)).toBe('/x');
      expect(lifecycleWith({}, undefined).platform.route(request)).toBe('/x');
    });

    it('names a request without a route pattern by its path, never its query string', () => {
      const query = '/graphql?query=%7Bslow%7D&token=secret';
      const express = lifecycleWith({}, 'express').platform;
      expect(express.route({ method: 'GET', url: '/graphql', originalUrl: query })).toBe('/graphql');
      expect(express.route({ method: 'GET', url: query })).toBe('/graphql');
      expect(
        express.route({ method: 'GET', originalUrl: '/api/x', route: { path: '/x' }, baseUrl: '/api' }),
      ).toBe('/api/x');
      const fastify = lifecycleWith({}, 'fastify').platform;
      expect(fastify.route({ method: 'GET', url: query })).toBe('/graphql');
      expect(fastify.route({ method: 'GET', url: '/plain' })).toBe('/plain');
    });
  });
});
