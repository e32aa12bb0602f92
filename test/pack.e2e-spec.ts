/**
 * The package as a user gets it: `npm pack` of the built package, installed with nothing else into two fresh
 * apps in a temporary directory, each compiled by its own `tsc` and run as a child process:
 * - a Nest 12 ESM app (fixtures/pack-app: `"type": "module"`, `import`), with the repository's versions of
 *   Nest, TypeScript and @types/node;
 * - a Nest 11 CommonJS app (fixtures/pack-app-nest11) set up as `nest new` sets one up on Nest 11: no `"type"`,
 *   `module: nodenext` (so `tsc` emits `require()` and resolves the types with the `require` condition),
 *   extensionless imports, a `bootstrap()` function; @nestjs/* at compat/nest11's locked versions, TypeScript 5.
 * It proves the exports map, the types and the runtime imports of what is published, for both builds, not of
 * `src/`.
 *
 * Needs `npm run build` first (`npm test` runs it). `npm install` takes its packages from the npm cache that the
 * repository's own install filled (the Nest 11 app's come from the registry the first time); set
 * KEEP_PACK_APP=1 to keep the temporary apps for a look.
 */
import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readFile, readdir, realpath, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import type { ClientRequest, IncomingHttpHeaders } from 'node:http';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import ts from 'typescript';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const FIXTURES = join(REPO, 'test', 'fixtures');
const PACKAGE = 'nestjs-cancellation';
/** The Nest 11 versions that the Nest 11 CI job (scripts/test-nest11.sh) installs. */
const NEST11_LOCK = join(REPO, 'compat', 'nest11', 'package-lock.json');
/** What `nest new` gets on Nest 11 (its template asks for `typescript: ^5.7.3`). */
const NEST11_TYPESCRIPT = '5.9.3';
/** npm install dominates: a few seconds from a warm cache, far more if it has to reach the registry. */
const SETUP_TIMEOUT_MS = 180_000;
const MANIFEST = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as {
  peerDependencies: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
};
/**
 * What the published JavaScript and declarations may import besides `node:` builtins and their own files: the
 * peer dependencies, which the user's app provides.
 */
const ALLOWED_PACKAGES = Object.keys(MANIFEST.peerDependencies);
/** Peers that a user may leave out: the fresh apps do, and start and serve all the same. */
const OPTIONAL_PEERS = Object.entries(MANIFEST.peerDependenciesMeta ?? {})
  .filter(([, meta]) => meta.optional === true)
  .map(([name]) => name);
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

