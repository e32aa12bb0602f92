import 'reflect-metadata';
import { Inject, Injectable, Module } from '@nestjs/common';
import type { INestApplication } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import type { TestingModule } from '@nestjs/testing';
import { CancellationError } from '../core/cancellation-error.js';
import { CancellationService } from '../core/cancellation.service.js';
import { RESOLVED_OPTIONS } from './cancellation.module-definition.js';
import { CancellationModule } from './cancellation.module.js';
import type { CancellationModuleOptions, ResolvedCancellationOptions } from './cancellation.options.js';

/** A stand-in for @nestjs/config: a module that exports a value the options are computed from. */
const SETTINGS = Symbol('settings');

interface Settings {
  readonly requestTimeoutMs: unknown;
}

function settingsModule(settings: Settings) {
  @Module({ providers: [{ provide: SETTINGS, useValue: settings }], exports: [SETTINGS] })
  class SettingsModule {}
  return SettingsModule;
}

function resolvedOptions(moduleRef: TestingModule): ResolvedCancellationOptions {
  return moduleRef.get<ResolvedCancellationOptions>(RESOLVED_OPTIONS, { strict: false });
}

/** The error compiling a module throws, or fails the test if it compiles. */
async function compileError(imports: NonNullable<Parameters<typeof Test.createTestingModule>[0]['imports']>) {
  let moduleRef: TestingModule | undefined;
  try {
    moduleRef = await Test.createTestingModule({ imports }).compile();
  } catch (err) {
    return err as Error;
  }
  await moduleRef.close();
  throw new Error('the module compiled');
}

describe('CancellationModule.forRoot()', () => {
  let moduleRef: TestingModule | undefined;

  afterEach(async () => {
    await moduleRef?.close();
    moduleRef = undefined;
  });

  it('compiles without options and provides CancellationService with the defaults', async () => {
    moduleRef = await Test.createTestingModule({ imports: [CancellationModule.forRoot()] }).compile();
    expect(moduleRef.get(CancellationService)).toBeInstanceOf(CancellationService);
    expect(resolvedOptions(moduleRef)).toEqual({
      timeoutMs: false,
      timeoutStatus: 504,
      retryAfterSeconds: 1,
      shutdownGracePeriodMs: 0,
      shutdownTimeoutMs: 10_000,
      deadlineHeader: false,
      logCancellations: true,
      requestIdHeader: 'x-request-id',
      stillRunningWarningMs: false,
      metrics: false,
      asyncContext: true,
      exclude: [],
    });
  });

  it('resolves the options it is given', async () => {
    moduleRef = await Test.createTestingModule({
      imports: [
        CancellationModule.forRoot({
          timeoutMs: 2_000,
          retryAfterSeconds: 5,
          logCancellations: false,
          requestIdHeader: 'X-Correlation-Id',
          stillRunningWarningMs: 1_000,
        }),
      ],
    }).compile();
    expect(resolvedOptions(moduleRef)).toEqual({
      timeoutMs: 2_000,
      timeoutStatus: 504,
      retryAfterSeconds: 5,
      shutdownGracePeriodMs: 0,
      shutdownTimeoutMs: 10_000,
      deadlineHeader: false,
      logCancellations: false,
      requestIdHeader: 'x-correlation-id',
      stillRunningWarningMs: 1_000,
      metrics: false,
      asyncContext: true,
      exclude: [],
    });
  });

  it.each<[string, unknown]>([
    ['timeoutMs', -5],
    ['timeoutStatus', 200],
    ['retryAfterSeconds', 1.5],
    ['logCancellations', 'yes'],
    ['requestIdHeader', 'x request id'],
    ['requestIdHeader', true],
    ['stillRunningWarningMs', 0],
    ['metrics', 1],
  ])('fails to compile with a bad %s, naming the option', async (option, value) => {
    const options = { [option]: value } as CancellationModuleOptions;
    const error = await compileError([CancellationModule.forRoot(options)]);
    expect(error).toBeInstanceOf(TypeError);
    expect(error.message).toContain(`"${option}"`);
  });

  it('fails to compile with an unknown option, naming it', async () => {
    const options = { timeOutMs: 100 } as CancellationModuleOptions;
    const error = await compileError([CancellationModule.forRoot(options)]);
    expect(error.message).toContain('"timeOutMs"');
    expect(error.message).toContain('timeoutMs');
  });

  it('is global: a feature module that does not import it can inject CancellationService', async () => {
    @Injectable()
    class ReportService {
      constructor(@Inject(CancellationService) readonly cancellation: CancellationService) {}
    }
    @Module({ providers: [ReportService], exports: [ReportService] })
    class ReportModule {}

    moduleRef = await Test.createTestingModule({
      imports: [CancellationModule.forRoot(), ReportModule],
    }).compile();
    const report = moduleRef.get(ReportService, { strict: false });
    expect(report.cancellation).toBe(moduleRef.get(CancellationService));
  });
});

