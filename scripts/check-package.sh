#!/usr/bin/env bash
# Lints what would be published: `npm pack` of the built package (dist/ as `npm test` or `npm run build` left
# it) into a temporary folder, then publint (warnings count as errors) and Are the Types Wrong (every
# entry point under node10, node16 from CJS and from ESM, and bundler resolution) on that one tarball.
# Nothing is built or removed in the tree.
set -euo pipefail
cd "$(dirname "$0")/.."

for built in dist/index.js dist/index.d.ts dist/cjs/index.js dist/cjs/index.d.ts dist/cjs/package.json; do
  if [ ! -f "$built" ]; then
    echo "$built is missing: run \`npm run build\` first (\`npm test\` does)" >&2
    exit 1
  fi
done

work="$(mktemp -d "${TMPDIR:-/tmp}/nestjs-cancellation-check-package.XXXXXX")"
trap 'rm -rf "$work"' EXIT
npm pack --silent --pack-destination "$work" >/dev/null
tarball="$(find "$work" -maxdepth 1 -name '*.tgz' -print -quit)"

# Both run, so that one CI log shows every finding; the script fails if either does.
status=0
node_modules/.bin/publint run --strict "$tarball" || status=1
node_modules/.bin/attw "$tarball" || status=1
exit "$status"
