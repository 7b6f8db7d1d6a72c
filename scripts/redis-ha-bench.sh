#!/usr/bin/env bash
# Redis HA benchmarks (docs/cluster.md, docs/benchmarks.md "Redis HA"), on loopback only, with
# real redis-server / redis-sentinel processes started here in temp dirs (stopped on exit):
#
#   cost      4 nodes × N/4 clients, PUSHES pushes to random client ids (history on) entering
#             the nodes in turn, same sitting, against:
#               - one Redis (redis_url),
#               - a Sentinel-managed master with one replica (redis_sentinels),
#               - a Redis Cluster of 3 masters, no replicas (redis_cluster_nodes), where each
#                 push's step runs on the client id's shard ({c:<id>}) and SPUBLISHes there.
#             Counted from 1 s after the N clients are connected (CONFIG RESETSTAT on every
#             Redis that takes writes, during an IDLE_SECS hold before the first push) to the
#             PUSHES-th push answered (the nodes' tether_api_requests_total{endpoint="push"}):
#             tether-bench is stopped (SIGSTOP) while the counters are read, then sends
#             PUSH_RATE / 2 + 10 pushes more, so the session closes come after the count, as the
#             opens come before it. Upkeep (heartbeats, dashboard samples, the cluster bus) is
#             included, as it would be in production. Reports, for each Redis that takes
#             writes (each shard of the cluster, and their sum): commands per push (INFO
#             commandstats, by command), CPU seconds per push (INFO cpu), the push steps it ran
#             (appends stored: the sum of the client streams' top seqs, a fresh Redis each run)
#             and, on the cluster, its SPUBLISHes in push steps (one per append) and others
#             (replies to the origin node's {n:<node>}:to, which commandstats cannot tell from
#             other per-node messages), which node topics and which untagged keys it holds, and
#             the errors it answered (INFO errorstats: MOVED, CROSSSLOT...). CPU is also given
#             net of the upkeep alone (its rate measured while the clients are held before the
#             first push): each shard pays its own cron and cluster bus whatever the load. The
#             summary gives the cluster's Redis CPU per push (summed over the shards, and per push
#             step on each shard) against one Redis's, as counted and net: the target is at
#             most 1.2×.
#   failover  REPEAT runs of tests/sentinel.rs (kill -9 of the master under a steady push load,
#             two nodes): time to the promotion and to the first cross-node delivery after the
#             kill, with the pushes answered, unknown (504), refused (503) and acknowledged but
#             missing (each reported by a `recovered: false` resume; the test fails otherwise).
#
#   scripts/redis-ha-bench.sh
#   N=400 PUSHES=500 PUSH_RATE=200 REPEAT=1 scripts/redis-ha-bench.sh   # a smoke run
#
# PUSHES should dwarf the upkeep of the counted window (IDLE_SECS - 1 plus PUSHES / PUSH_RATE s).
# Environment: N (2000), PUSHES (20000), PUSH_RATE (1000), IDLE_SECS (3, at least 2: the hold
# between the clients connected and the first push, when the counters are reset and the upkeep
# alone is measured), REPEAT (5), ONLY ("cost failover"; `cost` runs all three Redis set-ups),
# OUT (results folder), PORT (18180, nodes count up), REDIS_PORT (16479; the replica and the
# sentinels take the next 4 ports, the cluster's masters +10..+12 and their cluster bus ports
# +20..+22). Redis Cluster failover (a shard's master killed) is not benchmarked here:
# tests/redis_cluster.rs covers it.
# Needs: cargo, curl, jq, redis-server, redis-sentinel, redis-cli (scripts/install-test-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-common.sh

