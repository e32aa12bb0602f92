// `npm run demo`: the Go question that started this project (SEED: a long task that keeps running after
// `srv.Shutdown`), replayed against the sample app. It starts the compiled app (dist-sample/main.js) as a
// child process, sends it a client request, and prints one timeline that merges the server's log with what
// the demo does. Scenario 1 stops the server with SIGTERM while the request is in flight; scenario 2 has the
// client hang up. It exits 0 when everything it shows did happen, 1 otherwise.
//
// Plain Node, no dependencies. `node sample-app/demo.mjs --all` also shows Nest's start-up lines.
import { spawn } from 'node:child_process';
import http from 'node:http';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const ENTRY = fileURLToPath(new URL('../dist-sample/main.js', import.meta.url));
const SHOW_ALL = process.argv.includes('--all');
/** Nest's start-up chatter, hidden unless --all. */
const STARTUP_CONTEXTS =
  /^\s*LOG \[(NestFactory|InstanceLoader|RoutesResolver|RouterExplorer|NestApplication)\]/;
const WORKING = /Working on long task \d+/;

const children = new Set();
const checks = [];

function check(ok, text) {
  checks.push({ ok: Boolean(ok), text });
  console.log(`  ${ok ? '✓' : '✗'} ${text}`);
}

/** One scenario's clock and printer: every line is stamped with the milliseconds since the scenario began. */
class Timeline {
  constructor(title) {
    this.t0 = performance.now();
    console.log(`\n=== ${title} ===\n`);
    console.log('   time  who     what');
  }

  now() {
    return Math.round(performance.now() - this.t0);
  }

  print(who, text, at = this.now()) {
    console.log(`${String(at).padStart(5)} ms  ${who.padEnd(6)}  ${text}`);
    return at;
  }

  /** Sleeps until `ms` after the scenario began. */
  until(ms) {
    return sleep(Math.max(0, ms - this.now()));
  }
}

/**
 * `[Nest] 123  - 11/25/2025, 2:46:00 AM     LOG [TasksService] Working on long task 0 +1001ms`
 * becomes `    LOG [TasksService] Working on long task 0`.
 */
function cleanLogLine(raw) {
  // eslint-disable-next-line no-control-regex
  const line = raw.replace(/\x1b\[[0-9;]*m/g, '');
  const match = /^\[Nest\] \d+\s+-\s.*?\s(LOG|ERROR|WARN|DEBUG|VERBOSE|FATAL) (.*?)(?: \+\d+ms)?$/.exec(line);
  return match === null ? line : `${match[1].padStart(7)} ${match[2]}`;
}

/** Starts the sample app on a free port; its output goes to the timeline as it arrives. */
function startServer(timeline) {
  const env = { ...process.env, PORT: '0', HOST: '127.0.0.1', NO_COLOR: '1' };
  delete env.NEST_LOG_LEVEL;
  timeline.print('demo', 'start the server: node dist-sample/main.js (PORT=0)');
  const child = spawn(process.execPath, [ENTRY], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  const server = { child, lines: [], exit: undefined };

  let resolveListening;
  const listening = new Promise((resolve) => (resolveListening = resolve));
  for (const stream of [child.stdout, child.stderr]) {
    createInterface({ input: stream }).on('line', (raw) => {
      const text = cleanLogLine(raw);
      const at = timeline.now();
      server.lines.push({ at, text });
      if (SHOW_ALL || !STARTUP_CONTEXTS.test(text)) timeline.print('server', text, at);
      const url = /Listening on (http:\/\/\S+)/.exec(text);
      if (url !== null) resolveListening(url[1]);
    });
  }

  server.exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      children.delete(child);
      server.exit = { at: timeline.now(), code, signal };
      resolveListening(undefined);
      resolve(server.exit);
    });
  });
  // 'close' comes after 'exit' once the pipes are drained: every line the process wrote has been read.
  server.closed = new Promise((resolve) => child.once('close', resolve));
  server.listening = withTimeout(listening, 15_000);
  return server;
}

/** A GET that records what came back: the response, or the error if the connection failed. */
function get(url) {
  const req = http.get(url, { agent: false });
  const result = new Promise((resolve) => {
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => (body += chunk));
      res.on('end', () =>
        resolve({ status: res.statusCode, message: res.statusMessage, headers: res.headers, body }),
      );
      res.on('error', (error) => resolve({ error }));
    });
    req.on('error', (error) => resolve({ error }));
  });
  return { req, result };
}

