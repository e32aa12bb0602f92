// What `await checkpoint(signal)` costs in a CPU-bound loop, and what it buys: nanoseconds per call next to a bare
// `await` and to no await at all, and the event loop's delay during a 2 s CPU loop with and without it.
//
//   node bench/checkpoint.mjs                                       full run, writes bench/results/checkpoint.json
//   CHECKPOINT_CALLS=200000 CHECKPOINT_LOOP_MS=300 CHECKPOINT_ROUNDS=1 node bench/checkpoint.mjs   smoke run
//
// One process, no server. Part 1 times loops of CHECKPOINT_CALLS iterations (median of CHECKPOINT_ROUNDS), first
// in a process that has never used AsyncLocalStorage, then again once it has (`run()` once), as in any
// application with CancellationModule: on Node 20 that installs promise hooks, and every `await` pays for them.
// Part 2 runs a CPU loop (about 1 µs of arithmetic per iteration) for CHECKPOINT_LOOP_MS under
// perf_hooks.monitorEventLoopDelay (1 ms resolution; AsyncLocalStorage in use), each loop in up to 3 interleaved
// rounds (medians), and measures how long after `abort()` a loop that calls checkpoint stops.
//
// Environment: CHECKPOINT_CALLS (5000000), CHECKPOINT_ROUNDS (5), CHECKPOINT_LOOP_MS (2000),
// CHECKPOINT_ABORTS (20 loops aborted at a random moment), BENCH_OUT (result file).
import { monitorEventLoopDelay } from 'node:perf_hooks';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  RESULTS_DIR,
  envNumber,
  libraryInfo,
  log,
  machineInfo,
  markdownTable,
  median,
  writeResults,
} from './lib/harness.mjs';
import { distribution, isMain, ms, snapshotDist } from './support/common.mjs';

const RESOLVED = Promise.resolve();

/** About 1 µs of arithmetic that the compiler cannot drop. */
function unitOfWork(seed) {
  let x = seed | 0;
  for (let i = 0; i < 1000; i++) x = (Math.imul(x, 1103515245) + 12345) | 0;
  return x;
}

// ---------------------------------------------------------------- part 1: ns per call

/** The loops of part 1. Each returns something that depends on every iteration. */
function callLoops(checkpoint, signal) {
  return {
    'no await (empty loop body)': async (n) => {
      let acc = 0;
      for (let i = 0; i < n; i++) acc += i & 1;
      return acc;
    },
    'signal.throwIfAborted() (synchronous check)': async (n) => {
      let acc = 0;
      for (let i = 0; i < n; i++) {
        signal.throwIfAborted();
        acc += i & 1;
      }
      return acc;
    },
    'await of a resolved promise': async (n) => {
      let acc = 0;
      for (let i = 0; i < n; i++) {
        await RESOLVED;
        acc += i & 1;
      }
      return acc;
    },
    'await checkpoint(signal)': async (n) => {
      let acc = 0;
      for (let i = 0; i < n; i++) {
        await checkpoint(signal);
        acc += i & 1;
      }
      return acc;
    },
    'await checkpoint() (no signal: reads the request store)': async (n) => {
      let acc = 0;
      for (let i = 0; i < n; i++) {
        await checkpoint();
        acc += i & 1;
      }
      return acc;
    },
  };
}

async function timeLoops(loops, calls, rounds) {
  const samples = Object.fromEntries(Object.keys(loops).map((name) => [name, []]));
  // Warm up every loop (the optimizing compiler), then interleave the rounds.
  for (const loop of Object.values(loops)) await loop(Math.min(calls, 200_000));
  for (let round = 0; round < rounds; round++) {
    for (const [name, loop] of Object.entries(loops)) {
      const start = process.hrtime.bigint();
      await loop(calls);
      samples[name].push(Number(process.hrtime.bigint() - start) / calls);
    }
  }
  return Object.fromEntries(
    Object.entries(samples).map(([name, values]) => [name, { nsPerCall: median(values), samples: values }]),
  );
}

// ---------------------------------------------------------------- part 2: event-loop delay

