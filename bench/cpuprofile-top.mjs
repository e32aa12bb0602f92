// Summarises a V8 .cpuprofile (node --cpu-prof): the functions with the most self time, time by package, and the
// functions of this package (dist/) with their self and total time. When the profile carries `benchMeta.requests`
// (bench/overhead.mjs writes it), times are also given per request.
//
//   node bench/cpuprofile-top.mjs <file.cpuprofile> [--top 30] [--requests N] [--vs <baseline.cpuprofile>]
//
// --vs compares per-request self time function by function against a baseline profile of the same route (e.g.
// the empty-interceptor variant): what the profiled variant adds per request, wherever it is spent (V8
// builtins, node:events, GC, ...), not only in our own functions.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT_DIR = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const ROOT_URL = pathToFileURL(ROOT_DIR).href;
// The library as built, and the copies of it the benchmark servers import (see snapshotDist in lib/harness.mjs:
// `nestjs-cancellation-bench[-<suite>][-<hash of BENCH_DIST_DIR>]`). Returns the prefix `url` starts with.
const escape = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const OURS = new RegExp(
  `^(?:${escape(`${ROOT_URL}/dist/`)}|${escape(`${ROOT_URL}/node_modules/.cache/nestjs-cancellation-bench`)}[^/]*/dist/)`,
);
const ours = (url) => OURS.exec(url)?.[0];

/** Where a function lives: a package, node core, our dist, the bench app, or a V8 pseudo-frame. */
function category(frame) {
  const { url, functionName } = frame;
  if (url === '') return functionName.startsWith('(') ? functionName : '(V8 builtins / native)';
  if (url.startsWith('node:')) return 'node core';
  if (ours(url)) return 'nestjs-cancellation (dist)';
  const nm = url.lastIndexOf('/node_modules/');
  if (nm !== -1) {
    const parts = url.slice(nm + '/node_modules/'.length).split('/');
    return parts[0].startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0];
  }
  if (url.startsWith(`${ROOT_URL}/bench/`)) return 'bench app';
  return 'other';
}

function location(frame) {
  const { url, lineNumber } = frame;
  if (url === '') return '';
  let short = url;
  const own = ours(url);
  if (own) return `dist/${url.slice(own.length)}:${lineNumber + 1}`;
  const nm = url.lastIndexOf('/node_modules/');
  if (nm !== -1) short = url.slice(nm + '/node_modules/'.length);
  else if (url.startsWith(`${ROOT_URL}/`)) short = url.slice(ROOT_URL.length + 1);
  return `${short}:${lineNumber + 1}`;
}

const keyOf = (frame) => `${frame.functionName}|${frame.url}|${frame.lineNumber}|${frame.columnNumber}`;

/**
 * Self and total (inclusive) milliseconds per function. Total counts a sample once per function even when the
 * function is on the stack several times (recursion).
 */
export function analyse(profile) {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);

  // Time per sample: the delta to the next sample.
  const selfUs = new Map();
  const { samples, timeDeltas } = profile;
  for (let i = 0; i < samples.length; i++) {
    const dt = timeDeltas[i + 1] ?? 0;
    if (dt > 0) selfUs.set(samples[i], (selfUs.get(samples[i]) ?? 0) + dt);
  }

  const functions = new Map();
  const fn = (frame) => {
    const key = keyOf(frame);
    let entry = functions.get(key);
    if (entry === undefined) {
      entry = {
        name: frame.functionName || '(anonymous)',
        where: location(frame),
        category: category(frame),
      };
      entry.selfMs = 0;
      entry.totalMs = 0;
      functions.set(key, entry);
    }
    return entry;
  };
  let totalMs = 0;
  for (const [id, us] of selfUs) {
    const ms = us / 1000;
    totalMs += ms;
    const node = byId.get(id);
    fn(node.callFrame).selfMs += ms;
    const seen = new Set();
    for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
      const frame = byId.get(cur).callFrame;
      const key = keyOf(frame);
      if (seen.has(key) || frame.functionName === '(root)') continue;
      seen.add(key);
      fn(frame).totalMs += ms;
    }
  }
  const categories = new Map();
  for (const entry of functions.values()) {
    categories.set(entry.category, (categories.get(entry.category) ?? 0) + entry.selfMs);
  }
  return { totalMs, functions: [...functions.values()], categories };
}

const pct = (part, whole) => `${((part / whole) * 100).toFixed(1)}%`;
const ms = (value) => value.toFixed(1);
const us = (value, requests) => (requests ? ((value * 1000) / requests).toFixed(3) : '–');

function table(header, rows) {
  const line = (cells) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map((_, i) => (i === 0 ? '---:' : '---'))), ...rows.map(line)].join('\n');
}

