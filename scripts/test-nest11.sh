#!/usr/bin/env bash
# The e2e suites of test/ against Nest 11 (CommonJS) and the package's CommonJS build (dist/cjs), with the
# Node on PATH: see compat/nest11/jest.config.mjs for what runs and how every module is made to see Nest 11.
# Installs compat/nest11 from its lock file when its node_modules is missing or older than the lock, builds
# the package when dist/cjs is missing or older than src/, type-checks, then runs Jest. Arguments go to Jest
# (e.g. a suite name).
set -euo pipefail
cd "$(dirname "$0")/.."

compat=compat/nest11
if [ ! -f "$compat/node_modules/.package-lock.json" ] ||
  [ "$compat/package-lock.json" -nt "$compat/node_modules/.package-lock.json" ]; then
  (cd "$compat" && npm ci --no-audit --no-fund)
fi

if [ ! -f dist/cjs/index.js ] || [ -n "$(find src -name '*.ts' -newer dist/cjs/index.js -print -quit)" ]; then
  npm run build
fi

# ts-jest only transpiles. Type-check src/, the declarations of dist/cjs and this folder's specs against Nest
# 11's types (compat/nest11/tsconfig.json); NEST11_TYPECHECK=0 skips it (the Node matrix does: types do not
# depend on the Node version).
if [ "${NEST11_TYPECHECK:-1}" != 0 ]; then
  node node_modules/typescript/bin/tsc --noEmit -p "$compat/tsconfig.json"
fi

core="$(node -p "require('./$compat/node_modules/@nestjs/core/package.json').version")"
echo "Nest 11 (CommonJS) e2e on Node $(node --version), @nestjs/core $core"
node node_modules/jest/bin/jest.js --config "$compat/jest.config.mjs" "$@"