/** The CPU loop of part 2, for `durationMs` or until `checkpoint` rejects. */
const cpuLoops = (checkpoint, RESOLVED_) => ({
  'no checkpoint': async (durationMs) => {
    const end = performance.now() + durationMs;
    let iterations = 0;
    let acc = 0;
    while (performance.now() < end) {
      for (let i = 0; i < 100; i++) acc ^= unitOfWork(iterations++);
    }
    return { iterations, acc };
  },
  'await of a resolved promise every iteration': async (durationMs) => {
    const end = performance.now() + durationMs;
    let iterations = 0;
    let acc = 0;
    while (performance.now() < end) {
      for (let i = 0; i < 100; i++) {
        await RESOLVED_;
        acc ^= unitOfWork(iterations++);
      }
    }
    return { iterations, acc };
  },
  'await checkpoint(signal) every iteration': async (durationMs, signal) => {
    const end = performance.now() + durationMs;
    let iterations = 0;
    let acc = 0;
    while (performance.now() < end) {
      for (let i = 0; i < 100; i++) {
        await checkpoint(signal);
        acc ^= unitOfWork(iterations++);
      }
    }
    return { iterations, acc };
  },
});

async function eventLoopDelay(loop, durationMs, signal) {
  const histogram = monitorEventLoopDelay({ resolution: 1 });
  // A timer every 10 ms on the side, the way a socket's or a shutdown's callback would wait for its turn.
  const lateness = [];
  let expected = performance.now() + 10;
  const ticker = setInterval(() => {
    const now = performance.now();
    lateness.push(now - expected);
    expected = now + 10;
  }, 10);
  histogram.enable();
  // The histogram records a delay from its second tick on: let it tick a few times (these idle ticks of ~1 ms
  // are among its samples, as are the one or two after the loop), then start the loop outside the timers phase.
  await sleep(5);
  const start = performance.now();
  const { iterations } = await new Promise((resolve, reject) =>
    setImmediate(() => loop(durationMs, signal).then(resolve, reject)),
  );
  const elapsed = performance.now() - start;
  await sleep(3); // the late ticks fire and are counted
  histogram.disable();
  clearInterval(ticker);
  const toMs = (ns) => ns / 1e6;
  return {
    iterationsPerMs: iterations / elapsed,
    nsPerIteration: (elapsed * 1e6) / iterations,
    delayMs: {
      samples: histogram.count,
      p50: toMs(histogram.percentile(50)),
      p99: toMs(histogram.percentile(99)),
      max: toMs(histogram.max),
    },
    timerLatenessMs: distribution(lateness),
  };
}

/** Aborts a running loop `count` times at a random moment; how long until `await checkpoint()` rejects. */
async function abortLatency(checkpoint, count) {
  const latencies = [];
  for (let i = 0; i < count; i++) {
    const controller = new AbortController();
    let abortedAt;
    setTimeout(
      () => {
        abortedAt = performance.now();
        controller.abort();
      },
      20 + Math.random() * 80,
    );
    let acc = 0;
    try {
      for (let n = 0; ; n++) {
        await checkpoint(controller.signal);
        acc ^= unitOfWork(n);
      }
    } catch {
      latencies.push(performance.now() - abortedAt);
    }
    if (acc === 0.5) log('unreachable'); // keep `acc` alive
  }
  return distribution(latencies);
}