async function nest11Version(name: string): Promise<string> {
  const lock = JSON.parse(await readFile(NEST11_LOCK, 'utf8')) as {
    packages: Record<string, { version?: string }>;
  };
  const version = lock.packages[`node_modules/${name}`]?.version;
  if (version === undefined) throw new Error(`${name} is not in ${relative(REPO, NEST11_LOCK)}`);
  return version;
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

/** One of the fresh apps that the tarball is installed into. */
interface FreshApp {
  name: string;
  /** Its folder in test/fixtures: sources, tsconfig.json and a package.json that the test adds dependencies to. */
  fixture: string;
  /** Its dependencies besides the tarball, with their versions. */
  dependencies(): Promise<Record<string, string>>;
  /** The package's declarations that the app's `tsc` resolves `nestjs-cancellation` to. */
  types: string;
  /** The package's JavaScript that the app loads at runtime. */
  runtime: string;
  /** How the compiled app.module.js loads the package. */
  loads: RegExp;
}

const NEST_PACKAGES = [
  '@nestjs/common',
  '@nestjs/core',
  '@nestjs/platform-express',
  'reflect-metadata',
  'rxjs',
];

const FRESH_APPS: FreshApp[] = [
  {
    name: 'Nest 12 ESM',
    fixture: 'pack-app',
    async dependencies() {
      const names = [...NEST_PACKAGES, 'typescript', '@types/node'];
      return Object.fromEntries(
        await Promise.all(names.map(async (name) => [name, await installedVersion(name)])),
      );
    },
    types: 'dist/index.d.ts',
    runtime: 'dist/index.js',
    loads: /^import \{ CancellationModule \} from 'nestjs-cancellation';$/m,
  },
  {
    name: 'Nest 11 CommonJS',
    fixture: 'pack-app-nest11',
    async dependencies() {
      const nest = await Promise.all(NEST_PACKAGES.map(async (name) => [name, await nest11Version(name)]));
      return {
        ...Object.fromEntries(nest),
        typescript: NEST11_TYPESCRIPT,
        '@types/node': await installedVersion('@types/node'),
      };
    },
    types: 'dist/cjs/index.d.ts',
    runtime: 'dist/cjs/index.js',
    loads: /\brequire\("nestjs-cancellation"\)/,
  },
];

/** A fresh app with the tarball installed and its sources compiled, ready to start. */
interface Installed {
  appDir: string;
  /** Where the package landed in the app's node_modules. */
  packageDir: string;
  /** What the app's `tsc` compiled (`--listFiles`). */
  compiledFiles: string[];
}

/** Copies the fixture into `work`, installs the tarball and its dependencies, and compiles it. */
async function install(fresh: FreshApp, work: string, tarball: string): Promise<Installed> {
  const appDir = join(work, fresh.fixture);
  await cp(join(FIXTURES, fresh.fixture), appDir, { recursive: true });
  const manifest = JSON.parse(await readFile(join(appDir, 'package.json'), 'utf8')) as object;
  const dependencies = { [PACKAGE]: `file:${tarball}`, ...(await fresh.dependencies()) };
  await writeFile(
    join(appDir, 'package.json'),
    `${JSON.stringify({ ...manifest, dependencies }, null, 2)}\n`,
  );
  await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund'], appDir);
  const packageDir = await realpath(join(appDir, 'node_modules', PACKAGE));

  const tsc = join(appDir, 'node_modules', 'typescript', 'bin', 'tsc');
  const listed = await run(process.execPath, [tsc, '-p', 'tsconfig.json', '--listFiles'], appDir);
  return { appDir, packageDir, compiledFiles: listed.split('\n').filter((line) => line !== '') };
}

describe('the packed package', () => {
  let work = '';
  let tarball = '';
  let packedFiles: string[] = [];
  const installed = new Map<FreshApp, Installed>();

  beforeAll(async () => {
    for (const built of ['dist/index.js', 'dist/index.d.ts', 'dist/cjs/index.js', 'dist/cjs/index.d.ts']) {
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
    tarball = join(work, packed.filename);
    packedFiles = packed.files.map((file) => file.path);

    // Both apps at once: npm install mostly waits on the disk, so the two overlap well.
    for (const [fresh, app] of await Promise.all(
      FRESH_APPS.map(async (fresh) => [fresh, await install(fresh, work, tarball)] as const),
    )) {
      installed.set(fresh, app);
    }
  }, SETUP_TIMEOUT_MS);

  afterAll(async () => {
    if (work !== '' && process.env.KEEP_PACK_APP === undefined)
      await rm(work, { recursive: true, force: true });
  });

  it('packs both builds, their declarations and the README, and no sources, tests or sample app', () => {
    expect(packedFiles).toEqual(
      expect.arrayContaining([
        'package.json',
        'README.md',
        'dist/index.js',
        'dist/index.d.ts',
        'dist/cjs/index.js',
        'dist/cjs/index.d.ts',
        'dist/cjs/package.json',
      ]),
    );
    expect(packedFiles.filter((file) => /^(src|test|sample-app)\//.test(file))).toEqual([]);
  });

  it('publishes JavaScript and declarations that import only node: builtins, their own files and the peers', async () => {
    const unpacked = join(work, 'unpacked');
    await mkdir(unpacked);
    await run('tar', ['-xzf', tarball, '-C', unpacked], work);
    const dist = join(unpacked, 'package', 'dist');
    const files = (await filesUnder(dist)).filter((file) => /\.(js|d\.ts)$/.test(file));
    expect(files).toEqual(
      expect.arrayContaining(
        ['index.js', 'index.d.ts', 'cjs/index.js', 'cjs/index.d.ts'].map((file) => join(dist, file)),
      ),
    );

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

  describe.each(FRESH_APPS)('in a fresh $name app', (fresh) => {
    let appDir = '';
    let packageDir = '';
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

    beforeAll(() => {
      const app = installed.get(fresh);
      if (app === undefined) throw new Error(`${fresh.name} app was not installed`);
      ({ appDir, packageDir, compiledFiles } = app);
    });

    afterEach(async () => {
      for (const app of apps) {
        app.child.kill('SIGKILL');
        await app.exited;
      }
      apps.clear();
    });

    it(`compiles the app with the app's own tsc, the types resolved through the exports map to ${fresh.types}`, () => {
      // tsc exited 0 in beforeAll, so the strict compile found no error; this shows where the types came from.
      expect(compiledFiles).toContain(join(appDir, 'node_modules', PACKAGE, fresh.types));
      expect(compiledFiles.filter((file) => file.startsWith(REPO))).toEqual([]);
    });

    it(`loads ${fresh.runtime} at runtime, without the optional peers`, async () => {
      const compiled = await readFile(join(appDir, 'dist', 'app.module.js'), 'utf8');
      expect(compiled).toMatch(fresh.loads);
      const optionalInstalled = OPTIONAL_PEERS.filter((name) =>
        existsSync(join(appDir, 'node_modules', name)),
      );
      expect(optionalInstalled).toEqual([]);
      const { app } = await startApp();
      const [, loaded] = await app.waitFor(/nestjs-cancellation from (.+)/);
      expect(loaded).toBe(join(packageDir, fresh.runtime));
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
});
