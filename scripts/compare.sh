#!/usr/bin/env bash
# tether against the reference server (scripts/reference/: Node + `ws`, written the way the ws
# README recommends): the same scenarios with the same client (`tether-bench`), side by side with
# the ratio tether / reference. Loopback only; servers are stopped on exit.
#
#   scripts/compare.sh                   # N=19000, hold 30 s
#   N=5000 HOLD=10s scripts/compare.sh
#
# The reference is installed into a scratch copy ($REF_DIR, default $TMPDIR/tether-bench-reference)
# with `npm ci`; nothing is installed into the repository.
# The reference has no 4001 eviction: its heartbeat terminates silent sockets (no close frame),
# so its eviction times are measured to the TCP end, and with HEARTBEAT_INTERVAL_MS=2500 it
# advertises a 5000 ms timeout (2 intervals, its worst case) and may end a socket after 1 to 2
# intervals, i.e. "early" by tether's definition. It gets --reap-ms 0 since it has no reaper.
# Writes $OUT/tether/*, $OUT/reference/* and $OUT/compare.md (OUT: bench-results/compare-<time>).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-common.sh

N=${N:-19000}
HOLD=${HOLD:-30s}
PORT=${PORT:-18080}
REF_PORT=${REF_PORT:-18090}
ONLY=${ONLY:-hold fanout storm evict}
BASE=${OUT:-bench-results/compare-$(date -u +%Y%m%dT%H%M%SZ)}
REF_DIR=${REF_DIR:-${TMPDIR:-/tmp}/tether-bench-reference}
mkdir -p "$BASE/tether" "$BASE/reference" "$REF_DIR"
trap stop_servers EXIT

command -v node >/dev/null || { echo "compare.sh needs node (18 or later)" >&2; exit 1; }
cp scripts/reference/server.js scripts/reference/package.json scripts/reference/package-lock.json "$REF_DIR/"
if [[ ! -d $REF_DIR/node_modules/ws ]]; then
  (cd "$REF_DIR" && npm ci --no-audit --no-fund --loglevel=error)
fi
cargo build --release --workspace

wants() { [[ " $ONLY " == *" $1 "* ]]; }

# run_set tether|reference
run_set() {
  local who=$1 port url s=10
  [[ $who == tether ]] && s=20
  OUT="$BASE/$who"
  if [[ $who == tether ]]; then port=$PORT; else port=$REF_PORT; fi
  url="ws://127.0.0.1:$port/ws"
  start() { # start [short]: a fresh server; `short` = the eviction settings
    if [[ $who == tether ]]; then
      if [[ ${1:-} == short ]]; then
        start_tether "$port" --max-connections $((N + 500)) \
          --heartbeat-interval 2s --heartbeat-timeout 5s --reap-interval 1s
      else
        start_tether "$port" --max-connections $((N + 500))
      fi
    else
      if [[ ${1:-} == short ]]; then
        start_reference "$port" HEARTBEAT_INTERVAL_MS=2500
      else
        start_reference "$port"
      fi
    fi
  }
  if wants hold; then
    start; bench hold hold -n "$N" --heartbeat 30s --hold "$HOLD" --url "$url" --server-pid "$SERVER_PID" --source "$(src $((s + 1)))"
    stop_servers; pause
  fi
  if wants fanout; then
    start; bench fanout fanout -n "$N" -m 50 --rate 10 --bytes 100 --url "$url" --server-pid "$SERVER_PID" --source "$(src $((s + 2)))"
    stop_servers; pause
  fi
  if wants storm; then
    start; bench storm storm -n "$N" --wave-timeout 60s --url "$url" --server-pid "$SERVER_PID" --source "$(src $((s + 3)))"
    stop_servers; pause
  fi
  if wants evict; then
    local reap=1000
    [[ $who == reference ]] && reap=0
    start short; bench evict evict --silent 1000 --healthy 1000 --reap-ms "$reap" --url "$url" --source "$(src $((s + 4)))"
    stop_servers; pause
  fi
}

run_set reference
run_set tether

{
  echo "# tether vs the Node ws reference server, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  machine_md
  echo "- N=$N, hold $HOLD, fanout 50 broadcasts at 10/s of 100 bytes, evict 1000 silent + 1000 healthy"
  echo "- evict servers: tether heartbeat_interval 2s / heartbeat_timeout 5s / reap_interval 1s;"
  echo "  reference HEARTBEAT_INTERVAL_MS=2500 (terminates after 1-2 intervals, no close frame: time to TCP end)"
  echo
  compare_md "$BASE/tether" "$BASE/reference"
} >"$BASE/compare.md"
echo
cat "$BASE/compare.md"
echo "results in $BASE"
