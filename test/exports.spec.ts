import 'reflect-metadata';
import { HttpException } from '@nestjs/common';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import * as publicApi from '../src/index.js';

/** The package's entry points, as its `exports` map publishes them. */
const ENTRY_POINTS = [
  '../src/index.ts',
  '../src/testing/index.ts',
  '../src/pg/index.ts',
  '../src/grpc/index.ts',
  '../src/bullmq/index.ts',
  '../src/fleet/index.ts',
  '../src/schedule/index.ts',
  '../src/terminus/index.ts',
].map((entry) => fileURLToPath(new URL(entry, import.meta.url)));

/**
 * The public surface of the package, pinned: adding or removing an export is a decision, so it must change
 * this list too (an accidental export becomes API that cannot be removed without a major version).
 */
const EXPECTED: Record<string, 'class' | 'function'> = {
  CancellationError: 'class',
  CancellationException: 'class',
  CancellationInterceptor: 'class',
  CancellationModule: 'class',
  CancellationRegistry: 'class',
  CancellationService: 'class',
  ClientClosedRequestException: 'class',
  DeadlineExceededException: 'class',
  OutboundCancellation: 'class',
  RequestCancelledException: 'class',
  RequestSignal: 'function',
  RequestTimeout: 'function',
  ServiceShuttingDownException: 'class',
  SkipCancellation: 'function',
  checkpoint: 'function',
  findCancellationError: 'function',
  fromAbortSignal: 'function',
  isCancellationError: 'function',
  takeUntilCancelled: 'function',
};

function kindOf(value: unknown): string {
  if (typeof value !== 'function') return typeof value;
  return /^class\b/.test(Function.prototype.toString.call(value)) ? 'class' : 'function';
}

describe('public surface of nestjs-cancellation', () => {
  it('exports exactly the documented names', async () => {
    const exported = Object.keys(await import('../src/index.js')).sort();
    expect(exported).toEqual(Object.keys(EXPECTED).sort());
  });

  it.each(Object.entries(EXPECTED))('exports %s as a %s', (name, kind) => {
    expect(kindOf((publicApi as Record<string, unknown>)[name])).toBe(kind);
  });

  it('exports classes that work as the API says', () => {
    const err = new publicApi.CancellationError('timeout');
    expect(publicApi.isCancellationError(err)).toBe(true);
    expect(typeof publicApi.CancellationModule.forRoot).toBe('function');
    expect(typeof publicApi.CancellationModule.forRootAsync).toBe('function');
  });

  it('exports the outcome exceptions: HttpExceptions that carry the CancellationError', () => {
    const shutdown = new publicApi.CancellationError('shutdown');
    const outcomes = [
      [
        new publicApi.ClientClosedRequestException(new publicApi.CancellationError('client-disconnected')),
        499,
      ],
      [new publicApi.ServiceShuttingDownException(shutdown, 5), 503],
      [new publicApi.DeadlineExceededException(new publicApi.CancellationError('timeout'), 504), 504],
      [new publicApi.DeadlineExceededException(new publicApi.CancellationError('timeout'), 408), 408],
      [new publicApi.RequestCancelledException(new publicApi.CancellationError('manual', 'by hand')), 503],
    ] as const;
    for (const [exception, status] of outcomes) {
      expect(exception).toBeInstanceOf(publicApi.CancellationException);
      expect(exception).toBeInstanceOf(HttpException);
      expect(exception.getStatus()).toBe(status);
      expect(exception.cause).toBe(exception.reason);
      expect(exception.kind).toBe(exception.reason.kind);
      expect(exception.getResponse()).toMatchObject({
        statusCode: status,
        message: exception.reason.message,
      });
      expect(publicApi.isCancellationError(exception)).toBe(true);
    }
    expect(new publicApi.ServiceShuttingDownException(shutdown, 5).retryAfterSeconds).toBe(5);
    expect(
      new publicApi.RequestCancelledException(new publicApi.CancellationError('manual', 'by hand')).message,
    ).toBe('by hand');
  });

  it('documents every exported symbol and every public member of its classes and interfaces (JSDoc)', () => {
    expect(undocumentedSymbols()).toEqual([]);
  });
});

describe('public surface of nestjs-cancellation/bullmq', () => {
  it('exports exactly the module that scopes BullMQ jobs and the cancellable Worker class', async () => {
    const bullmq = await import('../src/bullmq/index.js');
    expect(Object.fromEntries(Object.entries(bullmq).map(([name, value]) => [name, kindOf(value)]))).toEqual({
      CancellableWorker: 'class',
      CancellationBullModule: 'class',
    });
    expect(() => bullmq.CancellationBullModule.forRoot({ jobTimeoutMs: 0 })).toThrow(/"jobTimeoutMs"/);
  });
});

