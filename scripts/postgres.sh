#!/usr/bin/env bash
# A throw-away PostgreSQL for the tests (test/downstream.e2e-spec.ts) and for trying the sample app's /reports:
# a cluster of its own under .tmp/postgres (PG_ROOT), listening on 127.0.0.1 only, on a free port, with trust
# authentication and no durability (fsync off). Nothing else on the machine is touched.
#
#   scripts/postgres.sh install   install Debian's postgresql with apt-get if its binaries are missing (root or sudo)
#   scripts/postgres.sh start     initdb on first use, start the server, print its URL (also written to $PG_ROOT/url);
#                                 if it is already running, print the URL of the running one
#   scripts/postgres.sh stop      stop it (fast shutdown); nothing to do if it is not running
#   scripts/postgres.sh status    print the URL and exit 0 if it is running, exit 3 if not
#
# Environment: PG_ROOT (default <repo>/.tmp/postgres), PG_BIN (the folder holding initdb and pg_ctl; default the
# newest /usr/lib/postgresql/*/bin, else whatever pg_config or PATH finds). Run as root, the cluster belongs to
# the `postgres` user that Debian's package creates (initdb refuses to run as root).
set -euo pipefail
cd "$(dirname "$0")/.."

root="${PG_ROOT:-$PWD/.tmp/postgres}"
data="$root/data"
log="$root/postgres.log"
url_file="$root/url"
name=postgres.sh
not_installed="PostgreSQL is not installed (no initdb/pg_ctl found): run \`scripts/postgres.sh install\` (apt-get, as root) or set PG_BIN"
# shellcheck source=scripts/lib/service.sh
. scripts/lib/service.sh

locate() {
  bin="$(find_bin)"
}

find_bin() {
  if [ -n "${PG_BIN:-}" ]; then
    [ -x "$PG_BIN/pg_ctl" ] && [ -x "$PG_BIN/initdb" ] && { echo "$PG_BIN"; return 0; }
    echo "postgres.sh: PG_BIN=$PG_BIN holds no pg_ctl and initdb" >&2
    return 1
  fi
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -n "$dir" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/initdb" ]; then echo "$dir"; return 0; fi
  if command -v pg_config >/dev/null 2>&1; then
    dir="$(pg_config --bindir)"
    if [ -x "$dir/pg_ctl" ] && [ -x "$dir/initdb" ]; then echo "$dir"; return 0; fi
  fi
  if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
    dirname "$(command -v pg_ctl)"
    return 0
  fi
  return 1
}

# Runs a PostgreSQL program as the cluster's owner: the `postgres` user when we are root, else ourselves.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root, but there is no \`postgres\` user to own the cluster"
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

is_running() {
  [ -f "$data/PG_VERSION" ] && as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1
}

cmd_install() {
  if bin="$(find_bin)"; then
    echo "PostgreSQL is installed: $("$bin/postgres" --version) in $bin"
    return 0
  fi
  apt_install postgresql PostgreSQL "install PostgreSQL 13+ and set PG_BIN to its bin folder"
  bin="$(find_bin)" || die "apt-get installed postgresql, but no pg_ctl/initdb was found"
  echo "PostgreSQL is installed: $("$bin/postgres" --version) in $bin"
}

cmd_start() {
  if is_running && [ -f "$url_file" ]; then
    cat "$url_file"
    return 0
  fi
  mkdir -p "$root"
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$root"
    runuser -u postgres -- test -w "$root" ||
      die "the postgres user cannot write to $root (a parent folder is not open to it): set PG_ROOT to a folder it can reach, e.g. /tmp/nestjs-cancellation-pg"
  fi
  # A cluster made by another major version (PostgreSQL was upgraded) cannot be started: make a new one.
  local major
  major="$("$bin/pg_ctl" --version | awk '{ split($3, v, "."); print v[1] }')"
  if [ -f "$data/PG_VERSION" ] && [ "$(cat "$data/PG_VERSION")" != "$major" ]; then
    echo "postgres.sh: $data was made by PostgreSQL $(cat "$data/PG_VERSION"), not $major: making a new one" >&2
    rm -rf "$data"
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    rm -rf "$data"
    as_owner "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --locale=C --no-sync >"$root/initdb.log" 2>&1 ||
      die "initdb failed, see $root/initdb.log"
    # Loopback only, no Unix socket (its folder may not exist or be writable), and speed over durability.
    cat >>"$data/postgresql.conf" <<'EOF'

# scripts/postgres.sh: a throw-away test server
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 50
EOF
  fi
  local port attempt
  for attempt in 1 2 3; do
    port="$(free_port)"
    # 9>&-: the server must not inherit the lock (it would hold it for its whole life).
    if as_owner "$bin/pg_ctl" -D "$data" -l "$log" -o "-p $port" -w -t 30 start >/dev/null 9>&-; then
      echo "postgres://postgres@127.0.0.1:$port/postgres" >"$url_file"
      cat "$url_file"
      return 0
    fi
    echo "postgres.sh: start on port $port failed (attempt $attempt), see $log" >&2
  done
  tail -n 20 "$log" >&2 || true
  die "could not start PostgreSQL"
}

cmd_stop() {
  if is_running; then
    as_owner "$bin/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null
    echo "PostgreSQL stopped"
  fi
  rm -f "$url_file"
}

service_main "$@"
