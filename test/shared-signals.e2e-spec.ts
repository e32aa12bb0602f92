import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { ADAPTERS } from './utils/harness.js';
import { fixtureNestVersion, spawnFixture } from './utils/fixture.js';

const FIXTURE = fileURLToPath(new URL('./fixtures/shared-signals-app.mjs', import.meta.url));

interface Report {
  warnings: { name: string; message: string }[];
  answers: string[];
  sleepsCancelled: number;
  drained: number;
  nest: string;
}

/**
 * Runs test/fixtures/shared-signals-app.mjs: Node emits `MaxListenersExceededWarning` on the real `process`,
 * which Jest's sandbox does not give a test, so the app runs in a child process and reports the warnings it
 * saw.
 */
async function run(adapter: string, listeners: number): Promise<Report> {
  const child = spawnFixture(FIXTURE, { ...process.env, ADAPTER: adapter, LISTENERS: String(listeners) });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`the fixture exited with ${code}:\n${stderr}`);
  return JSON.parse(stdout.trim().split('\n').at(-1) ?? '') as Report;
}

describe.each(ADAPTERS)('the shared shutdown and draining signals (%s)', (adapter) => {
  it('carry 25 listeners from a scheduler and from each of two requests without MaxListenersExceededWarning', async () => {
    const report = await run(adapter, 25);
    expect(report.nest).toBe(fixtureNestVersion());
    expect(report.answers).toEqual(['added', 'added']);
    const leaks = report.warnings.filter((w) => w.name === 'MaxListenersExceededWarning');
    // The control EventTarget warns: a warning would have been seen.
    expect(leaks.filter((w) => /11 control listeners added to EventTarget/.test(w.message))).toHaveLength(1);
    // No AbortSignal warned but the control one (limit 5: "6 abort listeners"), where this Node warns for
    // AbortSignals at all (Node 20; Node 22 and later never do, and the package's fix matters on 20).
    const signals = leaks.filter((w) => /AbortSignal/.test(w.message));
    expect(signals.filter((w) => !/ 6 abort listeners added/.test(w.message))).toEqual([]);
    if (process.versions.node.startsWith('20.')) expect(signals).toHaveLength(1);
    // Every sleep on the shutdown signal stopped with the shutdown's reason; every draining listener ran.
    expect(report.sleepsCancelled).toBe(25);
    expect(report.drained).toBe(25);
  });
});
