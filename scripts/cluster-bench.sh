#!/usr/bin/env bash
# Cluster benchmarks (docs/protocol.md §9), on loopback only, with a real redis-server started here in a
# temp dir (stopped on exit, whatever happens):
#
#   broadcast  one node × N clients, then 2 nodes × N/2 through Redis, same sitting: a broadcast
#              entering one node (fanout -m 50 --rate 10 --bytes 100), deliveries/s and latency
#   push       4 nodes × N/4: pushes to random client ids entering the nodes in turn
#              (--push --random-targets), API p50/p99 and end-to-end latency
#   scale      NODES × PER clients (default 8 × 19,000), held HOLD with heartbeats, then one push
#              to every client id through the nodes in turn: lost, RSS per connection per node,
#              Redis CPU and memory
#
#   ONLY=broadcast scripts/cluster-bench.sh
#   N=19000 ONLY="broadcast push" scripts/cluster-bench.sh
#   NODES=8 PER=19000 HOLD=60s ONLY=scale scripts/cluster-bench.sh
#
# Environment: N (19000), NODES (8), PER (19000), HOLD (60s), PUSHES (2000), PUSH_RATE (200),
# ONLY (broadcast push [default], scale), OUT (results folder), PORT (18080, nodes count up),
# REDIS_PORT (16379). PIN=1 pins redis and the nodes to CPU 1 and tether-bench to CPU 0.
# SERVER_BIN picks the tether binary of the nodes (an A/B of two builds in one sitting).
# Needs: cargo, curl, jq, redis-server (scripts/install-test-deps.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-common.sh

