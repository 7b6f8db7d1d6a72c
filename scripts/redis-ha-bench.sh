#!/usr/bin/env bash
# Redis HA benchmarks (docs/cluster.md, docs/benchmarks.md "Redis HA"), on loopback only, with
# real redis-server / redis-sentinel processes started here in temp dirs (stopped on exit):
#
#   cost      4 nodes × N/4 clients, PUSHES pushes to random client ids (history on) entering
#             the nodes in turn, against one Redis (redis_url) and against a Sentinel-managed
#             master with one replica (redis_sentinels), same sitting. Reports, for the Redis
#             that serves the writes: commands per push (INFO commandstats, by command) and
#             CPU seconds per push (INFO cpu). Upkeep traffic (heartbeats, presence, dashboard
#             samples) is included, as it would be in production.
#   failover  REPEAT runs of tests/sentinel.rs (kill -9 of the master under a steady push load,
#             two nodes): time to the promotion and to the first cross-node delivery after the
#             kill, with the pushes answered, unknown (504), refused (503) and acknowledged but
#             missing (each reported by a `recovered: false` resume; the test fails otherwise).
#
#   scripts/redis-ha-bench.sh
#   N=400 PUSHES=500 PUSH_RATE=200 REPEAT=1 scripts/redis-ha-bench.sh   # a smoke run
#
# Session opens and closes write presence too, so PUSHES should dwarf N for a per-push figure.
# Environment: N (2000), PUSHES (20000), PUSH_RATE (1000), REPEAT (5), ONLY ("cost failover"),
# OUT (results folder), PORT (18180, nodes count up), REDIS_PORT (16479; the replica and the
# sentinels take the next ports). Redis Cluster is not supported yet (docs/cluster.md).
# Needs: cargo, curl, jq, redis-server, redis-sentinel (scripts/install-test-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-common.sh