describe('public surface of nestjs-cancellation/fleet', () => {
  it('exports exactly the fleet module, its registry and the error of an unreachable Redis', async () => {
    const fleet = await import('../src/fleet/index.js');
    expect(Object.fromEntries(Object.entries(fleet).map(([name, value]) => [name, kindOf(value)]))).toEqual({
      CancellationFleetModule: 'class',
      FleetRegistry: 'class',
      FleetUnavailableError: 'class',
    });
    expect(() => fleet.CancellationFleetModule.forRoot({ redis: 'redis://127.0.0.1', leaseMs: -1 })).toThrow(
      /"leaseMs"/,
    );
  });
});

describe('public surface of nestjs-cancellation/grpc', () => {
  it('exports exactly the gRPC helpers and the status a cancelled call is answered with', async () => {
    const grpc = await import('../src/grpc/index.js');
    expect(Object.fromEntries(Object.entries(grpc).map(([name, value]) => [name, kindOf(value)]))).toEqual({
      GrpcCancellationStatus: 'class',
      grpcCallOptions: 'function',
      propagateCancellation: 'function',
      untilAborted: 'function',
    });
    const status = new grpc.GrpcCancellationStatus(new publicApi.CancellationError('shutdown'));
    expect({ code: status.code, kind: status.reason.kind }).toEqual({ code: 14, kind: 'shutdown' });
    expect(publicApi.isCancellationError(status)).toBe(true);
  });
});

describe('public surface of nestjs-cancellation/schedule', () => {
  it('exports exactly the module that scopes scheduled runs and the job budget decorator', async () => {
    const schedule = await import('../src/schedule/index.js');
    expect(
      Object.fromEntries(Object.entries(schedule).map(([name, value]) => [name, kindOf(value)])),
    ).toEqual({
      CancellationScheduleModule: 'class',
      JobTimeout: 'function',
    });
    expect(() => schedule.JobTimeout(0)(class Job {})).toThrow(/@JobTimeout\(\) on Job/);
  });
});

/** `entry: name` or `entry: Type.member` for what an entry point exports without a JSDoc comment. */
function undocumentedSymbols(): string[] {
  const program = ts.createProgram(ENTRY_POINTS, {
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    experimentalDecorators: true,
    noEmit: true,
  });
  const checker = program.getTypeChecker();
  const documented = (node: ts.Node) => ts.getJSDocCommentsAndTags(node).length > 0;
  const missing: string[] = [];
  for (const entry of ENTRY_POINTS) {
    const where = entry.slice(entry.lastIndexOf('/src/') + 1);
    const module = checker.getSymbolAtLocation(program.getSourceFile(entry) as ts.SourceFile) as ts.Symbol;
    for (const exported of checker.getExportsOfModule(module)) {
      const symbol = exported.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exported) : exported;
      for (const declaration of symbol.declarations ?? []) {
        const commented = ts.isVariableDeclaration(declaration) ? declaration.parent.parent : declaration;
        if (!documented(commented)) missing.push(`${where}: ${symbol.name}`);
        if (!ts.isClassDeclaration(declaration) && !ts.isInterfaceDeclaration(declaration)) continue;
        for (const member of declaration.members) {
          if (
            member.name === undefined ||
            ts.isPrivateIdentifier(member.name) ||
            ts.isConstructorDeclaration(member)
          )
            continue;
          const modifiers = ts.canHaveModifiers(member) ? (ts.getModifiers(member) ?? []) : [];
          const hidden = modifiers.some(
            (modifier) =>
              modifier.kind === ts.SyntaxKind.PrivateKeyword ||
              modifier.kind === ts.SyntaxKind.ProtectedKeyword,
          );
          if (!hidden && !documented(member))
            missing.push(`${where}: ${symbol.name}.${member.name.getText()}`);
        }
      }
    }
  }
  return missing;
}

describe('public surface of nestjs-cancellation/terminus', () => {
  it('exports exactly the readiness health indicator', async () => {
    const terminus = await import('../src/terminus/index.js');
    expect(
      Object.fromEntries(Object.entries(terminus).map(([name, value]) => [name, kindOf(value)])),
    ).toEqual({
      CancellationHealthIndicator: 'class',
    });
  });
});
