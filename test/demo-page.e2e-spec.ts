// The sample app's demo page in a real browser: Debian's Chromium (`scripts/chromium.sh` installs it), driven
// headless by playwright-core, against the demo's module served on a free port. What a person would do: Start,
// watch the bar move and the job appear in the in-flight panel, Cancel; then the server's own record says
// that the job was cancelled because its client left, and that it did no step after that.
import 'reflect-metadata';
import { existsSync, mkdirSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { CancellationModule } from 'nestjs-cancellation';
import { chromium } from 'playwright-core';
import type { Browser, Page } from 'playwright-core';
import { DemoModule } from '../sample-app/demo/demo.module.js';
import type { JobRecord } from '../sample-app/jobs/jobs.service.js';
import { createApp, request, rootModule } from './utils/harness.js';
import type { TestApp } from './utils/harness.js';

const CHROMIUM = '/usr/bin/chromium';
/** Git-ignored (`.tmp/`): look at them after a run. */
const SCREENSHOTS = fileURLToPath(new URL('../.tmp/screenshots/', import.meta.url));

/** Polls `read` until `accept` holds for what it returned (which is returned), for up to `timeoutMs`. */
async function until<T>(
  read: () => Promise<T>,
  accept: (value: T) => boolean,
  message: string,
  timeoutMs = 5000,
): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (accept(value)) return value;
    if (performance.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${message}; last: ${JSON.stringify(value)}`,
      );
    }
    await sleep(50);
  }
}

describe('demo page (Chromium, playwright-core)', () => {
  let testApp: TestApp;
  let browser: Browser;
  let page: Page;

  /** What the server recorded, newest first. */
  async function jobs(): Promise<JobRecord[]> {
    return (await request(testApp.port, '/jobs')).json as JobRecord[];
  }

  async function job(id: number): Promise<JobRecord | undefined> {
    return (await jobs()).find((record) => record.id === id);
  }

  /** Starts a job from the page and waits for its first steps; returns the server's record of it. */
  async function startJob(steps: number, stepMs: number): Promise<JobRecord> {
    await page.fill('#steps', String(steps));
    await page.fill('#step-ms', String(stepMs));
    await page.click('#start');
    await page.waitForFunction("document.querySelector('#progress').value >= 3");
    const [running] = await jobs();
    expect(running).toMatchObject({ outcome: 'running', steps });
    expect(running.requestId).toEqual(expect.any(String));
    return running;
  }

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(
        `${CHROMIUM} is missing: run \`bash scripts/chromium.sh\` as root (it installs Debian's chromium ` +
          'with apt-get), then run this suite again',
      );
    }
    mkdirSync(SCREENSHOTS, { recursive: true });
    // Both at once: launching the browser is most of this suite's time.
    [testApp, browser] = await Promise.all([
      createApp(
        'express',
        rootModule({
          // As the sample app's AppModule registers it.
          imports: [CancellationModule.forRoot({ timeoutMs: 30_000, retryAfterSeconds: 5 }), DemoModule],
        }),
      ),
      chromium.launch({ executablePath: CHROMIUM, headless: true }),
    ]);
  });

  beforeEach(async () => {
    page = await browser.newPage({ viewport: { width: 1000, height: 820 } });
    await page.goto(`${testApp.url}/demo`);
  });

  afterEach(async () => {
    await page?.close();
  });

  afterAll(async () => {
    await browser?.close();
    await testApp?.close();
  });

  it('Start: the bar follows the job, which is in flight; Cancel: the server records it cancelled, and it stops', async () => {
    // 10 s of job: far longer than the test lets it run.
    const { id, requestId } = await startJob(100, 100);
    // The in-flight panel lists the request running the job, and highlights it as this page's.
    const row = page.locator(`#in-flight tr[data-id="${requestId}"]`);
    await row.waitFor();
    expect(await row.locator('td').nth(1).textContent()).toBe('GET /jobs/run');
    expect(await row.getAttribute('class')).toBe('mine');
    const moved = Number(await page.getAttribute('#progress', 'value'));
    expect(moved).toBeGreaterThanOrEqual(3);
    await page.screenshot({ path: `${SCREENSHOTS}demo-running.png` });

    await page.click('#cancel');
    const cancelled = await until(
      () => job(id),
      (record) => record?.outcome !== 'running',
      'the job to end',
    );
    expect(cancelled).toMatchObject({ outcome: 'cancelled', kind: 'client-disconnected' });
    expect(cancelled!.stepsDone).toBeGreaterThanOrEqual(moved);
    expect(cancelled!.stepsDone).toBeLessThan(100);

    // Five steps' worth of time: a job still running would have done more steps by now.
    await sleep(500);
    expect((await job(id))!.stepsDone).toBe(cancelled!.stepsDone);

    // The page: the job is out of the in-flight panel, and the history shows how it ended.
    await row.waitFor({ state: 'detached' });
    const history = page.locator(`#jobs tr[data-job="${id}"]`);
    await page.waitForSelector(`#jobs tr[data-job="${id}"][data-outcome="cancelled"]`);
    expect(await history.locator('td').last().textContent()).toBe('cancelled (client-disconnected)');
    expect(await page.textContent('#job-status')).toContain(`Job #${id} cancelled`);
    await page.screenshot({ path: `${SCREENSHOTS}demo.png` });
    expect(testApp.logs.errors).toEqual([]);
  });

  it('Cancel on server: the in-flight row cancels the request by id, and the job ends cancelled (manual)', async () => {
    const { id, requestId } = await startJob(100, 100);
    await page.click(`#in-flight tr[data-id="${requestId}"] button.cancel-on-server`);

    const cancelled = await until(
      () => job(id),
      (record) => record?.outcome !== 'running',
      'the job to end',
    );
    expect(cancelled).toMatchObject({
      outcome: 'cancelled',
      kind: 'manual',
      message: 'Cancelled from the demo page',
    });
    await page.waitForSelector('#start:not([disabled])');
    expect(await page.textContent('#job-status')).toBe(
      `Job #${id} stopped by the server: Cancelled from the demo page`,
    );
    await page.waitForSelector(`#jobs tr[data-job="${id}"][data-outcome="cancelled"]`);
    await page.screenshot({ path: `${SCREENSHOTS}demo-cancelled-on-server.png` });
    await sleep(500);
    expect((await job(id))!.stepsDone).toBe(cancelled!.stepsDone);
    expect(testApp.logs.errors).toEqual([]);
  });

  it('a job that completes: the bar fills, and the EventSource does not reconnect (no second job)', async () => {
    const before = (await jobs()).length;
    await page.fill('#steps', '5');
    await page.fill('#step-ms', '20');
    await page.click('#start');
    await page.waitForSelector('#job-status:has-text("completed")');
    expect(await page.getAttribute('#progress', 'value')).toBe('5');
    expect(await page.getAttribute('#progress', 'max')).toBe('5');
    const [done] = await jobs();
    expect(done).toMatchObject({ outcome: 'completed', steps: 5, stepsDone: 5 });
    expect(done.kind).toBeUndefined();
    // An EventSource reconnects when its stream ends, unless it is closed: that would start another job.
    await sleep(500);
    expect(await jobs()).toHaveLength(before + 1);
    expect(testApp.logs.errors).toEqual([]);
  });
});