N=${N:-2000}
PUSHES=${PUSHES:-20000}
PUSH_RATE=${PUSH_RATE:-1000}
IDLE_SECS=${IDLE_SECS:-3}
REPEAT=${REPEAT:-5}
PORT=${PORT:-18180}
REDIS_PORT=${REDIS_PORT:-16479}
ONLY=${ONLY:-cost failover}
OUT=${OUT:-bench-results/redis-ha-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
HA_PIDS=() HA_DIR="" STOPPED_PID=""
CLUSTER_PORTS=($((REDIS_PORT + 10)) $((REDIS_PORT + 11)) $((REDIS_PORT + 12)))
PREFIX=tether # redis_prefix: the nodes run with the default

wants() { [[ " $ONLY " == *" $1 "* ]]; }

stop_ha() {
  local pid
  for pid in "${HA_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  HA_PIDS=()
  if [[ -n $HA_DIR ]]; then rm -rf "$HA_DIR"; fi
  HA_DIR=""
}
cleanup() {
  if [[ -n $STOPPED_PID ]]; then kill -CONT "$STOPPED_PID" 2>/dev/null || true; fi
  bench_cleanup; stop_ha
}
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

# cluster_set: a Redis Cluster of 3 masters (no replicas) on CLUSTER_PORTS, each in its own
# dir, cluster bus port +10 given explicitly (the default, port + 10000, is refused past 65535).
cluster_set() {
  HA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/tether-bench-cluster.XXXXXX")
  local p i
  for p in "${CLUSTER_PORTS[@]}"; do
    mkdir "$HA_DIR/$p"
    redis-server --bind 127.0.0.1 --port "$p" --save "" --appendonly no --dir "$HA_DIR/$p" \
      --maxclients 10000 --cluster-enabled yes --cluster-config-file nodes.conf \
      --cluster-node-timeout 1000 --cluster-port $((p + 10)) --repl-diskless-sync-delay 0 \
      >"$OUT/redis-cluster-$p.log" 2>&1 &
    HA_PIDS+=("$!")
  done
  for p in "${CLUSTER_PORTS[@]}"; do
    for i in $(seq 1 100); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
  done
  # Without --cluster-yes redis-cli asks on stdin, and on a closed one exits 0 having done nothing.
  timeout 30 redis-cli --cluster create $(printf '127.0.0.1:%s ' "${CLUSTER_PORTS[@]}") --cluster-yes \
    </dev/null >"$OUT/redis-cluster-create.log" 2>&1 ||
    { echo "redis-cli --cluster create failed (see $OUT/redis-cluster-create.log)" >&2; exit 1; }
  for i in $(seq 1 200); do
    local ok=1
    for p in "${CLUSTER_PORTS[@]}"; do
      redis-cli -p "$p" cluster info | tr -d '\r' |
        awk -F: '$1 == "cluster_state" && $2 == "ok" { s++ } $1 == "cluster_slots_ok" && $2 == 16384 { s++ }
                 $1 == "cluster_known_nodes" && $2 == 3 { s++ } END { exit s != 3 }' || ok=0
    done
    if [[ $ok == 1 ]]; then return 0; fi
    sleep 0.1
  done
  echo "redis cluster did not come up" >&2; exit 1
}

# cpu_at PORT: CPU seconds (user + system) the Redis on PORT has used (one INFO call).
cpu_at() { redis-cli -p "$1" info cpu | tr -d '\r' | awk -F: '$1 == "used_cpu_user" || $1 == "used_cpu_sys" { s += $2 } END { printf "%.6f\n", s }'; }
now() { date +%s.%N; }

# metric_sum START: the sum over the nodes' /metrics of the samples whose `name{labels} `
# starts with START (end it with a space for an exact name).
metric_sum() {
  local api
  for api in ${APIS//,/ }; do curl -fs "$api/metrics" || true; done |
    awk -v pre="$1" 'index($1 " ", pre) == 1 { s += $2 } END { printf "%d\n", s }'
}

# alive PID: the process runs (an exited child not yet waited for is a zombie, still in /proc).
alive() { [[ -r /proc/$1/stat ]] && [[ $(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) != Z ]]; }

# steps_at PORT: appends stored on that Redis, the sum of its client streams' top seqs (each
# append, that is each push here, bumps its stream's by one; a fresh Redis each run).
steps_at() {
  redis-cli -p "$1" --scan --pattern "$PREFIX:{c:*}:m" | awk '{ print "HGET", $0, "t" }' |
    redis-cli -p "$1" | awk '{ s += $1 } END { printf "%d\n", s }'
}

# slot_owner PORT SLOT: the port of the master serving SLOT, as the server on PORT sees it.
slot_owner() {
  redis-cli -p "$1" cluster nodes | tr -d '\r' | awk -v s="$2" '$3 ~ /master/ {
    split($2, a, "[:@]")
    for (i = 9; i <= NF; i++) { n = split($i, r, "-"); if (n == 1) r[2] = r[1]; if (s >= r[1] && s <= r[2]) print a[2] } }'
}

# cluster_layout: for each port of CLUSTER_PORTS, a line `port slots what-it-holds`: the node
# topics ({n:node-i}:to, where replies to that node go) and the keys with no client id's tag.
cluster_layout() {
  local p=${CLUSTER_PORTS[0]} q slot i
  declare -A held=()
  for i in 0 1 2 3; do
    slot=$(redis-cli -p "$p" cluster keyslot "$PREFIX:{n:node-$i}:to")
    q=$(slot_owner "$p" "$slot"); held[$q]+="topic:{n:node-$i} "
  done
  for q in "${CLUSTER_PORTS[@]}"; do
    held[$q]+=$(redis-cli -p "$q" --scan | grep -v "^$PREFIX:{c:" | sort | tr '\n' ' ' || true)
    echo "$q $(redis-cli -p "$q" cluster nodes | tr -d '\r' | awk '$3 ~ /myself/ { s = ""; for (i = 9; i <= NF; i++) s = s (s ? "," : "") $i; print s }') ${held[$q]:-}"
  done
}

# cost NAME PORT...: runs the push load against the nodes started by `nodes` and reports, for
# each Redis on PORT... (the one that takes the writes, or each master of a cluster), per push.
# Counted from 1 s after the clients connected (their presence written) to the PUSHES-th push
# answered. tether-bench then is stopped (SIGSTOP) while the counters are read, and sends
# PUSH_RATE / 2 + 10 more pushes once continued: the clients close after those, outside the count.
cost() {
  local name=$1 p bench_pid i m rc=0 t0 t1 t2 layout="" steps cpu idle net; shift
  local ports=("$@") extra=$((PUSH_RATE / 2 + 10))
  declare -A cpu0=() cpua=() cpu1=() steps_of=()
  RUST_LOG=warn target/release/tether-bench fanout -n "$N" -m $((PUSHES + extra)) --rate "$PUSH_RATE" \
    --bytes 100 --push --random-targets --idle "${IDLE_SECS}s" --per-worker $((N / 4 + 1)) --url "$URLS" \
    --api "$APIS" --server-pid "$PIDS" --source "$(src 40)" --json "$OUT/$name.json" \
    >"$OUT/$name-bench.txt" 2>&1 &
  bench_pid=$!
  HELPER_PIDS+=("$bench_pid")
  for i in $(seq 1 1200); do
    [[ $(metric_sum 'tether_connections ') -ge $N ]] && break
    alive "$bench_pid" || { echo "$name: tether-bench ended before $N clients connected" >&2; exit 1; }
    sleep 0.1
  done
  sleep 1
  t0=$(now)
  for p in "${ports[@]}"; do redis-cli -p "$p" config resetstat >/dev/null; cpu0[$p]=$(cpu_at "$p"); done
  # The upkeep alone, for a rate: from the reset to 0.5 s before the first push is due.
  sleep "$(awk -v i="$IDLE_SECS" 'BEGIN { print i - 1.5 }')"
  t1=$(now)
  for p in "${ports[@]}"; do cpua[$p]=$(cpu_at "$p"); done
  if [[ $(metric_sum 'tether_api_requests_total{endpoint="push",') -gt 0 ]]; then
    echo "$name: pushes began before the upkeep alone was measured: its rate includes some" >&2
  fi
  while [[ $(metric_sum 'tether_api_requests_total{endpoint="push",') -lt $PUSHES ]] && alive "$bench_pid"; do
    sleep 0.02
  done
  if alive "$bench_pid"; then
    kill -STOP "$bench_pid"; STOPPED_PID=$bench_pid
    sleep 0.3 # the push in flight, if any, answered
  else
    echo "$name: tether-bench ended before $PUSHES pushes were answered: the count may hold session closes" >&2
  fi
  t2=$(now)
  m=$(metric_sum 'tether_api_requests_total{endpoint="push",')
  for p in "${ports[@]}"; do
    cpu1[$p]=$(cpu_at "$p")
    redis-cli -p "$p" info commandstats | tr -d '\r' >"$OUT/$name-$p-commandstats.txt"
    redis-cli -p "$p" info errorstats | tr -d '\r' | grep '^errorstat_' >"$OUT/$name-$p-errorstats.txt" || true
  done
  for p in "${ports[@]}"; do steps_of[$p]=$(steps_at "$p"); done
  if [[ -n $STOPPED_PID ]]; then kill -CONT "$bench_pid"; STOPPED_PID=""; fi
  wait "$bench_pid" || rc=$?
  HELPER_PIDS=()
  if [[ $rc != 0 ]]; then echo "$name: tether-bench exited with $rc (see $OUT/$name-bench.txt)" >&2; fi
  # After the clients closed: the counters with the rest of the pushes and the closes, for reference.
  for p in "${ports[@]}"; do
    redis-cli -p "$p" info commandstats | tr -d '\r' >"$OUT/$name-$p-commandstats-end.txt"
  done
  if [[ $name == cost-cluster ]]; then layout=$(cluster_layout); fi
  : >"$OUT/$name.tsv"
  {
    echo "$name: $m pushes counted (at $PUSH_RATE/s, random client ids, entering the 4 nodes in turn), $N clients"
    awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN { printf "  counted %.1f s: the clients held with no push (the upkeep alone measured over its first %.1f s), then the pushes\n", c - a, b - a }'
    jq -r --arg x "$extra" '"  whole run (\($x) pushes more after the count): delivered \(.received) of \(.expected) expected, \(.lost) lost, \(.duplicated) duplicated; answered 200: \(.sent_ok), failed: \(.send_failures | tostring)"' "$OUT/$name.json"
    for p in "${ports[@]}"; do
      steps=${steps_of[$p]}
      cpu=$(awk -v a="${cpu0[$p]}" -v b="${cpu1[$p]}" 'BEGIN { printf "%.6f\n", b - a }')
      # The upkeep's CPU rate in the hold, taken off the whole window: what the pushes cost.
      idle=$(awk -v a="${cpu0[$p]}" -v b="${cpua[$p]}" -v t="$t0" -v u="$t1" 'BEGIN { printf "%.6f\n", (u > t ? (b - a) / (u - t) : 0) }')
      net=$(awk -v c="$cpu" -v i="$idle" -v t="$t0" -v u="$t2" 'BEGIN { printf "%.6f\n", c - i * (u - t) }')
      if [[ -n $layout ]]; then
        awk -v p="$p" '$1 == p { h = ""; for (i = 3; i <= NF; i++) h = h (h ? " " : "") $i
          printf "  shard 127.0.0.1:%s, slots %s; holds %s\n", p, $2, (h == "" ? "no node topic, no key but client ids" : h) }' <<<"$layout"
      else
        echo "  127.0.0.1:$p"
      fi
      awk -F'[:=,]' -v p="$m" '/^cmdstat_/ { sub("cmdstat_", "", $1); all += $3; bad += $9 + $11; c[$1] = $3 }
        END { n = 0; for (k in c) o[++n] = k
              for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (c[o[j]] > c[o[i]]) { t = o[i]; o[i] = o[j]; o[j] = t }
              for (i = 1; i <= n && i <= 10; i++) printf "    %-14s %8d calls  %6.2f per push\n", o[i], c[o[i]], c[o[i]] / p
              if (n > 10) { r = 0; for (i = 11; i <= n; i++) r += c[o[i]]; printf "    %-14s %8d calls  %6.2f per push\n", "(" n - 10 " more)", r, r / p }
              printf "    %-14s %8d calls  %6.2f per push; rejected or failed: %d\n", "all", all, all / p, bad }' \
        "$OUT/$name-$p-commandstats.txt"
      if [[ -s $OUT/$name-$p-errorstats.txt ]]; then echo "    errors: $(tr '\n' ' ' <"$OUT/$name-$p-errorstats.txt")"; fi
      awk -F'[:=,]' -v steps="$steps" -v cpu="$cpu" -v idle="$idle" -v net="$net" -v p="$m" -v port="$p" \
        -v tsv="$OUT/$name.tsv" '
        /^cmdstat_/ { all += $3 } /^cmdstat_spublish:/ { sp = $3 } /^cmdstat_evalsha:/ { ev = $3 }
        END {
          printf "    push steps here (appends stored): %d (%.1f %% of the pushes); evalsha %d\n", steps, steps * 100 / p, ev
          if (sp > 0) printf "    spublish: %d in push steps (one per append), %d other (replies to {n:<node>}:to and any other per-node message)\n", steps, sp - steps
          printf "    redis CPU %.3f s: %.1f µs per push (of all %d)", cpu, cpu * 1e6 / p, p
          if (steps > 0) printf ", %.1f µs per push step run here", cpu * 1e6 / steps
          printf "\n    upkeep alone %.1f ms CPU per second; net of it %.3f s: %.1f µs per push", idle * 1e3, net, net * 1e6 / p
          if (steps > 0) printf ", %.1f µs per push step run here", net * 1e6 / steps
          printf "\n"
          printf "%s\t%d\t%.6f\t%d\t%d\t%d\t%.6f\t%.6f\t%d\n", port, steps, cpu, all, sp, ev, idle, net, p >> tsv }' \
        "$OUT/$name-$p-commandstats.txt"
    done
    if [[ ${#ports[@]} -gt 1 ]]; then
      awk -F'\t' -v p="$m" -v k="${#ports[@]}" '{ st += $2; cpu += $3; all += $4; sp += $5; ev += $6; idle += $7; net += $8 }
        END { printf "  sum over %d shards: %d push steps (%s the %d pushes), %.2f commands per push, evalsha %.2f per push, spublish %.2f per push (%.2f in push steps)\n", k, st, (st == p ? "=" : "!="), p, all / p, ev / p, sp / p, st / p
              printf "  sum over %d shards: redis CPU %.3f s, %.1f µs per push; upkeep alone %.1f ms CPU per second; net of it %.1f µs per push\n", k, cpu, cpu * 1e6 / p, idle * 1e3, net * 1e6 / p }' "$OUT/$name.tsv"
    fi
  } | tee "$OUT/$name.txt"
}

# cost_ratio: the cluster's Redis CPU per push against one Redis's (target: at most 1.2×), as
# counted and net of the upkeep alone (each shard's own cron and cluster bus cost it whatever
# the load, so at a low PUSH_RATE the counted ratio overstates what N shards cost per push).
cost_ratio() {
  [[ -s $OUT/cost-single.tsv && -s $OUT/cost-cluster.tsv ]] || return 0
  awk -F'\t' 'FNR == 1 { f++ }
    f == 1 { one = $3 / $9; onet = $8 / $9 }
    f == 2 { n++; p = $9; port[n] = $1; steps[n] = $2; cpu[n] = $3; net[n] = $8; sum += $3; snet += $8 }
    END {
      printf "cluster against one Redis (target: at most 1.2×), Redis CPU per push summed over %d shards:\n", n
      printf "  as counted: %.1f µs against %.1f µs: %.2f×\n", sum * 1e6 / p, one * 1e6, sum / p / one
      printf "  net of upkeep: %.1f µs against %.1f µs: %.2f×\n", snet * 1e6 / p, onet * 1e6, snet / p / onet
      for (i = 1; i <= n; i++)
        printf "  shard %s: %.1f %% of the push steps, %.1f %% of the cluster CPU; per push step run here %.1f µs = %.2f× one Redis per push (net of upkeep %.1f µs = %.2f×)\n", port[i], steps[i] * 100 / p, cpu[i] * 100 / sum, (steps[i] ? cpu[i] * 1e6 / steps[i] : 0), (steps[i] ? cpu[i] / steps[i] / one : 0), (steps[i] ? net[i] * 1e6 / steps[i] : 0), (steps[i] ? net[i] / steps[i] / onet : 0)
    }' "$OUT/cost-single.tsv" "$OUT/cost-cluster.tsv" | tee "$OUT/cost-ratio.txt"
}

cargo build --release --workspace

if wants cost; then
  start_redis
  nodes 4 --redis-url "redis://127.0.0.1:$REDIS_PORT/"
  cost cost-single "$REDIS_PORT"
  stop_servers; stop_redis; pause
  sentinel_set
  nodes 4 --redis-sentinels "127.0.0.1:$((REDIS_PORT + 2)),127.0.0.1:$((REDIS_PORT + 3)),127.0.0.1:$((REDIS_PORT + 4))" \
    --redis-sentinel-master tether-m
  cost cost-sentinel "$REDIS_PORT"
  stop_servers; stop_ha; pause
  cluster_set
  nodes 4 --redis-cluster-nodes "$(printf '127.0.0.1:%s,' "${CLUSTER_PORTS[@]}" | sed 's/,$//')"
  cost cost-cluster "${CLUSTER_PORTS[@]}"
  stop_servers; stop_ha
  cost_ratio
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
  for f in "$OUT"/cost-single.txt "$OUT"/cost-sentinel.txt "$OUT"/cost-cluster.txt "$OUT"/cost-ratio.txt "$OUT"/failover.txt; do
    [[ -f $f ]] || continue
    echo "## $(basename "$f" .txt)"; echo '```'; cat "$f"; echo '```'
  done
} >"$OUT/summary.md"
echo "results in $OUT"
