import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const LOADER = path.join(REPO, 'test', 'fixtures', 'compat-loader.mjs');

/**
 * The folder whose Nest the fixture apps run on: compat/nest11 in the Nest 11 job (its Jest config sets
 * FIXTURE_NEST_DIR), else the repository's own.
 */
function nestDir(): string | undefined {
  const dir = process.env.FIXTURE_NEST_DIR;
  return dir === undefined || dir === '' ? undefined : dir;
}

/** The `@nestjs/core` version a fixture app started by `spawnFixture()` must report. */
export function fixtureNestVersion(): string {
  const manifest = path.join(nestDir() ?? REPO, 'node_modules', '@nestjs', 'core', 'package.json');
  return (JSON.parse(readFileSync(manifest, 'utf8')) as { version: string }).version;
}

/**
 * Starts a fixture app of test/fixtures (plain ESM JavaScript on the built package) in a child process, with
 * the Node that runs the tests and the given environment. On the repository's Nest 12 it imports the ESM
 * build; in the Nest 11 job test/fixtures/compat-loader.mjs runs it on compat/nest11's Nest 11 and the
 * CommonJS build, as a Nest 11 application runs the package.
 */
export function spawnFixture(fixture: string, env: NodeJS.ProcessEnv): ChildProcess {
  const dir = nestDir();
  const built = path.join(REPO, 'dist', ...(dir === undefined ? ['index.js'] : ['cjs', 'index.js']));
  if (!existsSync(built)) throw new Error(`${built} is missing: run \`npm run build\` first`);
  const args = dir === undefined ? [fixture] : ['--import', LOADER, fixture];
  return spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
}