N=${N:-2000}
PUSHES=${PUSHES:-20000}
PUSH_RATE=${PUSH_RATE:-1000}
REPEAT=${REPEAT:-5}
PORT=${PORT:-18180}
REDIS_PORT=${REDIS_PORT:-16479}
ONLY=${ONLY:-cost failover}
OUT=${OUT:-bench-results/redis-ha-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
HA_PIDS=() HA_DIR=""

wants() { [[ " $ONLY " == *" $1 "* ]]; }

stop_ha() {
  local pid
  for pid in "${HA_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  HA_PIDS=()
  if [[ -n $HA_DIR ]]; then rm -rf "$HA_DIR"; fi
  HA_DIR=""
}
cleanup() { bench_cleanup; stop_ha; }
trap cleanup EXIT

# sentinel_set: a master on REDIS_PORT, its replica on +1, sentinels on +2..+4 (as the tests).
sentinel_set() {
  HA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/tether-bench-ha.XXXXXX")
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --dir "$HA_DIR" \
    --maxclients 10000 >"$OUT/redis-master.log" 2>&1 &
  HA_PIDS+=("$!")
  redis-server --bind 127.0.0.1 --port $((REDIS_PORT + 1)) --save "" --appendonly no --dir "$HA_DIR" \
    --replicaof 127.0.0.1 "$REDIS_PORT" >"$OUT/redis-replica.log" 2>&1 &
  HA_PIDS+=("$!")
  local i p
  for i in 2 3 4; do
    p=$((REDIS_PORT + i))
    printf 'port %s\nbind 127.0.0.1\ndir %s\nsentinel monitor tether-m 127.0.0.1 %s 2\nsentinel down-after-milliseconds tether-m 1000\nsentinel failover-timeout tether-m 5000\n' \
      "$p" "$HA_DIR" "$REDIS_PORT" >"$HA_DIR/sentinel-$p.conf"
    redis-sentinel "$HA_DIR/sentinel-$p.conf" >"$OUT/sentinel-$p.log" 2>&1 &
    HA_PIDS+=("$!")
  done
  for _ in $(seq 1 200); do
    if redis-cli -p $((REDIS_PORT + 2)) sentinel ckquorum tether-m 2>/dev/null | grep -q "3 usable" &&
      redis-cli -p $((REDIS_PORT + 1)) info replication | grep -q master_link_status:up; then
      return 0
    fi
    sleep 0.1
  done
  echo "sentinel set did not come up" >&2; exit 1
}

# nodes K FLAGS...: K tether nodes (history on) on PORT..; sets NODE_PIDS, URLS, APIS, PIDS.
nodes() {
  local k=$1 i; shift
  NODE_PIDS=() URLS="" APIS=""
  for i in $(seq 0 $((k - 1))); do
    RUST_LOG=warn target/release/tether --listen "127.0.0.1:$((PORT + i))" --demo-page false \
      --max-connections $((N / k + 500)) $(lift_http_cap target/release/tether) --node-id "node-$i" \
      --history-size 100 "$@" >>"$OUT/tether-server.log" 2>&1 &
    SERVER_PIDS+=("$!") NODE_PIDS+=("$!")
    URLS+="${URLS:+,}ws://127.0.0.1:$((PORT + i))/ws"
    APIS+="${APIS:+,}http://127.0.0.1:$((PORT + i))"
  done
  for i in $(seq 0 $((k - 1))); do wait_health "$((PORT + i))"; done
  PIDS=$(IFS=,; echo "${NODE_PIDS[*]}")
}

# cost NAME: runs the push load against the Redis on REDIS_PORT and reports per push.
cost() {
  local name=$1 cpu0 cpu1
  redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
  cpu0=$(redis_info cpu used_cpu_user)+$(redis_info cpu used_cpu_sys)
  target/release/tether-bench fanout -n "$N" -m "$PUSHES" --rate "$PUSH_RATE" --bytes 100 \
    --push --random-targets --per-worker $((N / 4 + 1)) --url "$URLS" --api "$APIS" \
    --server-pid "$PIDS" --source "$(src 40)" --json "$OUT/$name.json" >"$OUT/$name-bench.txt"
  cpu1=$(redis_info cpu used_cpu_user)+$(redis_info cpu used_cpu_sys)
  redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r' >"$OUT/$name-commandstats.txt"
  {
    echo "$name: $PUSHES pushes, $N clients on 4 nodes"
    awk -F'[:=,]' -v p="$PUSHES" '/^cmdstat_/ { sub("cmdstat_", "", $1); all += $3; printf "  %-12s %8d calls  %.2f per push\n", $1, $3, $3 / p }
      END { printf "  %-12s %8d calls  %.2f per push\n", "all", all, all / p }' "$OUT/$name-commandstats.txt"
    awk -v a="$cpu0" -v b="$cpu1" -v p="$PUSHES" 'BEGIN {
      split(a, x, "+"); split(b, y, "+"); d = (y[1] + y[2]) - (x[1] + x[2])
      printf "  redis CPU %.2f s, %.1f µs per push\n", d, d * 1e6 / p }'
  } | tee "$OUT/$name.txt"
}

cargo build --release --workspace

if wants cost; then
  start_redis
  nodes 4 --redis-url "redis://127.0.0.1:$REDIS_PORT/"
  cost cost-single
  stop_servers; stop_redis; pause
  sentinel_set
  nodes 4 --redis-sentinels "127.0.0.1:$((REDIS_PORT + 2)),127.0.0.1:$((REDIS_PORT + 3)),127.0.0.1:$((REDIS_PORT + 4))" \
    --redis-sentinel-master tether-m
  cost cost-sentinel
  stop_servers; stop_ha
fi

if wants failover; then
  for i in $(seq 1 "$REPEAT"); do
    cargo test --release --test sentinel -- --nocapture 2>&1 | grep "^sentinel failover" | tee -a "$OUT/failover.txt"
  done
fi

{
  echo "# tether Redis HA benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  machine_md
  echo "- redis: $(redis-server --version | cut -d' ' -f3)"
  echo
  for f in "$OUT"/cost-*[a-z].txt "$OUT"/failover.txt; do
    [[ -f $f ]] || continue
    echo "## $(basename "$f" .txt)"; echo '```'; cat "$f"; echo '```'
  done
} >"$OUT/summary.md"
echo "results in $OUT"
