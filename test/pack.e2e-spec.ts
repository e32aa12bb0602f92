/**
 * The package as a user gets it: `npm pack` of the built package, installed with nothing else into a fresh
 * Nest 12 ESM app in a temporary directory, compiled by that app's own `tsc` and run as a child process.
 * It proves the exports map, the types and the runtime imports of what is published, not of `src/`.
 *
 * Needs `npm run build` first (`npm test` runs it). `npm install` takes its packages from the npm cache that
 * the repository's own install filled; set KEEP_PACK_APP=1 to keep the temporary app for a look.
 */
import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import type { ClientRequest, IncomingHttpHeaders } from 'node:http';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import ts from 'typescript';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const FIXTURE = join(REPO, 'test', 'fixtures', 'pack-app');
const PACKAGE = 'nestjs-cancellation';
/** npm install dominates: a few seconds from a warm cache, far more if it has to reach the registry. */
const SETUP_TIMEOUT_MS = 180_000;
/** What the published JavaScript and declarations may import besides `node:` builtins and their own files. */
const ALLOWED_PACKAGES = ['@nestjs/common', '@nestjs/core', 'rxjs'];
/** The fixture's handlers wait 60 s unless cancelled: anything near that means the cancellation failed. */
const PROMPT_EXIT_MS = 5_000;

const execFileAsync = promisify(execFile);

