/**
 * What the other suites of this job run on, checked at run time: Nest 11 from this folder, the package's
 * CommonJS build from ../../dist/cjs, and one copy of each in Jest's registry (a request through both).
 */
import 'reflect-metadata';
import { Controller, Get } from '@nestjs/common';
import { HttpAdapterHost, NestFactory, Reflector } from '@nestjs/core';
import { ExpressAdapter } from '@nestjs/platform-express';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CancellationModule, CancellationService, RequestSignal } from 'nestjs-cancellation';
import { CancellationShutdown } from '../../../src/shutdown/shutdown.service.js';

const HERE = resolve(__dirname, '..');
const REPO = resolve(HERE, '../..');

function installed(name: string): { path: string; version: string } {
  const manifest = require.resolve(`${name}/package.json`);
  return { path: manifest, version: JSON.parse(readFileSync(manifest, 'utf8')).version };
}

describe('the Nest 11 job', () => {
  it.each(['@nestjs/common', '@nestjs/core', '@nestjs/platform-express', '@nestjs/platform-fastify'])(
    'runs %s 11 from compat/nest11',
    (name) => {
      const { path, version } = installed(name);
      expect(version).toMatch(/^11\./);
      expect(path).toBe(join(HERE, 'node_modules', name, 'package.json'));
      expect(require.resolve(name).startsWith(join(HERE, 'node_modules', name))).toBe(true);
    },
  );

  it('runs rxjs 7 from compat/nest11', () => {
    const { path, version } = installed('rxjs');
    expect(version).toMatch(/^7\./);
    expect(path).toBe(join(HERE, 'node_modules', 'rxjs', 'package.json'));
  });

  it('runs the CommonJS build of the package', async () => {
    expect(require.resolve('nestjs-cancellation')).toBe(join(REPO, 'dist', 'cjs', 'index.js'));
    expect(JSON.parse(readFileSync(join(REPO, 'dist', 'cjs', 'package.json'), 'utf8'))).toEqual({
      type: 'commonjs',
    });
    const built = await import(join(REPO, 'dist', 'cjs', 'index.js'));
    expect(built.CancellationModule).toBe(CancellationModule);
    expect(built.CancellationService).toBe(CancellationService);
    // Suites that import a library file from src/ get its CommonJS build too.
    expect(require.resolve('../../../src/shutdown/shutdown.service.js')).toBe(
      join(REPO, 'dist', 'cjs', 'shutdown', 'shutdown.service.js'),
    );
  });

  it('is CommonJS all the way: the test itself runs as a CommonJS module', () => {
    expect(typeof module).toBe('object');
    expect(module.filename).toBe(__filename);
  });

  @Controller()
  class ProbeController {
    @Get('probe')
    probe(@RequestSignal() signal: AbortSignal): { aborted: boolean; core: string } {
      return { aborted: signal.aborted, core: installed('@nestjs/core').version };
    }
  }

  it.each(['express', 'fastify'] as const)(
    'serves a request through the interceptor on Nest 11 with %s',
    async (adapter) => {
      class AppModule {}
      const app = await NestFactory.create(
        { module: AppModule, imports: [CancellationModule.forRoot()], controllers: [ProbeController] },
        adapter === 'express' ? new ExpressAdapter() : new FastifyAdapter(),
        { logger: false },
      );
      try {
        await app.listen(0, '127.0.0.1');
        expect(app.get(CancellationService).shutdownSignal.aborted).toBe(false);
        // Nest injects by class identity: the library's constructor parameters resolved to this job's
        // HttpAdapterHost and Reflector, so dist/cjs required the same @nestjs/core 11 as the test.
        const shutdown = app.get(CancellationShutdown) as unknown as Record<string, unknown>;
        expect(shutdown.adapterHost).toBeInstanceOf(HttpAdapterHost);
        expect(shutdown.adapterHost).toBe(app.get(HttpAdapterHost));
        expect(app.get(Reflector)).toBeInstanceOf(Reflector);
        const response = await fetch(`${await app.getUrl()}/probe`);
        expect(response.status).toBe(200);
        expect(await response.json()).toEqual({ aborted: false, core: installed('@nestjs/core').version });
        expect(installed('@nestjs/core').version).toMatch(/^11\./);
      } finally {
        await app.close();
      }
    },
  );
});