function withTimeout(promise, ms) {
  let timer;
  const timeout = new Promise((resolve) => (timer = setTimeout(resolve, ms, undefined)));
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function isAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function describeExit(exit) {
  return exit.signal !== null ? `signal ${exit.signal}` : `exit code ${exit.code}`;
}

function exitedCleanly(exit) {
  // Nest's shutdown hook, once the application has closed, re-sends the signal to the process so that it
  // ends the way the signal asked: a process stopped by SIGTERM reports signal SIGTERM (or code 0 with the
  // useProcessExit option).
  return exit !== undefined && (exit.signal === 'SIGTERM' || exit.code === 0);
}

const after = (lines, at, pattern) => lines.filter((line) => line.at >= at && pattern.test(line.text));
const before = (lines, at, pattern) => lines.filter((line) => line.at < at && pattern.test(line.text));
/**
 * Lines matching `pattern` that the server wrote after its line matching `marker` (by the order in its log,
 * not by when the demo read them: a step logged just before the server saw the event is not "after").
 */
function afterMarker(lines, marker, pattern) {
  const start = lines.findIndex((line) => marker.test(line.text));
  return start === -1 ? [] : lines.slice(start + 1).filter((line) => pattern.test(line.text));
}

async function shutdownScenario() {
  const timeline = new Timeline('1. SIGTERM while the long task is running (the Go question)');
  const server = startServer(timeline);
  const url = await server.listening;
  if (url === undefined)
    throw new Error('the server did not start (is dist-sample/ built? npm run demo builds it)');

  const clientAt = Math.max(1000, timeline.now());
  await timeline.until(clientAt);
  timeline.print('client', 'GET /long-task');
  const client = get(`${url}/long-task`);

  await timeline.until(clientAt + 3500);
  const sigtermAt = timeline.print('demo', 'SIGTERM -> server (a deployment stopping this instance)');
  server.child.kill('SIGTERM');

  const [response, exit] = await Promise.all([
    withTimeout(client.result, 5000).then((res) => {
      if (res === undefined) timeline.print('client', 'no response within 5 s');
      else if (res.error) timeline.print('client', `error: ${res.error.message}`);
      else {
        timeline.print(
          'client',
          `${res.status} ${res.message}, Retry-After: ${res.headers['retry-after']}, ` +
            `Connection: ${res.headers.connection}, ${res.body}`,
        );
      }
      return res;
    }),
    withTimeout(server.exited, 5000),
  ]);
  if (exit === undefined) timeline.print('demo', 'the server is still running 5 s after SIGTERM');
  else {
    timeline.print('demo', `server process exited (${describeExit(exit)})`, exit.at);
    timeline.print('demo', `shutdown took ${exit.at - sigtermAt} ms, from SIGTERM to exit`, exit.at);
  }
  await withTimeout(server.closed, 1000);
  const linesAtExit = server.lines.length;
  await sleep(2000);
  const alive = isAlive(server.child.pid);
  timeline.print(
    'demo',
    alive
      ? 'the server process is still alive 2 s after it exited?'
      : `2 s later: no more output, no process (Go printed "Working on long task 6, 7, 8..." here)`,
  );

  console.log('');
  const stop = after(server.lines, sigtermAt, /Long task #\d+ stopped \(shutdown\)/)[0];
  check(before(server.lines, sigtermAt, WORKING).length >= 2, 'the task worked while the client waited');
  check(
    stop !== undefined,
    stop !== undefined
      ? `the task stopped ${stop.at - sigtermAt} ms after SIGTERM, because of shutdown`
      : 'the task logged that it stopped because of shutdown',
  );
  check(
    response?.status === 503 && response.headers['retry-after'] !== undefined,
    `the client got 503 with Retry-After (got ${response?.status ?? response?.error?.message ?? 'nothing'})`,
  );
  check(
    exitedCleanly(exit) && exit.at - sigtermAt < 2000,
    exit === undefined
      ? 'the server exited after SIGTERM'
      : `the server exited ${exit.at - sigtermAt} ms after SIGTERM (${describeExit(exit)})`,
  );
  check(
    afterMarker(server.lines, /\[App\] Shutting down/, WORKING).length === 0 &&
      after(server.lines, sigtermAt + 100, WORKING).length === 0,
    'no "Working on long task" after the server began shutting down',
  );
  check(!alive && server.lines.length === linesAtExit, 'nothing ran after the server exited');
  return {
    shutdownMs: exit === undefined ? undefined : exit.at - sigtermAt,
    stopMs: stop && stop.at - sigtermAt,
  };
}

async function hangUpScenario() {
  const timeline = new Timeline('2. The client hangs up while the long task is running');
  const server = startServer(timeline);
  const url = await server.listening;
  if (url === undefined) throw new Error('the server did not start');

  const clientAt = Math.max(1000, timeline.now());
  await timeline.until(clientAt);
  timeline.print('client', 'GET /long-task');
  const client = get(`${url}/long-task`);

  await timeline.until(clientAt + 2500);
  const hangUpAt = timeline.print('client', 'gives up and closes the connection (like http.Client{Timeout})');
  client.req.destroy();

  await timeline.until(hangUpAt + 1000);
  timeline.print('client', 'GET /primes?limit=100000 (the server keeps serving)');
  const other = await withTimeout(get(`${url}/primes?limit=100000`).result, 5000);
  timeline.print('client', other?.status === undefined ? 'no response' : `${other.status} ${other.body}`);

  await timeline.until(hangUpAt + 2000);
  timeline.print('demo', '2 s after the hang-up; now SIGTERM -> server');
  const sigtermAt = timeline.now();
  server.child.kill('SIGTERM');
  const exit = await withTimeout(server.exited, 5000);
  if (exit === undefined) timeline.print('demo', 'the server is still running 5 s after SIGTERM');
  else {
    timeline.print(
      'demo',
      `server process exited (${describeExit(exit)}), ${exit.at - sigtermAt} ms after SIGTERM`,
      exit.at,
    );
  }

  console.log('');
  const stop = after(server.lines, hangUpAt, /Long task #\d+ stopped \(client-disconnected\)/)[0];
  check(before(server.lines, hangUpAt, WORKING).length >= 2, 'the task worked while the client waited');
  check(
    stop !== undefined && stop.at - hangUpAt < 1000,
    stop !== undefined
      ? `the task stopped ${stop.at - hangUpAt} ms after the hang-up, because the client disconnected`
      : 'the task logged that it stopped because the client disconnected',
  );
  check(
    afterMarker(server.lines, /cancelled \(client-disconnected\)/, WORKING).length === 0 &&
      after(server.lines, hangUpAt + 100, WORKING).length === 0,
    'no "Working on long task" after the hang-up',
  );
  check(other?.status === 200, 'the server kept serving other requests');
  check(
    exitedCleanly(exit) && exit.at - sigtermAt < 2000,
    exit === undefined
      ? 'the server exited after SIGTERM'
      : `the server, idle, exited ${exit.at - sigtermAt} ms after SIGTERM (${describeExit(exit)})`,
  );
  return { stopMs: stop && stop.at - hangUpAt };
}

function killChildren() {
  for (const child of children) child.kill('SIGKILL');
}

process.on('exit', killChildren);
process.on('SIGINT', () => process.exit(130));
// The demo must finish on its own: a hang is a failure too.
const watchdog = setTimeout(() => {
  console.error('\nThe demo did not finish within 40 s.');
  process.exit(1);
}, 40_000);
watchdog.unref();

console.log('nestjs-cancellation demo: the Go question, replayed against the sample app (Nest 12, Express)');
const startedAt = performance.now();
let exitCode;
try {
  const shutdown = await shutdownScenario();
  const hangUp = await hangUpScenario();
  const failed = checks.filter((c) => !c.ok);
  console.log('\n=== Summary ===\n');
  if (failed.length === 0) {
    console.log(
      `  SIGTERM with the task running: the task stopped ${shutdown.stopMs} ms after the signal, the client ` +
        `got 503 + Retry-After, the process was gone ${shutdown.shutdownMs} ms after the signal, and nothing ` +
        'ran after it.',
    );
    console.log(
      `  Client hang-up: the task stopped ${hangUp.stopMs} ms after the connection closed ` +
        '(kind client-disconnected); the server kept serving.',
    );
  }
  for (const c of failed) console.log(`  FAILED: ${c.text}`);
  console.log(
    `  ${checks.length - failed.length} of ${checks.length} checks passed in ` +
      `${((performance.now() - startedAt) / 1000).toFixed(1)} s.`,
  );
  exitCode = failed.length === 0 ? 0 : 1;
} catch (err) {
  console.error(`\nThe demo failed: ${err instanceof Error ? err.message : String(err)}`);
  exitCode = 1;
}
killChildren();
process.exit(exitCode);
