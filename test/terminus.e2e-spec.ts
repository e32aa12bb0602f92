/**
 * Kubernetes readiness (issue #14, item 5): `CancellationHealthIndicator` (nestjs-cancellation/terminus) reports
 * `up` while the application takes work and `down` from the moment the drain begins, on a readiness route left
 * out of cancellation, which keeps answering while every other new request is refused. In process on Express
 * and Fastify over HTTP and HTTPS; then the recipe of docs/recipes.md in a child process as Kubernetes drives
 * it: probes, a preStop wait while traffic still comes, SIGTERM, the drain, the exit within the pod's
 * termination grace period, with and without Terminus' own `gracefulShutdownTimeoutMs`.
 */
import 'reflect-metadata';
import { Controller, Get, Module } from '@nestjs/common';
import { HealthCheck, HealthCheckService, TerminusModule } from '@nestjs/terminus';
import { fileURLToPath } from 'node:url';
import {
  CancellationModule,
  CancellationService,
  RequestTimeout,
  SkipCancellation,
} from 'nestjs-cancellation';
import { CancellationHealthIndicator } from 'nestjs-cancellation/terminus';
import { ADAPTERS, createApp, request, sleep, startRequest, waitFor } from './utils/harness.js';
import type { AdapterName, RequestOptions, TestApp } from './utils/harness.js';
import { FixtureApp, fixtureNestVersion, spawnFixture } from './utils/fixture.js';
import { testCertificate } from './utils/tls.js';

// #region health-controller
@Controller('health')
@SkipCancellation() // answered while the application drains, when every other request gets 503
export class HealthController {
  constructor(
    private readonly health: HealthCheckService,
    private readonly cancellation: CancellationHealthIndicator,
  ) {}

  /** Readiness: fails from the moment shutdown begins, so that no new traffic is sent here. */
  @Get('ready')
  @HealthCheck()
  ready() {
    return this.health.check([() => this.cancellation.isReady()]);
  }

  /** Liveness: the process is fine while it drains; do not restart it. */
  @Get('live')
  live() {
    return { status: 'ok' };
  }
}

@Module({
  imports: [
    CancellationModule.forRoot({
      shutdownGracePeriodMs: 10_000, // requests in flight may finish (must fit in the pod's grace period)
      shutdownTimeoutMs: 20_000, // hard deadline: preStop + this < terminationGracePeriodSeconds
    }),
    TerminusModule, // gracefulShutdownTimeoutMs left at 0: the preStop hook does that wait
  ],
  controllers: [HealthController],
  providers: [CancellationHealthIndicator],
})
export class HealthModule {}
// #endregion health-controller

let slowStarted = 0;

@Controller('work')
class WorkController {
  @Get('slow')
  @RequestTimeout(false)
  async slow() {
    slowStarted++;
    await sleep(1_000);
    return { done: true };
  }

  @Get('quick')
  quick() {
    return { done: true };
  }
}

@Module({ imports: [HealthModule], controllers: [WorkController] })
class AppModule {}

const SCHEMES = ['http', 'https'] as const;

describe.each(ADAPTERS.flatMap((adapter) => SCHEMES.map((scheme) => [adapter, scheme] as const)))(
  'CancellationHealthIndicator on %s over %s',
  (adapter, scheme) => {
    let t: TestApp | undefined;
    const certificate = scheme === 'https' ? testCertificate() : undefined;
    const tls: RequestOptions = certificate === undefined ? {} : { ca: certificate.cert };
    const get = (path: string) => request(t!.port, path, tls);

    afterEach(async () => {
      if (t === undefined) return;
      await t.close();
      // Terminus logs every failed check at error level, the readiness one during the drain included.
      expect(t.logs.errors.filter((line) => !line.message.startsWith('Health Check has failed!'))).toEqual(
        [],
      );
      t = undefined;
    });

    it('is up while the application takes work and down from the moment the drain begins', async () => {
      t = await createApp(adapter, AppModule, certificate === undefined ? {} : { https: certificate });
      const ready = await get('/health/ready');
      expect(ready.status).toBe(200);
      expect(ready.json).toMatchObject({ status: 'ok', info: { cancellation: { status: 'up' } } });

      const before = slowStarted;
      const inFlight = startRequest(t.port, '/work/slow', tls);
      await waitFor(() => slowStarted > before, { message: 'the slow handler to start' });
      const closing = t.close();
      const cancellation = t.app.get(CancellationService);
      await waitFor(() => cancellation.drainingSignal.aborted, { message: 'the drain to begin' });

      const [notReady, live, work] = await Promise.all([
        get('/health/ready'),
        get('/health/live'),
        get('/work/quick'),
      ]);
      expect(notReady.status).toBe(503);
      expect(notReady.json).toMatchObject({
        status: 'error',
        error: {
          cancellation: { status: 'down', draining: true, message: 'The application is shutting down' },
        },
      });
      expect(live.status).toBe(200);
      expect(work.status).toBe(503);
      // The request admitted before the drain finishes within the grace period.
      expect((await inFlight.response()).status).toBe(200);
      await closing;
    });

    it('takes its key from the caller', async () => {
      t = await createApp(adapter, AppModule, certificate === undefined ? {} : { https: certificate });
      const indicator = t.app.get(CancellationHealthIndicator);
      expect(indicator.isReady('drain')).toEqual({ drain: { status: 'up' } });
    });
  },
);

