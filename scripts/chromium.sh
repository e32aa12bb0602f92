#!/usr/bin/env bash
# Debian's Chromium for the browser test of the sample app's demo page (test/demo-page.e2e-spec.ts drives it with
# playwright-core, which ships no browser). Installs the `chromium` package with apt-get when /usr/bin/chromium is
# missing (root, or sudo); does nothing when it is there.
#
#   scripts/chromium.sh
set -euo pipefail

chromium=/usr/bin/chromium

if [ -x "$chromium" ]; then
  echo "Chromium is installed: $("$chromium" --version 2>/dev/null || echo "$chromium")"
  exit 0
fi

die() {
  echo "chromium.sh: $*" >&2
  exit 1
}

sudo=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 || die "Chromium is missing and installing it needs root (apt-get): run this as root"
  sudo=(sudo)
fi
command -v apt-get >/dev/null 2>&1 ||
  die "Chromium is missing and there is no apt-get here: install Chromium so that $chromium runs it"

echo "Installing Chromium with apt-get"
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
[ -x "$chromium" ] || die "apt-get installed chromium, but $chromium is missing"
echo "Chromium is installed: $("$chromium" --version 2>/dev/null || echo "$chromium")"
