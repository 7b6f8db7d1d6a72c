#!/usr/bin/env bash
# Channel presence at scale (docs/protocol.md §14, issue #18): the presence query of one channel
# with N subscribers on one node and on two nodes sharing a Redis, and a lobby churn run on each (N
# clients moving between K presence channels for DURATION, every join / leave checked exactly
# once by an observer per channel). Release builds; PIN=1 puts the servers (and Redis) on CPU 1
# and tether-bench on CPU 0. Results in bench-results/presence-<time>/.
#   N=19000 K=200 DURATION=60s PIN=1 scripts/presence-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-19000} K=${K:-200} DURATION=${DURATION:-60s} REQUESTS=${REQUESTS:-200}
OUT=bench-results/presence-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
source scripts/bench-common.sh
REDIS_PID=""
trap 'stop_servers; stop_redis' EXIT
nice -n 10 cargo build --release -q -p tether --bin tether
nice -n 10 cargo build --release -q -p tether-bench
# The queried channel (bench.presence.0) is a plain channel: the listing works the same for any
# channel, and on a presence channel N subscribers joining one by one would be N²/2 `join` frames
# (180 million for 19,000), which measures the join storm rather than the query.
flags=(--presence-channels 'lobby.*' --presence-grace 1s --max-connections $((N + 2000)))
run() { # name, tether-bench args...
  local name=$1; shift
  "${PIN_BENCH[@]}" target/release/tether-bench "$@" --json "$OUT/$name.json" | tee "$OUT/$name.txt"
}

echo "== one node"
start_tether 18080 "${flags[@]}"
run presence-1node presence -n "$N" --requests "$REQUESTS" --limit 1000 --url ws://127.0.0.1:18080/ws
stop_servers
# A fresh server for the lobby, so its RSS per connection starts from an idle process.
start_tether 18080 "${flags[@]}"
run lobby-1node lobby -n "$N" -k "$K" --duration "$DURATION" --churn 2s --settle 5s \
  --url ws://127.0.0.1:18080/ws --server-pid "$SERVER_PID"
stop_servers

echo "== two nodes, one Redis"
REDIS_PORT=16390 start_redis
start_tether 18080 "${flags[@]}" --redis-url redis://127.0.0.1:16390 --node-id bench-a --cluster-reply-timeout 1s
start_tether 18081 "${flags[@]}" --redis-url redis://127.0.0.1:16390 --node-id bench-b --cluster-reply-timeout 1s
run presence-2nodes presence -n "$N" --requests "$REQUESTS" --limit 1000 --url ws://127.0.0.1:18080/ws,ws://127.0.0.1:18081/ws
stop_servers
start_tether 18080 "${flags[@]}" --redis-url redis://127.0.0.1:16390 --node-id bench-c --cluster-reply-timeout 1s
a=$SERVER_PID
start_tether 18081 "${flags[@]}" --redis-url redis://127.0.0.1:16390 --node-id bench-d --cluster-reply-timeout 1s
run lobby-2nodes lobby -n "$N" -k "$K" --duration "$DURATION" --churn 2s --settle 5s \
  --url ws://127.0.0.1:18080/ws,ws://127.0.0.1:18081/ws --server-pid "$a,$SERVER_PID"
echo "results in $OUT"
