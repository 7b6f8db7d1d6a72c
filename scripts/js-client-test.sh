#!/usr/bin/env bash
# The npm package of the browser client (clients/js): its node tests (fake sockets, a loopback
# server, the package imported by name under server-side rendering and with Node's own
# WebSocket), then its TypeScript declarations checked with `tsc --strict` against
# examples/ (usage.ts, and the README's React hook with a component using it), and on their
# own without DOM types. TypeScript and React's types come from the npm registry, pinned by
# the committed package-lock.json, into clients/js/node_modules (gitignored).
set -euo pipefail
cd "$(dirname "$0")/../clients/js"
echo "== browser client (node --test)"
node --test test/
echo "== browser client types (npm ci, tsc --strict --noEmit)"
npm ci --no-audit --no-fund --loglevel=error
./node_modules/.bin/tsc --version
./node_modules/.bin/tsc -p tsconfig.json
./node_modules/.bin/tsc -p tsconfig.nodom.json
echo "== browser client package contents (npm pack --dry-run)"
packed=$(npm pack --dry-run --json --loglevel=error)
for f in package.json tether.js tether.d.ts README.md; do
  grep -q "\"path\": \"$f\"" <<<"$packed" || { echo "npm pack leaves out $f" >&2; exit 1; }
done
if grep -q '"path": "test/\|"path": "node_modules/' <<<"$packed"; then
  echo "npm pack would publish tests or node_modules" >&2
  exit 1
fi
