import 'reflect-metadata';
import { Controller, Get } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { REQUEST_TIMEOUT_METADATA, RequestTimeout } from './request-timeout.decorator.js';

const reflector = new Reflector();

/** What the interceptor resolves for a handler: the handler's own budget, else its controller's. */
function budgetOf(controller: abstract new () => object, method: string): number | false | undefined {
  const handler = (controller.prototype as Record<string, () => unknown>)[method];
  return reflector.getAllAndOverride<number | false | undefined>(REQUEST_TIMEOUT_METADATA, [
    handler,
    controller,
  ]);
}

describe('@RequestTimeout()', () => {
  it('stores the budget of a method', () => {
    @Controller('reports')
    class ReportsController {
      @Get('export')
      @RequestTimeout(30_000)
      export() {
        return 'ok';
      }

      @Get('list')
      list() {
        return [];
      }
    }
    expect(reflector.get(REQUEST_TIMEOUT_METADATA, ReportsController.prototype.export)).toBe(30_000);
    expect(reflector.get(REQUEST_TIMEOUT_METADATA, ReportsController.prototype.list)).toBeUndefined();
    expect(reflector.get(REQUEST_TIMEOUT_METADATA, ReportsController)).toBeUndefined();
  });

  it('stores the budget of a class, and the method budget wins over it', () => {
    @Controller('jobs')
    @RequestTimeout(5_000)
    class JobsController {
      @Get()
      list() {
        return [];
      }

      @Get('slow')
      @RequestTimeout(60_000)
      slow() {
        return 'slow';
      }
    }
    expect(reflector.get(REQUEST_TIMEOUT_METADATA, JobsController)).toBe(5_000);
    expect(budgetOf(JobsController, 'list')).toBe(5_000);
    expect(budgetOf(JobsController, 'slow')).toBe(60_000);
  });

  it('stores false for @RequestTimeout(false), which opts a route out of the budget of its class', () => {
    @RequestTimeout(1_000)
    class StreamController {
      @RequestTimeout(false)
      stream() {
        return 'forever';
      }
    }
    expect(reflector.get(REQUEST_TIMEOUT_METADATA, StreamController.prototype.stream)).toBe(false);
    expect(budgetOf(StreamController, 'stream')).toBe(false);

    @RequestTimeout(false)
    class UnboundedController {}
    expect(reflector.get(REQUEST_TIMEOUT_METADATA, UnboundedController)).toBe(false);
  });

  it('accepts the bounds: 1 ms and 2^31-1 ms', () => {
    class BoundsController {
      @RequestTimeout(1)
      shortest() {}

      @RequestTimeout(2 ** 31 - 1)
      longest() {}
    }
    expect(budgetOf(BoundsController, 'shortest')).toBe(1);
    expect(budgetOf(BoundsController, 'longest')).toBe(2 ** 31 - 1);
  });

  it('keeps budgets of different controllers apart', () => {
    class A {
      @RequestTimeout(100)
      run() {}
    }
    class B {
      @RequestTimeout(200)
      run() {}
    }
    expect(budgetOf(A, 'run')).toBe(100);
    expect(budgetOf(B, 'run')).toBe(200);
  });

  describe.each([
    [-1, '-1'],
    [0, '0'],
    [1.5, '1.5'],
    [Number.NaN, 'NaN'],
    ['100', '"100"'],
    [2 ** 31, '2147483648'],
    [Number.POSITIVE_INFINITY, 'Infinity'],
    [true, 'true'],
  ])('with %p', (value, shown) => {
    const ms = value as unknown as number;

    it('throws a TypeError when the class is defined, naming Controller.method and the value', () => {
      const error = definitionError(() => {
        class BadMethodController {
          @RequestTimeout(ms)
          export() {}
        }
        return BadMethodController;
      });
      expect(error).toBeInstanceOf(TypeError);
      expect(error.message).toMatch(new RegExp(`BadMethodController\\.export.*: ${literal(shown)} `));
    });

    it('throws a TypeError when the class is defined, naming the class and the value', () => {
      const error = definitionError(() => {
        @RequestTimeout(ms)
        class BadClassController {}
        return BadClassController;
      });
      expect(error).toBeInstanceOf(TypeError);
      expect(error.message).toMatch(new RegExp(`BadClassController.*: ${literal(shown)} `));
    });
  });

  it('names a symbol-keyed method', () => {
    const key = Symbol('handler');
    expect(() => {
      class SymbolController {
        @RequestTimeout(-1)
        [key]() {}
      }
      return SymbolController;
    }).toThrow(/SymbolController\.Symbol\(handler\)/);
  });
});

/** `shown` as a regular expression that matches it literally. */
function literal(shown: string): string {
  return shown.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** The error that defining a class throws; fails the test if defining it succeeds. */
function definitionError(define: () => unknown): Error {
  try {
    define();
  } catch (err) {
    return err as Error;
  }
  throw new Error('defining the class did not throw');
}
