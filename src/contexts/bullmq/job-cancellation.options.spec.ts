import type { Job } from 'bullmq';
import { resolveJobOptions } from './job-cancellation.options.js';

const job = (name: string): Job => ({ name }) as Job;

describe('resolveJobOptions', () => {
  it('has no budget and a 5 s settle timeout by default', () => {
    const options = resolveJobOptions({});
    expect(options.settleTimeoutMs).toBe(5_000);
    expect(options.jobTimeoutMs(job('any'))).toBeUndefined();
  });

  it('takes a budget for every job, or one per job from a function', () => {
    expect(resolveJobOptions({ jobTimeoutMs: 2_000 }).jobTimeoutMs(job('any'))).toBe(2_000);
    const perJob = resolveJobOptions({ jobTimeoutMs: (each) => (each.name === 'short' ? 100 : false) });
    expect(perJob.jobTimeoutMs(job('short'))).toBe(100);
    expect(perJob.jobTimeoutMs(job('long'))).toBeUndefined();
  });

  it('refuses a wrong value, naming the option', () => {
    expect(() => resolveJobOptions({ jobTimeoutMs: -1 })).toThrow(/"jobTimeoutMs": -1/);
    expect(() => resolveJobOptions({ settleTimeoutMs: -5 })).toThrow(/"settleTimeoutMs": -5/);
    const bad = resolveJobOptions({ jobTimeoutMs: () => 0 });
    expect(() => bad.jobTimeoutMs(job('any'))).toThrow(/"jobTimeoutMs": 0/);
  });
});