/** A markdown summary of one profile (optionally against a baseline). */
export function summarize(profile, { file, top = 30, requests, baseline, baselineFile } = {}) {
  const meta = profile.benchMeta ?? {};
  const reqs = requests ?? meta.requests;
  const { totalMs, functions, categories } = analyse(profile);
  const busyMs = totalMs - (categories.get('(idle)') ?? 0);
  const out = [];
  out.push(
    `## ${file ? path.basename(file) : 'profile'}` +
      (meta.variant ? ` (${meta.variant} on ${meta.adapter}, GET ${meta.route})` : ''),
    '',
    `Sampled ${ms(totalMs)} ms, busy (not idle) ${ms(busyMs)} ms` +
      (reqs ? `; ${reqs.toLocaleString('en-US')} requests: ${us(busyMs, reqs)} µs of CPU per request` : '') +
      '. Percentages are of busy time.',
    '',
  );

  const selfRows = functions
    .filter((f) => f.name !== '(idle)')
    .sort((a, b) => b.selfMs - a.selfMs)
    .slice(0, top)
    .map((f, i) => [
      i + 1,
      ms(f.selfMs),
      pct(f.selfMs, busyMs),
      us(f.selfMs, reqs),
      pct(f.totalMs, busyMs),
      `\`${f.name}\``,
      f.category,
      f.where,
    ]);
  out.push(
    `### Top ${top} functions by self time`,
    '',
    table(['#', 'self ms', 'self %', 'self µs/req', 'total %', 'function', 'package', 'location'], selfRows),
    '',
  );

  const catRows = [...categories.entries()]
    .filter(([name]) => name !== '(idle)')
    .sort((a, b) => b[1] - a[1])
    .map(([name, value], i) => [i + 1, ms(value), pct(value, busyMs), us(value, reqs), name]);
  out.push('### Self time by package', '', table(['#', 'self ms', '%', 'µs/req', 'package'], catRows), '');

  const own = functions
    .filter((f) => f.category === 'nestjs-cancellation (dist)')
    .sort((a, b) => b.totalMs - a.totalMs);
  if (own.length > 0) {
    const rows = own.map((f, i) => [
      i + 1,
      ms(f.selfMs),
      us(f.selfMs, reqs),
      ms(f.totalMs),
      us(f.totalMs, reqs),
      pct(f.totalMs, busyMs),
      `\`${f.name}\``,
      f.where,
    ]);
    out.push(
      '### Functions of nestjs-cancellation (dist/)',
      '',
      'Total includes everything called underneath (for `start`/`subscribeHandler`: the route handler and the ' +
        "rest of Nest's pipeline as well).",
      '',
      table(
        ['#', 'self ms', 'self µs/req', 'total ms', 'total µs/req', 'total %', 'function', 'location'],
        rows,
      ),
      '',
    );
  }

  if (baseline !== undefined) {
    const baseReqs = baseline.benchMeta?.requests;
    if (!reqs || !baseReqs) {
      out.push('(--vs needs request counts in both profiles: benchMeta.requests or --requests)', '');
    } else {
      const base = analyse(baseline);
      const baseBusy = base.totalMs - (base.categories.get('(idle)') ?? 0);
      const perReq = (list, n) => {
        const map = new Map();
        for (const f of list) {
          if (f.name === '(idle)') continue;
          const key = `${f.name}|${f.where}`;
          const prev = map.get(key);
          map.set(key, { f, us: (prev?.us ?? 0) + (f.selfMs * 1000) / n });
        }
        return map;
      };
      const a = perReq(functions, reqs);
      const b = perReq(base.functions, baseReqs);
      const diffs = [];
      for (const key of new Set([...a.keys(), ...b.keys()])) {
        const delta = (a.get(key)?.us ?? 0) - (b.get(key)?.us ?? 0);
        diffs.push({
          f: (a.get(key) ?? b.get(key)).f,
          delta,
          here: a.get(key)?.us ?? 0,
          there: b.get(key)?.us ?? 0,
        });
      }
      diffs.sort((x, y) => y.delta - x.delta);
      const catDiff = [];
      for (const name of new Set([...categories.keys(), ...base.categories.keys()])) {
        if (name === '(idle)') continue;
        const here = ((categories.get(name) ?? 0) * 1000) / reqs;
        const there = ((base.categories.get(name) ?? 0) * 1000) / baseReqs;
        catDiff.push([name, here, there, here - there]);
      }
      catDiff.sort((x, y) => y[3] - x[3]);
      const busyHere = (busyMs * 1000) / reqs;
      const busyThere = (baseBusy * 1000) / baseReqs;
      out.push(
        `### Against ${baselineFile ? path.basename(baselineFile) : 'the baseline'}` +
          (baseline.benchMeta?.variant ? ` (${baseline.benchMeta.variant})` : ''),
        '',
        `CPU per request: ${busyHere.toFixed(2)} µs here, ${busyThere.toFixed(2)} µs in the baseline ` +
          `(${(busyHere - busyThere >= 0 ? '+' : '') + (busyHere - busyThere).toFixed(2)} µs). Sampling noise is ` +
          'roughly ±0.1 µs per row at these sample counts: read the large rows.',
        '',
        table(
          ['#', 'µs/req here', 'baseline', 'Δ µs/req', 'package'],
          catDiff.map(([name, here, there, d], i) => [
            i + 1,
            here.toFixed(3),
            there.toFixed(3),
            d.toFixed(3),
            name,
          ]),
        ),
        '',
        table(
          ['#', 'self µs/req here', 'baseline', 'Δ', 'function', 'package', 'location'],
          diffs
            .slice(0, top)
            .map((d, i) => [
              i + 1,
              d.here.toFixed(3),
              d.there.toFixed(3),
              d.delta.toFixed(3),
              `\`${d.f.name}\``,
              d.f.category,
              d.f.where,
            ]),
        ),
        '',
      );
    }
  }
  return out.join('\n');
}

function main(argv) {
  const args = { top: 30 };
  const files = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--top') args.top = Number(argv[++i]);
    else if (arg === '--requests') args.requests = Number(argv[++i]);
    else if (arg === '--vs') args.baselineFile = argv[++i];
    else files.push(arg);
  }
  if (files.length !== 1) {
    process.stderr.write(
      'usage: node bench/cpuprofile-top.mjs <file.cpuprofile> [--top N] [--requests N] [--vs baseline.cpuprofile]\n',
    );
    process.exit(2);
  }
  const profile = JSON.parse(readFileSync(files[0], 'utf8'));
  const baseline = args.baselineFile ? JSON.parse(readFileSync(args.baselineFile, 'utf8')) : undefined;
  process.stdout.write(`${summarize(profile, { file: files[0], ...args, baseline })}\n`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url))
  main(process.argv.slice(2));
