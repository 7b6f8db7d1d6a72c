#!/usr/bin/env bash
# Fuzzes the HTTP API against its own description (docs/openapi.json) with Schemathesis: a live
# debug tether on loopback with an API key and history on, every operation for a bounded number
# of examples, and any finding fails the run: a 5xx, a status, content type or body the document
# does not allow. Schemathesis comes from PyPI into a venv under target/ (gitignored).
#
#   scripts/schemathesis.sh            # builds target/debug/tether first
#   ST_EXAMPLES=200 ST_MAX_TIME=600 scripts/schemathesis.sh   # a longer run
set -euo pipefail
cd "$(dirname "$0")/.."

ST_VERSION=4.32.5
VENV=target/schemathesis-venv
EXAMPLES=${ST_EXAMPLES:-40}
# 75 s: in the full test run the fuzzing phase uses whatever time it is given (19,555 cases in
# 120 s, every endpoint answered ok hundreds of times), and the run must stay within 20 minutes.
MAX_TIME=${ST_MAX_TIME:-75}
# One worker: with two threads, CPython 3.11 (before 3.11.9) can fail inside ast.parse
# ("AST constructor recursion depth mismatch", gh-106905), a Schemathesis runtime error that
# is no finding about tether.

# The §14 operations (docs/protocol.md §14) are in the document before their routes are in this
# branch's router: skipped here until they are merged. EMPTY THIS LIST once they are.
EXCLUDE_OPERATIONS=()

if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$ST_VERSION"; then
  echo "== installing schemathesis $ST_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$ST_VERSION"
fi
# A no-op when `cargo test` built it already; a stale binary would fuzz old code.
cargo build --bin tether

work=$(mktemp -d)
pid=""
holder=""
cleanup() {
  for p in $holder $pid; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

key=schemathesis-$RANDOM$RANDOM
# Port 0 picks a free port; the log line "listening on ..." tells which.
RUST_LOG=info target/debug/tether --listen 127.0.0.1:0 --api-key "$key" --history-size 50 \
  --http-body-timeout 2s >"$work/tether.log" 2>&1 &
pid=$!
addr=""
for _ in $(seq 100); do
  addr=$(grep -oE 'listening on wss?://127\.0\.0\.1:[0-9]+' "$work/tether.log" | grep -oE '127\.0\.0\.1:[0-9]+' | head -1 || true)
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/tether.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "tether did not say where it listens" >&2; cat "$work/tether.log" >&2; exit 1; }

# Live sessions of the documents' example client ids, subscribed to its example channel, so
# listings, presence and pushes answer with something in them (and closing one succeeds).
python3 scripts/ws-holder.py "$addr" alice,alice,bob news &
holder=$!

exclude=()
for op in "${EXCLUDE_OPERATIONS[@]}"; do exclude+=(--exclude-operation-id "$op"); done

echo "== schemathesis $ST_VERSION against http://$addr ($EXAMPLES examples per operation, at most ${MAX_TIME}s)"
"$VENV/bin/schemathesis" run docs/openapi.json \
  --url "http://$addr" \
  -H "Authorization: Bearer $key" \
  --checks "${ST_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance}" \
  --max-examples "$EXAMPLES" --max-time "$MAX_TIME" \
  --seed "${ST_SEED:-20}" --generation-database none \
  --workers 1 \
  --report junit --report-dir "$work/report" \
  "${exclude[@]}" || { echo "== schemathesis found the problems above (tether log: last lines)"; tail -20 "$work/tether.log"; exit 1; }

# A run where every call was refused (a wrong key, a broken example) would pass the checks
# above with nothing tested: each API endpoint must have answered some calls with success.
metrics=$(python3 -c 'import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' "http://$addr/metrics")
missing=()
for endpoint in push broadcast publish sessions history presence openapi batch subscribe unsubscribe \
  clients blocks channels channel_presence; do
  echo "$metrics" | grep -qE "^tether_api_requests_total\{endpoint=\"$endpoint\",result=\"ok\"\} [1-9]" \
    || missing+=("$endpoint")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== no successful call reached: ${missing[*]}" >&2
  echo "$metrics" | grep '^tether_api_requests_total' >&2
  exit 1
fi
echo "== schemathesis: no findings; successful calls per endpoint:"
echo "$metrics" | grep -E '^tether_api_requests_total\{[^}]*result="ok"' | sed 's/^/   /'
