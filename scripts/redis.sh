#!/usr/bin/env bash
# A throw-away Redis for the tests (test/bullmq.e2e-spec.ts, test/fleet.e2e-spec.ts) and for trying the sample
# app's queue and fleet panel: a server of its own under .tmp/redis (REDIS_ROOT), listening on 127.0.0.1 only,
# on a free port, with no persistence (no RDB snapshots, no AOF). Nothing else on the machine is touched.
# Packages that download a Redis build at install time do not work on these machines, and in-memory mocks
# cannot run BullMQ's Lua scripts: this is Debian's redis-server.
#
#   scripts/redis.sh install   install Debian's redis-server with apt-get if it is missing (root or sudo)
#   scripts/redis.sh start     start the server, print its URL (also written to $REDIS_ROOT/url); if it is
#                              already running, print the URL of the running one
#   scripts/redis.sh stop      stop it; nothing to do if it is not running
#   scripts/redis.sh status    print the URL and exit 0 if it is running, exit 3 if not
#
# Environment: REDIS_ROOT (default <repo>/.tmp/redis; a suite that stops its Redis on purpose uses a folder of
# its own), REDIS_SERVER (the redis-server binary; default the one on PATH or /usr/bin/redis-server).
set -euo pipefail
cd "$(dirname "$0")/.."

root="${REDIS_ROOT:-$PWD/.tmp/redis}"
pid_file="$root/redis.pid"
log="$root/redis.log"
url_file="$root/url"
name=redis.sh
not_installed="Redis is not installed (no redis-server found): run \`scripts/redis.sh install\` (apt-get, as root), set REDIS_SERVER, or set TEST_REDIS_URL"
# shellcheck source=scripts/lib/service.sh
. scripts/lib/service.sh

locate() {
  server="$(find_server)"
}

find_server() {
  if [ -n "${REDIS_SERVER:-}" ]; then
    [ -x "$REDIS_SERVER" ] && { echo "$REDIS_SERVER"; return 0; }
    echo "redis.sh: REDIS_SERVER=$REDIS_SERVER is not an executable" >&2
    return 1
  fi
  if command -v redis-server >/dev/null 2>&1; then command -v redis-server; return 0; fi
  [ -x /usr/bin/redis-server ] && { echo /usr/bin/redis-server; return 0; }
  return 1
}

is_running() {
  [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

# Answers PING on the port (a bare RESP exchange over node:net: redis-cli may not be installed).
ping_port() {
  node -e "
    const socket = require('node:net').connect(Number(process.argv[1]), '127.0.0.1');
    const fail = () => process.exit(1);
    socket.setTimeout(1000, fail).on('error', fail);
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (data) => process.exit(String(data).startsWith('+PONG') ? 0 : 1));
  " "$1"
}

cmd_install() {
  if server="$(find_server)"; then
    echo "Redis is installed: $("$server" --version) ($server)"
    return 0
  fi
  apt_install redis-server Redis "install Redis 6.2+ and set REDIS_SERVER, or set TEST_REDIS_URL"
  server="$(find_server)" || die "apt-get installed redis-server, but it was not found"
  echo "Redis is installed: $("$server" --version) ($server)"
}

cmd_start() {
  if is_running && [ -f "$url_file" ]; then
    cat "$url_file"
    return 0
  fi
  mkdir -p "$root"
  rm -f "$pid_file"
  local port attempt waited
  for attempt in 1 2 3; do
    port="$(free_port)"
    # 9>&-: the server must not inherit the lock (it would hold it for its whole life).
    "$server" --bind 127.0.0.1 --port "$port" --unixsocket "" --daemonize yes --pidfile "$pid_file" \
      --logfile "$log" --dir "$root" --save "" --appendonly no --protected-mode yes 9>&- || true
    for waited in $(seq 1 50); do
      if ping_port "$port"; then
        echo "redis://127.0.0.1:$port" >"$url_file"
        cat "$url_file"
        return 0
      fi
      sleep 0.1
    done
    echo "redis.sh: start on port $port failed (attempt $attempt), see $log" >&2
    if [ -f "$pid_file" ]; then kill "$(cat "$pid_file")" 2>/dev/null || true; fi
    rm -f "$pid_file"
  done
  tail -n 20 "$log" >&2 || true
  die "could not start Redis"
}

cmd_stop() {
  if is_running; then
    local pid waited
    pid="$(cat "$pid_file")"
    kill "$pid"
    for waited in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    echo "Redis stopped"
  fi
  rm -f "$url_file" "$pid_file"
}

service_main "$@"