const FIXTURE = fileURLToPath(new URL('./fixtures/terminus-app.mjs', import.meta.url));

/**
 * The pod as the recipe sets it up, in milliseconds (the recipe's seconds, scaled down): a preStop wait that
 * covers endpoint propagation, the drain's grace period and hard deadline, and the termination grace period
 * that all of it must fit in.
 */
const POD = { preStopMs: 400, graceMs: 1_000, deadlineMs: 2_000, terminationGraceMs: 3_000 };

describe.each(
  ADAPTERS.flatMap((adapter) => [0, 300].map((terminusSleepMs) => [adapter, terminusSleepMs] as const)),
)(
  'the Kubernetes recipe on %s (Terminus gracefulShutdownTimeoutMs %d)',
  (adapter: AdapterName, terminusSleepMs: number) => {
    let app: FixtureApp | undefined;

    afterEach(async () => {
      await app?.kill();
      app = undefined;
    });

    it('fails readiness at SIGTERM, drains, and exits within the termination grace period', async () => {
      app = new FixtureApp(
        spawnFixture(FIXTURE, {
          ...process.env,
          ADAPTER: adapter,
          GRACE_MS: String(POD.graceMs),
          TIMEOUT_MS: String(POD.deadlineMs),
          TERMINUS_SLEEP_MS: String(terminusSleepMs),
        }),
      );
      const listening = await app.next('listening', 20_000);
      expect(listening.nest).toBe(fixtureNestVersion());
      const port = listening.port as number;
      expect((await request(port, '/health/ready')).status).toBe(200);

      // The pod is deleted: Kubernetes runs the preStop hook (a sleep) while the endpoint removal propagates;
      // traffic that still arrives is served as usual.
      const deletedAt = performance.now();
      const inFlight = startRequest(port, '/work/slow');
      await app.next('slow-start');
      await sleep(POD.preStopMs);
      expect((await request(port, '/work/quick')).status).toBe(200);

      // Then SIGTERM: readiness fails at once, liveness holds, new requests are refused, the one in flight ends.
      const signalledAt = performance.now();
      app.child.kill('SIGTERM');
      await app.next('draining');
      const [ready, live, late] = await Promise.all([
        request(port, '/health/ready'),
        request(port, '/health/live'),
        request(port, '/work/quick'),
      ]);
      expect(ready.status).toBe(503);
      expect(ready.json).toMatchObject({ error: { cancellation: { status: 'down', draining: true } } });
      expect(live.status).toBe(200);
      expect(late.status).toBe(503);
      expect((await inFlight.response()).status).toBe(200);

      const exit = await app.exited;
      expect(exit).toMatchObject({ code: null, signal: 'SIGTERM' });
      // Terminus' sleep runs after the drain (in beforeApplicationShutdown): it only delays the exit.
      expect(exit.at - signalledAt).toBeGreaterThanOrEqual(terminusSleepMs);
      expect(exit.at - deletedAt).toBeLessThan(POD.terminationGraceMs);
      const errors = app.events.filter(
        (line) => line.event === 'log' && (line.level === 'error' || line.level === 'fatal'),
      );
      // Only Terminus' own line for the failed readiness check.
      expect(errors.map((line) => String(line.message).split('!')[0])).toEqual(['Health Check has failed']);
      expect(app.stderr).toBe('');
    }, 30_000);
  },
);