export async function checkpoint() {
  const cfg = {
    calls: Math.round(envNumber('CHECKPOINT_CALLS', 5_000_000)),
    rounds: Math.round(envNumber('CHECKPOINT_ROUNDS', 5)),
    loopMs: envNumber('CHECKPOINT_LOOP_MS', 2000),
    aborts: Math.round(envNumber('CHECKPOINT_ABORTS', 20)),
  };
  const reduced = cfg.calls < 5_000_000 || cfg.rounds < 5 || cfg.loopMs < 2000;
  const out =
    process.env.BENCH_OUT ?? path.join(RESULTS_DIR, reduced ? 'checkpoint.tmp.json' : 'checkpoint.json');
  const dist = await snapshotDist('checkpoint');
  const lib = await import(dist);
  // Internal: the AsyncLocalStorage that holds the request's scope.
  const { scopeStorage } = await import(new URL('core/async-context.js', dist).href);
  const signal = new AbortController().signal;
  log(
    `checkpoint: ${cfg.calls.toLocaleString('en-US')} calls x ${cfg.rounds} rounds; ` +
      `${cfg.loopMs} ms CPU loops; ${cfg.aborts} aborted loops`,
  );

  // Part 1, before anything has used AsyncLocalStorage in this process.
  const loops = callLoops(lib.checkpoint, signal);
  const withoutAls = await timeLoops(loops, cfg.calls, cfg.rounds);
  // Part 1 again, as inside an application with CancellationModule: AsyncLocalStorage in use, and the
  // checkpoint() without a signal running inside a request's store (a scope that is not cancelled).
  const withAls = await scopeStorage.run({ reason: undefined }, () =>
    timeLoops(loops, cfg.calls, cfg.rounds),
  );

  // Part 2, the loops interleaved over the rounds (at most 3): medians of each figure.
  const cpu = cpuLoops(lib.checkpoint, RESOLVED);
  const runs = Object.fromEntries(Object.keys(cpu).map((name) => [name, []]));
  for (let round = 0; round < Math.min(cfg.rounds, 3); round++) {
    for (const [name, loop] of Object.entries(cpu))
      runs[name].push(await eventLoopDelay(loop, cfg.loopMs, signal));
  }
  const delays = {};
  for (const [name, list] of Object.entries(runs)) {
    const pick = (get) => median(list.map(get));
    delays[name] = {
      iterationsPerMs: pick((r) => r.iterationsPerMs),
      nsPerIteration: pick((r) => r.nsPerIteration),
      delayMs: {
        samples: pick((r) => r.delayMs.samples),
        p50: pick((r) => r.delayMs.p50),
        p99: pick((r) => r.delayMs.p99),
        max: pick((r) => r.delayMs.max),
      },
      timerLateMaxMs: pick((r) => r.timerLatenessMs.max),
      rounds: list,
    };
    log(`  ${name}: max delay ${ms(delays[name].delayMs.max, 1)} ms`);
  }
  const plain = delays['no checkpoint'].iterationsPerMs;
  for (const entry of Object.values(delays)) entry.throughputVsNoCheckpoint = entry.iterationsPerMs / plain;
  const abort = await abortLatency(lib.checkpoint, cfg.aborts);

  writeResults(out, {
    suite: 'checkpoint',
    description:
      'ns per call of `await checkpoint(signal)` next to a bare await and no await; event-loop delay during a ' +
      'CPU loop with and without checkpoint; time from abort() to the loop stopping.',
    config: cfg,
    machine: machineInfo(),
    library: libraryInfo(),
    nsPerCall: { withoutAsyncLocalStorage: withoutAls, withAsyncLocalStorage: withAls },
    cpuLoop: delays,
    abortToStopMs: abort,
  });

  console.log(
    markdownTable(
      ['loop body', 'ns per iteration', 'with AsyncLocalStorage in use'],
      Object.keys(loops).map((name) => [
        name,
        withoutAls[name].nsPerCall.toFixed(1),
        withAls[name].nsPerCall.toFixed(1),
      ]),
      ['l', 'r', 'r'],
    ),
  );
  console.log();
  console.log(
    markdownTable(
      [
        `${cfg.loopMs} ms CPU loop`,
        'event-loop delay p50 (ms)',
        'p99',
        'max',
        '10 ms timer late by, max (ms)',
        'work done vs no checkpoint',
      ],
      Object.entries(delays).map(([name, d]) => [
        name,
        ms(d.delayMs.p50, 1),
        ms(d.delayMs.p99, 1),
        ms(d.delayMs.max, 1),
        ms(d.timerLateMaxMs, 1),
        d.throughputVsNoCheckpoint.toFixed(3),
      ]),
      ['l', 'r', 'r', 'r', 'r', 'r'],
    ),
  );
  console.log();
  console.log(
    `abort() -> \`await checkpoint(signal)\` rejects: p50 ${ms(abort.p50)} ms, p99 ${ms(abort.p99)} ms, ` +
      `max ${ms(abort.max)} ms (${abort.n} loops)`,
  );
  log(`wrote ${path.relative(process.cwd(), out)}`);
}

if (isMain(import.meta)) {
  checkpoint().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