N=${N:-19000}
NODES=${NODES:-8}
PER=${PER:-19000}
HOLD=${HOLD:-60s}
PORT=${PORT:-18080}
ONLY=${ONLY:-broadcast push}
OUT=${OUT:-bench-results/cluster-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"

SERVER_CPU=() BENCH_CPU=()
if [[ ${PIN:-0} == 1 ]]; then SERVER_CPU=(taskset -c 1) BENCH_CPU=(taskset -c 0); fi

trap bench_cleanup EXIT

wants() { [[ " $ONLY " == *" $1 "* ]]; }


# nodes K MAXC: starts K tether nodes on PORT.. joined through Redis; sets NODE_PIDS, URLS, APIS.
nodes() {
  local k=$1 maxc=$2 i
  NODE_PIDS=() URLS="" APIS=""
  for i in $(seq 0 $((k - 1))); do
    RUST_LOG=warn "${SERVER_CPU[@]}" "${SERVER_BIN:-target/release/tether}" --listen "127.0.0.1:$((PORT + i))" \
      --demo-page false --max-connections "$maxc" $(lift_http_cap "${SERVER_BIN:-target/release/tether}") --node-id "node-$i" \
      --redis-url "redis://127.0.0.1:$REDIS_PORT/" >>"$OUT/tether-server.log" 2>&1 &
    SERVER_PIDS+=("$!") NODE_PIDS+=("$!")
    URLS+="${URLS:+,}ws://127.0.0.1:$((PORT + i))/ws"
    APIS+="${APIS:+,}http://127.0.0.1:$((PORT + i))"
  done
  for i in $(seq 0 $((k - 1))); do wait_health "$((PORT + i))"; done
  PIDS=$(IFS=,; echo "${NODE_PIDS[*]}")
}

bench_pinned() {
  local name=$1; shift
  echo "== $name: tether-bench $*" >&2
  "${BENCH_CPU[@]}" target/release/tether-bench "$@" --json "$OUT/$name.json" | tee "$OUT/$name.txt"
}

cargo build --release --workspace

if wants broadcast; then
  RUST_LOG=warn "${SERVER_CPU[@]}" "${SERVER_BIN:-target/release/tether}" --listen "127.0.0.1:$PORT" --demo-page false \
    --max-connections $((N + 500)) $(lift_http_cap "${SERVER_BIN:-target/release/tether}") >>"$OUT/tether-server.log" 2>&1 &
  ONE=$!
  SERVER_PIDS+=("$ONE")
  wait_health "$PORT"
  bench_pinned broadcast-1node fanout -n "$N" -m 50 --rate 10 --bytes 100 \
    --url "ws://127.0.0.1:$PORT/ws" --server-pid "$ONE" --source "$(src 20)"
  stop_servers; pause
  start_redis
  nodes 2 $((N / 2 + 500))
  cpu0=$(redis_info cpu used_cpu_user); sys0=$(redis_info cpu used_cpu_sys)
  bench_pinned broadcast-2nodes fanout -n "$N" -m 50 --rate 10 --bytes 100 --per-worker $((N / 4 + 1)) \
    --url "$URLS" --api "http://127.0.0.1:$PORT" --server-pid "$PIDS" --source "$(src 21)"
  cpu1=$(redis_info cpu used_cpu_user); sys1=$(redis_info cpu used_cpu_sys)
  echo "redis CPU seconds during broadcast-2nodes: $(awk -v a="$cpu0" -v b="$sys0" -v c="$cpu1" -v d="$sys1" 'BEGIN{printf "%.2f", (c+d)-(a+b)}')" \
    | tee -a "$OUT/broadcast-2nodes.txt"
  stop_servers; stop_redis; pause
fi

if wants push; then
  start_redis
  nodes 4 $((N / 4 + 500))
  bench_pinned push-4nodes fanout -n "$N" -m "${PUSHES:-2000}" --rate "${PUSH_RATE:-200}" --bytes 100 \
    --push --random-targets --per-worker $((N / 4 + 1)) --url "$URLS" --api "$APIS" \
    --server-pid "$PIDS" --source "$(src 22)"
  stop_servers; stop_redis; pause
fi

if wants scale; then
  start_redis
  nodes "$NODES" $((PER + 500))
  TOTAL=$((NODES * PER))
  declare -A RSS0
  for pid in "${NODE_PIDS[@]}"; do RSS0[$pid]=$(ps -o rss= -p "$pid" | tr -d ' '); done
  mem0=$(redis_info memory used_memory)
  cpu0=$(redis_info cpu used_cpu_user); sys0=$(redis_info cpu used_cpu_sys)
  # One push per client id: c0..c(TOTAL-1) in order, through the nodes in turn.
  bench_pinned scale fanout -n "$TOTAL" -m "$TOTAL" --rate "${PUSH_RATE:-2000}" --bytes 100 --push \
    --idle "$HOLD" --heartbeat 30s --workers $((NODES * 3)) --concurrency 256 --connect-timeout 30s \
    --url "$URLS" --api "$APIS" --server-pid "$PIDS" --source "$(src 30)" --drain-timeout 60s
  cpu1=$(redis_info cpu used_cpu_user); sys1=$(redis_info cpu used_cpu_sys)
  {
    echo "redis: used_memory before $mem0 B, peak $(redis_info memory used_memory_peak) B;" \
      "CPU seconds during the run $(awk -v a="$cpu0" -v b="$sys0" -v c="$cpu1" -v d="$sys1" 'BEGIN{printf "%.2f", (c+d)-(a+b)}')"
    jq -r '.server.held[] | "\(.pid) \(.rss_kib)"' "$OUT/scale.json" | while read -r pid rss; do
      echo "node pid $pid: RSS ${RSS0[$pid]} KiB idle, $rss KiB after the hold:" \
        "$(( (rss - RSS0[$pid]) * 1024 / PER )) bytes per connection"
    done
  } | tee -a "$OUT/scale.txt"
  stop_servers; stop_redis
fi

{
  echo "# tether cluster benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  machine_md
  echo "- redis: $(redis-server --version | cut -d' ' -f3); PIN=${PIN:-0}"
  echo
  for f in "$OUT"/*.txt; do echo "## $(basename "$f" .txt)"; echo '```'; cat "$f"; echo '```'; done
} >"$OUT/summary.md"
echo "results in $OUT"
