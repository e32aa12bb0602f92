import 'reflect-metadata';
import { Cron, Interval, Timeout } from '@nestjs/schedule';
import { JobTimeout, jobBudgetOf } from './job-timeout.decorator.js';
import {
  attachRunner,
  detachRunner,
  isWrapped,
  jobNameOf,
  scheduledKindOf,
  wrapScheduledMethods,
} from './scheduled-method.js';
import type { ScheduledMethod, ScheduledRunner } from './scheduled-method.js';

class BaseJobs {
  @Interval(1000)
  inherited(): string {
    return 'inherited';
  }
}

@JobTimeout(5_000)
class Jobs extends BaseJobs {
  @Cron('* * * * * *', { name: 'report' })
  @JobTimeout(200)
  report(n: number): string {
    return `report ${n} of ${this.constructor.name}`;
  }

  @Timeout('once', 10)
  once(): string {
    return 'once';
  }

  plain(): string {
    return 'plain';
  }
}

/** A runner that records what it was asked to run, then runs it. */
function recordingRunner(calls: string[]): ScheduledRunner {
  return {
    run(instance: object, method: ScheduledMethod, args: unknown[]) {
      calls.push(`${method.kind} ${jobNameOf(method)}`);
      return method.original.apply(instance, args);
    },
  };
}

describe('wrapScheduledMethods()', () => {
  const prototype = Jobs.prototype as unknown as Record<string, (...args: unknown[]) => unknown>;
  const originalReport = prototype.report;

  beforeAll(() => {
    expect(wrapScheduledMethods(Jobs.prototype)).toBe(true);
  });

  it('wraps the scheduled methods, on the class that declares them, and leaves the others', () => {
    expect(isWrapped(prototype.report)).toBe(true);
    expect(isWrapped(prototype.once)).toBe(true);
    expect(Object.getOwnPropertyNames(Jobs.prototype)).not.toContain('inherited');
    expect(isWrapped((BaseJobs.prototype as unknown as Record<string, unknown>).inherited)).toBe(true);
    expect(isWrapped(prototype.plain)).toBe(false);
    expect(wrapScheduledMethods(Object.prototype)).toBe(false);
  });

  it("keeps @nestjs/schedule's metadata (what its explorer reads), the method's name and arity", () => {
    expect(scheduledKindOf(prototype.report)).toBe('cron');
    expect(scheduledKindOf(prototype.once)).toBe('timeout');
    expect(scheduledKindOf(prototype.inherited)).toBe('interval');
    expect(Reflect.getMetadata('SCHEDULE_CRON_OPTIONS', prototype.report)).toMatchObject({ name: 'report' });
    expect(prototype.report.name).toBe('report');
    expect(prototype.report.length).toBe(1);
  });

  it('wraps a method once, however many applications look', () => {
    const wrapper = prototype.report;
    wrapScheduledMethods(Jobs.prototype);
    expect(prototype.report).toBe(wrapper);
    expect(prototype.report).not.toBe(originalReport);
  });

  it("runs a method through its instance's runner, and as it is without one", () => {
    const calls: string[] = [];
    const runner = recordingRunner(calls);
    const jobs = new Jobs();
    const other = new Jobs();
    attachRunner(jobs, runner);
    expect(jobs.report(1)).toBe('report 1 of Jobs');
    expect(jobs.inherited()).toBe('inherited');
    expect(other.once()).toBe('once');
    expect(calls).toEqual(['cron report', 'interval BaseJobs.inherited']);
    detachRunner(jobs, runner);
    expect(jobs.once()).toBe('once');
    expect(calls).toHaveLength(2);
  });

  it("reads a run's budget from the method, else from its class", () => {
    const jobs = new Jobs();
    expect(jobBudgetOf(jobs, originalReport)).toBe(200);
    expect(jobBudgetOf(jobs, Jobs.prototype.once)).toBe(5_000);
    expect(jobBudgetOf(new BaseJobs(), BaseJobs.prototype.inherited)).toBe(false);
  });
});