/** Runs a command to completion; a failure carries its whole output, which is what one needs to see. */
async function run(command: string, args: string[], cwd: string): Promise<string> {
  try {
    const { stdout } = await execFileAsync(command, args, { cwd, maxBuffer: 64 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const { stdout = '', stderr = '' } = err as { stdout?: string; stderr?: string };
    throw new Error(`\`${command} ${args.join(' ')}\` failed in ${cwd}\n${stdout}\n${stderr}`, {
      cause: err,
    });
  }
}

async function installedVersion(name: string): Promise<string> {
  const manifest = JSON.parse(await readFile(join(REPO, 'node_modules', name, 'package.json'), 'utf8'));
  return (manifest as { version: string }).version;
}

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((entry) => entry.isFile()).map((entry) => join(entry.parentPath, entry.name));
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** The fresh app running as a child process, with its output collected for `waitFor`. */
class AppProcess {
  stdout = '';
  stderr = '';
  readonly exited: Promise<Exit>;
  private closed = false;
  private readonly watchers = new Set<() => void>();

  constructor(readonly child: ChildProcess) {
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      this.stdout += chunk;
      this.notify();
    });
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderr += chunk;
    });
    this.exited = new Promise((resolve) => {
      child.once('close', (code, signal) => {
        this.closed = true;
        resolve({ code, signal });
        this.notify();
      });
    });
  }

  /** The first match of `pattern` in the app's stdout, as soon as it is printed. */
  waitFor(pattern: RegExp, timeoutMs = 10_000): Promise<RegExpMatchArray> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        finish();
        reject(this.failure(`printed no ${pattern} within ${timeoutMs} ms`));
      }, timeoutMs);
      const finish = (): void => {
        clearTimeout(timer);
        this.watchers.delete(check);
      };
      const check = (): void => {
        const match = this.stdout.match(pattern);
        if (match !== null) {
          finish();
          resolve(match);
        } else if (this.closed) {
          finish();
          reject(this.failure(`exited before printing ${pattern}`));
        }
      };
      this.watchers.add(check);
      check();
    });
  }

  private notify(): void {
    for (const check of [...this.watchers]) check();
  }

  private failure(what: string): Error {
    return new Error(`The packed app ${what}.\nstdout:\n${this.stdout}\nstderr:\n${this.stderr}`);
  }
}

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** A GET on its own connection; `reply` rejects if the request is destroyed before a response. */
function get(port: number, path: string): { req: ClientRequest; reply: Promise<Reply> } {
  const req = request({ host: '127.0.0.1', port, path, agent: false });
  const reply = new Promise<Reply>((resolve, reject) => {
    req.once('error', reject);
    req.once('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.once('error', reject);
      res.once('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
  });
  req.end();
  return { req, reply };
}

describe('the packed package in a fresh Nest 12 app', () => {
  let work = '';
  let appDir = '';
  let packedFiles: string[] = [];
  let compiledFiles: string[] = [];
  const apps = new Set<AppProcess>();

  async function startApp(): Promise<{ app: AppProcess; port: number }> {
    const child = spawn(process.execPath, ['dist/main.js'], {
      cwd: appDir,
      env: { ...process.env, PORT: '0', NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const app = new AppProcess(child);
    apps.add(app);
    const [, port] = await app.waitFor(/listening on (\d+)/);
    return { app, port: Number(port) };
  }

  beforeAll(async () => {
    for (const built of ['dist/index.js', 'dist/index.d.ts']) {
      if (!existsSync(join(REPO, built))) {
        throw new Error(`${built} is missing: run \`npm run build\` before this test (\`npm test\` does)`);
      }
    }
    work = await mkdtemp(join(tmpdir(), `${PACKAGE}-pack-`));

    const packJson = await run('npm', ['pack', '--json', '--pack-destination', work], REPO);
    const [packed] = JSON.parse(packJson.slice(packJson.indexOf('['))) as {
      filename: string;
      files: { path: string }[];
    }[];
    packedFiles = packed.files.map((file) => file.path);

    appDir = join(work, 'app');
    await cp(FIXTURE, appDir, { recursive: true });
    const dependencies: Record<string, string> = { [PACKAGE]: `file:${join(work, packed.filename)}` };
    for (const name of [
      '@nestjs/common',
      '@nestjs/core',
      '@nestjs/platform-express',
      'reflect-metadata',
      'rxjs',
      'typescript',
      '@types/node',
    ]) {
      dependencies[name] = await installedVersion(name);
    }
    const manifest = { name: 'pack-app', version: '1.0.0', private: true, type: 'module', dependencies };
    await writeFile(join(appDir, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
    await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund'], appDir);

    const tsc = join(appDir, 'node_modules', 'typescript', 'bin', 'tsc');
    const listed = await run(process.execPath, [tsc, '-p', 'tsconfig.json', '--listFiles'], appDir);
    compiledFiles = listed.split('\n').filter((line) => line !== '');
  }, SETUP_TIMEOUT_MS);

  afterEach(async () => {
    for (const app of apps) {
      app.child.kill('SIGKILL');
      await app.exited;
    }
    apps.clear();
  });

  afterAll(async () => {
    if (work !== '' && process.env.KEEP_PACK_APP === undefined)
      await rm(work, { recursive: true, force: true });
  });

  it('packs the built JavaScript, its declarations and the README, and no sources, tests or sample app', () => {
    expect(packedFiles).toEqual(
      expect.arrayContaining(['package.json', 'README.md', 'dist/index.js', 'dist/index.d.ts']),
    );
    expect(packedFiles.filter((file) => /^(src|test|sample-app)\//.test(file))).toEqual([]);
  });

  it('publishes JavaScript and declarations that import only node: builtins, their own files and the peers', async () => {
    const dist = join(appDir, 'node_modules', PACKAGE, 'dist');
    const files = (await filesUnder(dist)).filter((file) => /\.(js|d\.ts)$/.test(file));
    expect(files).toEqual(expect.arrayContaining([join(dist, 'index.js'), join(dist, 'index.d.ts')]));

    const foreign: string[] = [];
    for (const file of files) {
      const { importedFiles, typeReferenceDirectives } = ts.preProcessFile(
        await readFile(file, 'utf8'),
        true,
        true,
      );
      for (const { fileName: specifier } of importedFiles) {
        const allowed =
          specifier.startsWith('node:') ||
          specifier.startsWith('./') ||
          specifier.startsWith('../') ||
          ALLOWED_PACKAGES.includes(specifier);
        if (!allowed) foreign.push(`${relative(dist, file)} imports '${specifier}'`);
      }
      for (const { fileName: types } of typeReferenceDirectives) {
        if (types !== 'node') foreign.push(`${relative(dist, file)} references types '${types}'`);
      }
    }
    expect(foreign).toEqual([]);
  });

  it("compiles the app with the app's own tsc, the types resolved through the exports map", () => {
    // tsc exited 0 in beforeAll, so the strict compile found no error; this shows where the types came from.
    expect(compiledFiles).toContain(join(appDir, 'node_modules', PACKAGE, 'dist', 'index.d.ts'));
    expect(compiledFiles.filter((file) => file.startsWith(REPO))).toEqual([]);
  });

  it('aborts the handlers of clients that hang up with kind client-disconnected', async () => {
    const { app, port } = await startApp();
    const wait = get(port, '/wait');
    const spin = get(port, '/spin');
    await app.waitFor(/wait: started/);
    await app.waitFor(/spin: started/);

    wait.req.destroy();
    spin.req.destroy();

    await expect(wait.reply).rejects.toThrow('socket hang up');
    await expect(spin.reply).rejects.toThrow('socket hang up');
    await app.waitFor(/wait: signal aborted \(client-disconnected\)/);
    await app.waitFor(/spin: stopped after \d+ rounds \(client-disconnected\)/);
    expect(app.stderr).not.toMatch(/ERROR/);
  });

  it('answers requests in flight at SIGTERM with 503 and Retry-After, and exits promptly', async () => {
    const { app, port } = await startApp();
    const wait = get(port, '/wait');
    const spin = get(port, '/spin');
    await app.waitFor(/wait: started/);
    await app.waitFor(/spin: started/);

    const sentAt = performance.now();
    app.child.kill('SIGTERM');
    const [waitReply, spinReply, exit] = await Promise.all([wait.reply, spin.reply, app.exited]);
    const exitMs = performance.now() - sentAt;

    for (const reply of [waitReply, spinReply]) {
      expect(reply.status).toBe(503);
      expect(reply.headers['retry-after']).toBe('7'); // the fixture's retryAfterSeconds
      expect(reply.headers.connection).toBe('close');
    }
    // enableShutdownHooks() re-raises the signal once app.close() has resolved.
    expect(exit).toEqual({ code: null, signal: 'SIGTERM' });
    expect(exitMs).toBeLessThan(PROMPT_EXIT_MS);
    expect(app.stdout).toMatch(/wait: signal aborted \(shutdown\)/);
    expect(app.stderr).not.toMatch(/ERROR/);
  });
});
