/**
 * The demo page: plain HTML with its script inline, no build step. Start opens an EventSource on
 * `GET /jobs/run` and the progress bar follows its events; Cancel closes it, which is a client leaving: the
 * request's signal aborts and the job stops on the server (the history, from `GET /jobs`, shows it stop).
 * The in-flight panel polls `GET /demo/in-flight` every 500 ms, and can cancel a request on the server. With
 * REDIS_URL (`GET /demo/features`), a render-queue section queues long BullMQ jobs and cancels them, and the
 * in-flight panel lists the work of every instance of the fleet, with the instance that runs it.
 *
 * The script builds every cell with `textContent`: request ids can come from a request header.
 */
export const DEMO_PAGE = /* html */ `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>nestjs-cancellation demo</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; margin: 0; background: #f4f5f7; color: #1f2328; }
  main { max-width: 960px; margin: 0 auto; padding: 20px; }
  h1 { font-size: 22px; margin: 0 0 4px; }
  h2 { font-size: 16px; margin: 0 0 10px; }
  p.lead { margin: 0 0 16px; color: #57606a; }
  section { background: #fff; border: 1px solid #d0d7de; border-radius: 8px; padding: 16px; margin-bottom: 16px; }
  label { margin-right: 12px; }
  input { width: 70px; }
  button { font: inherit; padding: 4px 14px; border-radius: 6px; border: 1px solid #8c959f; background: #f6f8fa; cursor: pointer; }
  button:disabled { cursor: default; opacity: 0.5; }
  button.primary { background: #1f883d; color: #fff; border-color: #1a7f37; }
  button.danger { background: #cf222e; color: #fff; border-color: #a40e26; }
  progress { width: 100%; height: 22px; margin: 12px 0 6px; }
  table { width: 100%; border-collapse: collapse; font-size: 14px; }
  th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eaeef2; }
  td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
  code, td.id { font-family: ui-monospace, monospace; font-size: 13px; }
  tr.mine { background: #fff8c5; }
  .empty { color: #57606a; font-style: italic; }
  .completed { color: #1a7f37; }
  .cancelled { color: #cf222e; }
  .running { color: #0969da; }
</style>
</head>
<body>
<main>
  <h1>nestjs-cancellation demo</h1>
  <p class="lead">A long job on the server, followed over server-sent events. Cancel closes the EventSource: the
    client goes away, the request's <code>AbortSignal</code> aborts, and the job stops on the server, not only the bar.</p>

  <section id="job">
    <h2>Job</h2>
    <label>Steps <input id="steps" type="number" min="1" max="200" value="40"></label>
    <label>Pause per step (ms) <input id="step-ms" type="number" min="20" max="2000" value="250"></label>
    <button id="start" class="primary">Start</button>
    <button id="cancel" class="danger" disabled>Cancel</button>
    <progress id="progress" max="40" value="0"></progress>
    <div id="job-status">No job yet.</div>
  </section>

  <section id="queue" hidden>
    <h2>Render queue <small class="empty">(BullMQ, <code>nestjs-cancellation/bullmq</code>; any instance of the fleet runs a job)</small></h2>
    <label>Steps <input id="queue-steps" type="number" min="1" max="1000" value="60"></label>
    <label>Pause per step (ms) <input id="queue-step-ms" type="number" min="10" max="10000" value="250"></label>
    <button id="queue-add" class="primary">Queue a render job</button>
    <table>
      <thead><tr><th>Job</th><th>State</th><th class="num">Progress</th><th>Failure</th><th></th></tr></thead>
      <tbody id="queue-jobs"></tbody>
    </table>
  </section>

  <section>
    <h2><span id="in-flight-title">Requests in flight on the server</span> <small class="empty">(<code id="in-flight-source">CancellationService.inFlight()</code>, every 500 ms)</small></h2>
    <table>
      <thead><tr><th>Id</th><th>Request</th><th class="num">Elapsed</th><th class="num">Budget left</th><th>Cancelled</th><th>Instance</th><th></th></tr></thead>
      <tbody id="in-flight"></tbody>
    </table>
  </section>

  <section>
    <h2>Jobs recorded by the server <small class="empty">(<code>GET /jobs</code>)</small></h2>
    <table>
      <thead><tr><th>Job</th><th>Started</th><th class="num">Steps done</th><th class="num">Primes</th><th>Outcome</th></tr></thead>
      <tbody id="jobs"></tbody>
    </table>
  </section>
</main>
<script>
  'use strict';
  var $ = function (id) { return document.getElementById(id); };
  var source = null;
  var job = null;

  function cell(row, text, className) {
    var td = document.createElement('td');
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function seconds(ms) {
    return ms === undefined || ms === null ? '' : (ms / 1000).toFixed(1) + ' s';
  }

  function emptyRow(body, columns, text) {
    var row = document.createElement('tr');
    cell(row, text, 'empty').colSpan = columns;
    body.replaceChildren(row);
  }

  function showJob(record) {
    job = record;
    $('progress').max = record.steps;
    $('progress').value = record.stepsDone;
    $('job-status').textContent = 'Job #' + record.id + ' (request ' + record.requestId + '): step ' +
      record.stepsDone + ' of ' + record.steps + ', ' + record.primes.toLocaleString('en') + ' primes found';
  }

  function finish(text) {
    if (source !== null) source.close();
    source = null;
    $('start').disabled = false;
    $('cancel').disabled = true;
    $('job-status').textContent = (job === null ? 'The job' : 'Job #' + job.id) + ' ' + text;
    refresh();
  }

  function start() {
    var url = '/jobs/run?steps=' + encodeURIComponent($('steps').value) +
      '&stepMs=' + encodeURIComponent($('step-ms').value);
    job = null;
    $('progress').value = 0;
    $('job-status').textContent = 'Starting…';
    $('start').disabled = true;
    $('cancel').disabled = false;
    source = new EventSource(url);
    source.addEventListener('started', function (event) { showJob(JSON.parse(event.data)); });
    source.addEventListener('progress', function (event) { showJob(JSON.parse(event.data)); });
    source.addEventListener('done', function (event) {
      showJob(JSON.parse(event.data));
      finish('completed: ' + job.primes.toLocaleString('en') + ' primes found.');
    });
    // An 'error' event with data is the server ending the stream with an error (cancelled on the server, the
    // route's deadline, shutdown); without data, the connection failed. Either way, no reconnection: an
    // EventSource would reconnect, and start another job.
    source.addEventListener('error', function (event) {
      finish(event.data ? 'stopped by the server: ' + event.data : 'lost its connection (the request was refused or the server went away).');
    });
  }

  function cancel() {
    finish('cancelled: the browser closed the EventSource. The server records it below.');
  }

  function cancelOnServer(id) {
    fetch('/demo/in-flight/' + encodeURIComponent(id) + '/cancel', { method: 'POST' }).then(refresh);
  }

  function showInFlight(requests) {
    var body = $('in-flight');
    if (requests.length === 0) return emptyRow(body, 7, 'Nothing in flight.');
    body.replaceChildren.apply(body, requests.map(function (request) {
      var row = document.createElement('tr');
      row.dataset.id = request.id;
      row.dataset.route = request.route;
      // The request running the job this page started.
      if (job !== null && request.id === job.requestId) row.className = 'mine';
      cell(row, request.id, 'id');
      cell(row, request.method + ' ' + request.route);
      cell(row, seconds(request.elapsedMs), 'num');
      cell(row, seconds(request.remainingMs), 'num');
      cell(row, request.cancelled || '', request.cancelled ? 'cancelled' : '');
      cell(row, request.instanceId === undefined ? '' :
        request.instanceId + (request.instanceId === features.instanceId ? ' (this one)' : ''));
      var button = document.createElement('button');
      button.className = 'cancel-on-server';
      button.textContent = 'Cancel on server';
      button.disabled = Boolean(request.cancelled);
      button.addEventListener('click', function () { cancelOnServer(request.id); });
      row.appendChild(document.createElement('td')).appendChild(button);
      return row;
    }));
  }

  function showJobs(jobs) {
    var body = $('jobs');
    if (jobs.length === 0) return emptyRow(body, 5, 'No job yet.');
    body.replaceChildren.apply(body, jobs.map(function (record) {
      var row = document.createElement('tr');
      row.dataset.job = record.id;
      row.dataset.outcome = record.outcome;
      cell(row, '#' + record.id);
      cell(row, new Date(record.startedAt).toLocaleTimeString('en-GB'));
      cell(row, record.stepsDone + ' / ' + record.steps, 'num');
      cell(row, record.primes.toLocaleString('en'), 'num');
      cell(row, record.outcome + (record.kind ? ' (' + record.kind + ')' : ''), record.outcome);
      return row;
    }));
  }

  function getJson(path) {
    return fetch(path, { cache: 'no-store' }).then(function (response) {
      if (!response.ok) throw new Error(path + ' answered ' + response.status);
      return response.json();
    });
  }

  var features = { queue: false };

  function showQueue(jobs) {
    var body = $('queue-jobs');
    if (jobs.length === 0) return emptyRow(body, 5, 'No render job yet.');
    body.replaceChildren.apply(body, jobs.map(function (record) {
      var row = document.createElement('tr');
      row.dataset.renderJob = record.id;
      row.dataset.state = record.state;
      cell(row, '#' + record.id);
      cell(row, record.state, record.state === 'failed' ? 'cancelled' : '');
      var progress = document.createElement('progress');
      progress.max = 100;
      progress.value = record.progress;
      cell(row, '', 'num').appendChild(progress);
      cell(row, record.failedReason || '');
      var button = document.createElement('button');
      button.textContent = 'Cancel';
      button.disabled = record.state !== 'active' && record.state !== 'waiting' && record.state !== 'delayed';
      button.addEventListener('click', function () {
        fetch('/queue/jobs/' + encodeURIComponent(record.id) + '/cancel', { method: 'POST' }).then(refresh);
      });
      row.appendChild(document.createElement('td')).appendChild(button);
      return row;
    }));
  }

  function addRenderJob() {
    fetch('/queue/jobs', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ steps: Number($('queue-steps').value), stepMs: Number($('queue-step-ms').value) }),
    }).then(refresh);
  }

  var polling = false;
  function refresh() {
    if (polling) return Promise.resolve();
    polling = true;
    return Promise.all([
      getJson('/demo/in-flight'),
      getJson('/jobs'),
      features.queue ? getJson('/queue/jobs') : Promise.resolve(null),
    ])
      .then(function (results) {
        showInFlight(results[0]);
        showJobs(results[1]);
        if (results[2] !== null) showQueue(results[2]);
      })
      .catch(function (error) { console.warn(error); })
      .finally(function () { polling = false; });
  }

  $('start').addEventListener('click', start);
  $('cancel').addEventListener('click', cancel);
  $('queue-add').addEventListener('click', addRenderJob);
  getJson('/demo/features')
    .then(function (found) {
      features = found;
      if (!features.queue) return;
      $('queue').hidden = false;
      $('in-flight-title').textContent = 'Work in flight across the fleet';
      $('in-flight-source').textContent = 'FleetRegistry.inFlight()';
    })
    .catch(function (error) { console.warn(error); })
    .finally(function () {
      refresh();
      setInterval(refresh, 500);
    });
</script>
</body>
</html>
`;