describe('CancellationModule.forRootAsync()', () => {
  let moduleRef: TestingModule | undefined;

  afterEach(async () => {
    await moduleRef?.close();
    moduleRef = undefined;
  });

  it('takes its options from a factory that injects a provider of another module', async () => {
    moduleRef = await Test.createTestingModule({
      imports: [
        CancellationModule.forRootAsync({
          imports: [settingsModule({ requestTimeoutMs: 7_500 })],
          inject: [SETTINGS],
          useFactory: (settings: Settings) => ({ timeoutMs: settings.requestTimeoutMs as number }),
        }),
      ],
    }).compile();
    expect(moduleRef.get(CancellationService)).toBeInstanceOf(CancellationService);
    expect(resolvedOptions(moduleRef).timeoutMs).toBe(7_500);
    expect(resolvedOptions(moduleRef).timeoutStatus).toBe(504);
  });

  it('accepts an async factory', async () => {
    moduleRef = await Test.createTestingModule({
      imports: [
        CancellationModule.forRootAsync({
          useFactory: async () => {
            await new Promise((resolve) => setImmediate(resolve));
            return { timeoutStatus: 503 };
          },
        }),
      ],
    }).compile();
    expect(resolvedOptions(moduleRef).timeoutStatus).toBe(503);
  });

  it('accepts a class with createCancellationOptions()', async () => {
    @Injectable()
    class CancellationConfig {
      createCancellationOptions(): CancellationModuleOptions {
        return { retryAfterSeconds: 30 };
      }
    }
    moduleRef = await Test.createTestingModule({
      imports: [CancellationModule.forRootAsync({ useClass: CancellationConfig })],
    }).compile();
    expect(resolvedOptions(moduleRef).retryAfterSeconds).toBe(30);
  });

  it('fails to compile when the factory returns a bad value, naming the option and the value', async () => {
    const error = await compileError([
      CancellationModule.forRootAsync({
        imports: [settingsModule({ requestTimeoutMs: '100' })],
        inject: [SETTINGS],
        useFactory: (settings: Settings) => ({ timeoutMs: settings.requestTimeoutMs as number }),
      }),
    ]);
    expect(error).toBeInstanceOf(TypeError);
    expect(error.message).toContain('"timeoutMs"');
    expect(error.message).toContain('"100"');
  });

  it('fails to compile when the factory returns an unknown option, naming it', async () => {
    const error = await compileError([
      CancellationModule.forRootAsync({
        useFactory: () => ({ timeout: 100 }) as CancellationModuleOptions,
      }),
    ]);
    expect(error.message).toContain('"timeout"');
  });

  it('is global too', async () => {
    @Injectable()
    class JobService {
      constructor(@Inject(CancellationService) readonly cancellation: CancellationService) {}
    }
    @Module({ providers: [JobService] })
    class JobModule {}

    moduleRef = await Test.createTestingModule({
      imports: [CancellationModule.forRootAsync({ useFactory: () => ({}) }), JobModule],
    }).compile();
    expect(moduleRef.get(JobService, { strict: false }).cancellation).toBeInstanceOf(CancellationService);
  });
});

describe('CancellationService outside a request', () => {
  let app: INestApplication | undefined;

  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  async function startApp(): Promise<{ app: INestApplication; service: CancellationService }> {
    const moduleRef = await Test.createTestingModule({ imports: [CancellationModule.forRoot()] }).compile();
    app = moduleRef.createNestApplication({ logger: false });
    await app.init();
    return { app, service: app.get(CancellationService) };
  }

  it("gives the application's shutdown signal as its signal", async () => {
    const { service } = await startApp();
    expect(service.signal).toBe(service.shutdownSignal);
    expect(service.signal.aborted).toBe(false);
  });

  it('is not cancelled before app.close(), and is afterwards', async () => {
    const started = await startApp();
    const { service } = started;
    expect(service.isCancelled).toBe(false);
    expect(() => service.throwIfCancelled()).not.toThrow();

    await started.app.close();
    app = undefined;

    expect(service.isCancelled).toBe(true);
    expect(service.shutdownSignal.aborted).toBe(true);
    expect(service.signal).toBe(service.shutdownSignal);
    const reason = service.shutdownSignal.reason as CancellationError;
    expect(reason).toBeInstanceOf(CancellationError);
    expect(reason.kind).toBe('shutdown');
    let thrown: unknown;
    try {
      service.throwIfCancelled();
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBe(reason);
  });

  it('aborts the shutdown signal before the HTTP server closes, while providers can still react', async () => {
    const seen: string[] = [];
    const { app: started, service } = await startApp();
    service.shutdownSignal.addEventListener('abort', () => seen.push('aborted'), { once: true });
    const server = started.getHttpServer() as { close: (cb?: () => void) => unknown };
    const close = server.close.bind(server);
    server.close = (cb?: () => void) => {
      seen.push('server closing');
      return close(cb);
    };
    await started.close();
    app = undefined;
    expect(seen).toEqual(['aborted', 'server closing']);
  });

  it('gives each application its own shutdown signal', async () => {
    const first = await startApp();
    const firstApp = first.app;
    app = undefined;
    const second = await startApp();
    expect(second.service.shutdownSignal).not.toBe(first.service.shutdownSignal);
    await firstApp.close();
    expect(first.service.isCancelled).toBe(true);
    expect(second.service.isCancelled).toBe(false);
  });
});
