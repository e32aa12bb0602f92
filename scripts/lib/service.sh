# What scripts/postgres.sh and scripts/redis.sh share: each runs a throw-away server of the tests' own under
# .tmp, on a free port of 127.0.0.1. Sourced by them after they define
#   name                  the script's name, for messages (e.g. postgres.sh)
#   root, url_file        the server's folder, and the file that holds the running server's URL
#   locate                sets the variable the script uses for the server's binaries; fails if not installed
#   not_installed         what to say when `locate` fails
#   is_running, cmd_install, cmd_start, cmd_stop
# and then call `service_main "$@"`.

die() {
  echo "$name: $*" >&2
  exit 1
}

free_port() {
  node -e "const s = require('node:net').createServer().listen(0, '127.0.0.1', () => { console.log(s.address().port); s.close(); })"
}

# apt_install <Debian package> <what it is, for messages> <what to do where there is no apt-get>: installs the
# package as root, or through sudo.
apt_install() {
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "$2 is missing and installing it needs root (apt-get): run this as root"
    sudo=(sudo)
  fi
  command -v apt-get >/dev/null 2>&1 || die "$2 is missing and there is no apt-get here: $3"
  echo "Installing $2 with apt-get"
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$1"
}

cmd_status() {
  if is_running && [ -f "$url_file" ]; then
    cat "$url_file"
  else
    echo "not running" >&2
    exit 3
  fi
}

service_main() {
  local command="${1:-}"
  case "$command" in
    install) cmd_install ;;
    start | stop | status)
      locate || die "$not_installed"
      mkdir -p "$(dirname "$root")"
      # One start/stop at a time (two test runs at once share the server).
      exec 9>"$root.lock"
      flock 9
      "cmd_$command"
      ;;
    *)
      echo "usage: $0 install|start|stop|status" >&2
      exit 2
      ;;
  esac
}
