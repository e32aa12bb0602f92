// Benchmark entry point: `npm run bench` (builds first), or `node bench/run.mjs [suite...]` after `npm run build`.
// A suite is bench/<name>.mjs exporting an async function <name>(). With no argument, DEFAULT_SUITES run.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { BENCH_DIR } from './lib/harness.mjs';

const DEFAULT_SUITES = ['overhead', 'latency', 'shutdown', 'memory', 'checkpoint'];

async function main(argv) {
  const suites = argv.length > 0 ? argv : DEFAULT_SUITES;
  const modules = [];
  for (const suite of suites) {
    const file = path.join(BENCH_DIR, `${suite}.mjs`);
    const module =
      /^[a-z][a-z0-9-]*$/.test(suite) && existsSync(file) ? await import(pathToFileURL(file).href) : {};
    if (typeof module[suite] !== 'function') {
      throw new Error(`unknown suite ${suite}: expected bench/${suite}.mjs exporting a function ${suite}()`);
    }
    modules.push(module[suite]);
  }
  for (const run of modules) await run();
}

main(process.argv.slice(2)).catch((err) => {
  console.error(err);
  process.exit(1);
});
