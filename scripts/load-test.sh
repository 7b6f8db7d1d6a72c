#!/usr/bin/env bash
# The standard load test of tether, on loopback only: hold, fanout, storm (19,000 connections
# each by default) and evict (1,000 silent + 1,000 healthy clients on a server with short
# heartbeat settings); on request also auth (hold with a JWT per client against a server with
# auth on), connect-load (N - NEW held, then NEW new clients connected idle and again during
# broadcasts, timing each handshake) and migrate (N clients on node A, which is stopped in
# restart mode, reconnecting to node B: reconnects per 100 ms with pacing and without) and
# webhooks (a storm of N clients against a server POSTing its webhooks to
# scripts/webhook-sink.mjs: events expected / queued / delivered / received, lost, dropped,
# throughput, latency). Builds the release binaries (tether and tether-bench), starts a fresh
# server per scenario (stopped on exit, whatever happens), and writes bench-results/<UTC
# date-time>/ with one JSON and one text file per scenario plus summary.md.
#
#   scripts/load-test.sh                 # hold 60 s
#   HOLD=5m scripts/load-test.sh         # longer hold
#   SOAK=1 scripts/load-test.sh          # the 10-minute soak (hold 10m)
#   N=5000 ONLY="hold fanout" scripts/load-test.sh
#   ONLY="auth connect-load" scripts/load-test.sh
#   AUTH=1 ONLY=connect-load scripts/load-test.sh   # connect-load with tokens, auth on
#   ONLY=migrate scripts/load-test.sh    # paced restart vs. all at once, each with and without --honor-hint
#   PIN=1 ONLY=migrate scripts/load-test.sh         # servers on CPU 1, tether-bench on CPU 0
#   PIN=1 ONLY=webhooks scripts/load-test.sh        # the sink runs on tether-bench's CPU
#   PIN=1 ONLY=batch scripts/load-test.sh           # 1,000 single pushes against one batch of them
#
# Environment: N (connections, 19000), HOLD (60s), SOAK (1 = 10m hold), PORT (18080),
# ONLY (scenarios to run: hold fanout storm evict [default], auth, hold-history,
# hold-compression, hold-webhooks, everything, everything-cluster, connect-load, migrate, webhooks,
# batch), OUT (results
# folder), PAUSE_SECS (5, between scenarios); connect-load: NEW (500),
# BATCH (8), BCAST_RATE (3), AUTH (1 = auth on and tokens); migrate: MIGRATE_WINDOW (10s),
# MIGRATE_HINT ("no yes": runs without and with --honor-hint), node B on PORT + 1; webhooks:
# WEBHOOK_PORT (the sink, PORT + 2), WEBHOOK_WAIT (60, seconds to wait after the storm for the
# queue to drain), WEBHOOK_FAIL_FIRST (0: the sink answers 500 to that many first POSTs),
# WEBHOOK_DELAY_MS (0: the sink's delay before each answer); PIN (1 = taskset: servers on CPU 1,
# tether-bench and the webhook sink on CPU 0). Auth secrets are random, in a temp file removed
# on exit; the webhook secret is random too, passed through the environment; batch: BATCH_N
# (1000, at most 1000), REPEAT (7).
# Needs: cargo, curl, jq (and node for webhooks). One process may hold at most 20,000
# descriptors here: tether-bench spreads its clients over worker processes and loopback source
# addresses by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-common.sh

N=${N:-19000}
HOLD=${HOLD:-60s}
[[ ${SOAK:-0} == 1 ]] && HOLD=10m
PORT=${PORT:-18080}
ONLY=${ONLY:-hold fanout storm evict}
OUT=${OUT:-bench-results/$(date -u +%Y%m%dT%H%M%SZ)}
URL="ws://127.0.0.1:$PORT/ws"
mkdir -p "$OUT"
trap bench_cleanup EXIT

cargo build --release --workspace
# Room for N sessions plus API connections, below the 20,000-descriptor process limit.
MAXC=$((N + 500))

wants() { [[ " $ONLY " == *" $1 "* ]]; }

if wants hold; then
  start_tether "$PORT" --max-connections "$MAXC"
  bench hold hold -n "$N" --heartbeat 30s --hold "$HOLD" --url "$URL" --server-pid "$SERVER_PID" --source "$(src 1)"
  stop_servers; pause
fi
if wants fanout; then
  start_tether "$PORT" --max-connections "$MAXC"
  bench fanout fanout -n "$N" -m 50 --rate 10 --bytes 100 --url "$URL" --server-pid "$SERVER_PID" --source "$(src 2)"
  stop_servers; pause
fi
if wants storm; then
  start_tether "$PORT" --max-connections "$MAXC"
  bench storm storm -n "$N" --wave-timeout 60s --url "$URL" --server-pid "$SERVER_PID" --source "$(src 3)"
  stop_servers; pause
fi
if wants evict; then
  start_tether "$PORT" --max-connections "$MAXC" \
    --heartbeat-interval 2s --heartbeat-timeout 5s --reap-interval 1s
  bench evict evict --silent 1000 --healthy 1000 --reap-ms 1000 --url "$URL" --source "$(src 4)"
  stop_servers; pause
fi
if wants auth; then
  new_secret
  start_tether "$PORT" --max-connections "$MAXC" --auth on --auth-hmac-secret-file "$SECRET_FILE"
  bench auth hold -n "$N" --heartbeat 30s --hold "$HOLD" --url "$URL" --server-pid "$SERVER_PID" \
    --source "$(src 5)" --token-secret "$SECRET_FILE"
  stop_servers; pause
fi
# One feature at a time, for what each adds per connection to the plain hold (docs/benchmarks.md).
if wants hold-history; then
  start_tether "$PORT" --max-connections "$MAXC" --history-size 100
  bench hold-history hold -n "$N" --heartbeat 30s --hold "$HOLD" --url "$URL" \
    --server-pid "$SERVER_PID" --source "$(src 14)"
  stop_servers; pause
fi
if wants hold-compression; then
  start_tether "$PORT" --max-connections "$MAXC" --compression true
  bench hold-compression hold -n "$N" --heartbeat 30s --hold "$HOLD" --url "$URL" \
    --server-pid "$SERVER_PID" --source "$(src 15)" --compression
  stop_servers; pause
fi
if wants hold-webhooks; then
  WH_PORT=${WEBHOOK_PORT:-$((PORT + 2))}
  WEBHOOK_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  export WEBHOOK_SECRET
  start_sink "$WH_PORT" "$OUT/hold-webhooks-sink.json"
  TETHER_WEBHOOK_SECRET=$WEBHOOK_SECRET start_tether "$PORT" --max-connections "$MAXC" \
    --webhook-url "http://127.0.0.1:$WH_PORT/hook"
  bench hold-webhooks hold -n "$N" --heartbeat 30s --hold "$HOLD" --url "$URL" \
    --server-pid "$SERVER_PID" --source "$(src 16)"
  stop_servers; stop_helpers; pause
fi
if wants everything; then
  # The hold with every per-connection feature on at once: a token each (auth), history (each
  # client id a stream), permessage-deflate negotiated by every client, and webhooks to a sink
  # (connect/online per client while it connects).
  new_secret
  WH_PORT=${WEBHOOK_PORT:-$((PORT + 2))}
  WEBHOOK_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  export WEBHOOK_SECRET
  start_sink "$WH_PORT" "$OUT/everything-sink.json"
  TETHER_WEBHOOK_SECRET=$WEBHOOK_SECRET start_tether "$PORT" --max-connections "$MAXC" \
    --auth on --auth-hmac-secret-file "$SECRET_FILE" --history-size 100 --compression true \
    --webhook-url "http://127.0.0.1:$WH_PORT/hook"
  bench everything hold -n "$N" --heartbeat 30s --hold "$HOLD" --url "$URL" --server-pid "$SERVER_PID" \
    --source "$(src 13)" --token-secret "$SECRET_FILE" --compression
  stop_servers; stop_helpers; pause
fi
if wants everything-cluster; then
  # `everything` on a node of a cluster (a redis-server started here) whose node-to-node
  # messages are signed with cluster_secret: presence per client id and signed routing on top.
  new_secret
  start_redis
  WH_PORT=${WEBHOOK_PORT:-$((PORT + 2))}
  WEBHOOK_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  export WEBHOOK_SECRET
  start_sink "$WH_PORT" "$OUT/everything-cluster-sink.json"
  TETHER_WEBHOOK_SECRET=$WEBHOOK_SECRET TETHER_CLUSTER_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n') \
    start_tether "$PORT" --max-connections "$MAXC" \
    --auth on --auth-hmac-secret-file "$SECRET_FILE" --history-size 100 --compression true \
    --webhook-url "http://127.0.0.1:$WH_PORT/hook" --redis-url "redis://127.0.0.1:$REDIS_PORT/"
  bench everything-cluster hold -n "$N" --heartbeat 30s --hold "$HOLD" --url "$URL" --server-pid "$SERVER_PID" \
    --source "$(src 17)" --token-secret "$SECRET_FILE" --compression
  stop_servers; stop_helpers; stop_redis; pause
fi
if wants connect-load; then
  NEW=${NEW:-500}
  AUTH_FLAGS=() TOKEN_FLAGS=()
  if [[ ${AUTH:-0} == 1 ]]; then
    new_secret
    AUTH_FLAGS=(--auth on --auth-hmac-secret-file "$SECRET_FILE")
    TOKEN_FLAGS=(--token-secret "$SECRET_FILE")
  fi
  start_tether "$PORT" --max-connections "$MAXC" "${AUTH_FLAGS[@]}"
  bench connect-load connect-load -n "$((N - NEW))" -m "$NEW" -b "${BATCH:-8}" \
    --broadcast-rate "${BCAST_RATE:-3}" --url "$URL" --server-pid "$SERVER_PID" --source "$(src 6)" \
    "${TOKEN_FLAGS[@]}"
  stop_servers
fi
if wants migrate; then
  # Node A in restart mode, node B plain; tether-bench connects N clients to A, sends its
  # workers `go`, SIGTERMs A and times the reconnects to B. Paced: migrate_window
  # MIGRATE_WINDOW. All at once: the same restart mode with migrate_window 0s (valid: every
  # session gets `shutdown` with reconnect_after_ms 0 and 1012 at once), so only the pacing
  # differs; drain with --shutdown-timeout 0s would also close everyone at once, but with 1001
  # ("reconnect with backoff") instead of 1012, i.e. a different contract.
  PORT_B=$((PORT + 1))
  k=7
  for pacing in paced unpaced; do
    window=${MIGRATE_WINDOW:-10s}
    [[ $pacing == unpaced ]] && window=0s
    for hint in ${MIGRATE_HINT:-no yes}; do
      name="migrate-$pacing" HINT_FLAGS=()
      if [[ $hint == yes ]]; then name+="-hint" HINT_FLAGS=(--honor-hint); fi
      start_tether "$PORT" --max-connections "$MAXC" --shutdown-mode restart --migrate-window "$window"
      A_PID=$SERVER_PID
      start_tether "$PORT_B" --max-connections "$MAXC"
      # Each run from its own source addresses (127.0.k.*), away from the last run's TIME_WAIT.
      bench "$name" storm -n "$N" --wave-timeout 60s --url "$URL" \
        --migrate-to "ws://127.0.0.1:$PORT_B/ws" --stop-pid "$A_PID" --server-pid "$SERVER_PID" \
        --source "$(src "$k")" "${HINT_FLAGS[@]}"
      stop_servers; pause
      k=$((k + 1))
    done
  done
fi
if wants batch; then
  # Server-side control (docs/benchmarks.md): BATCH_N pushes to distinct client ids as single
  # calls on one keep-alive connection, then as one POST /api/v1/batch, REPEAT times each. One
  # runtime worker thread, so the figure is per core (pin with PIN=1).
  TOKIO_WORKER_THREADS=1 start_tether "$PORT" --worker-threads 1
  bench batch batch -n "${BATCH_N:-1000}" --repeat "${REPEAT:-7}" --url "$URL" --source "$(src 17)"
  stop_servers; pause
fi
if wants webhooks; then
  # Webhooks during a reconnect storm (docs/protocol.md §10): a sink (scripts/webhook-sink.mjs) on
  # WEBHOOK_PORT counts what arrives; tether POSTs every event to it, signed with a random
  # secret (given to both through the environment, not the command line); `storm` connects N
  # clients, drops them all, reconnects them all and ends them. Then the script waits (at most
  # WEBHOOK_WAIT s after the storm) until the server has generated every expected event and
  # none is pending, stops the sink and compares queued / delivered / received / expected.
  WH_PORT=${WEBHOOK_PORT:-$((PORT + 2))}
  WEBHOOK_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  export WEBHOOK_SECRET
  SINK_FLAGS=(--fail-first "${WEBHOOK_FAIL_FIRST:-0}" --delay-ms "${WEBHOOK_DELAY_MS:-0}")
  start_sink "$WH_PORT" "$OUT/webhook-sink.json" "${SINK_FLAGS[@]}"
  TETHER_WEBHOOK_SECRET=$WEBHOOK_SECRET start_tether "$PORT" --max-connections "$MAXC" \
    --webhook-url "http://127.0.0.1:$WH_PORT/hook"
  # The webhook counters every 200 ms, for the queue depth over time.
  echo "t_ms queued delivered failed_attempts dropped_queue_full dropped_expired pending" \
    >"$OUT/webhooks-metrics.tsv"
  "${PIN_BENCH[@]}" bash -c 'while :; do
      m=$(curl -fs "http://127.0.0.1:$1/metrics" || true)
      [[ -n $m ]] && awk -v t="$(date +%s%3N)" "$2" <<<"$m"
      sleep 0.2
    done' poll "$PORT" "$WEBHOOK_AWK" >>"$OUT/webhooks-metrics.tsv" 2>/dev/null &
  HELPER_PIDS+=("$!")
  storm_start_ms=$(date +%s%3N)
  bench webhooks-storm storm -n "$N" --wave-timeout 60s --url "$URL" --server-pid "$SERVER_PID" \
    --source "$(src 12)"
  storm_end_ms=$(date +%s%3N)
  # What docs/protocol.md §10 and src/webhooks/mod.rs give for this run: a connect and a disconnect per
  # session (E1 in wave 1, E2 back in wave 2), one `online` per client id (the reconnect is
  # within offline_grace, 5 s, so it sends neither `offline` nor `online`), one `offline` per
  # client id 5 s after the end (its last session ended and it did not come back).
  e1=$(field "$OUT/webhooks-storm.json" .established)
  e2=$(field "$OUT/webhooks-storm.json" .reconnected)
  expected=$((2 * (e1 + e2) + 2 * e1))
  deadline=$(( $(date +%s) + ${WEBHOOK_WAIT:-60} ))
  while :; do
    read -r q _ _ full _ pend < <(webhook_counters "$PORT")
    (( q + full >= expected && pend == 0 )) && break
    if (( $(date +%s) >= deadline )); then
      echo "webhooks: queued $q + dropped $full of $expected expected, $pend pending after ${WEBHOOK_WAIT:-60} s" >&2
      break
    fi
    sleep 0.5
  done
  drained_ms=$(date +%s%3N)
  sleep 1   # one more reaper tick: an event generated late would show up in the counters
  curl -fs "http://127.0.0.1:$PORT/metrics" >"$OUT/webhooks-metrics.prom" || true
  read -r q d f full ex pend < <(webhook_counters "$PORT")
  stop_helpers   # the poller, and the sink: it writes webhook-sink.json on SIGTERM
  stop_servers
  webhooks_report "$OUT" "$e1" "$e2" "$q" "$d" "$f" "$full" "$ex" "$pend" \
    "$storm_start_ms" "$storm_end_ms" "$drained_ms" | tee "$OUT/webhooks.txt"
  unset WEBHOOK_SECRET
  pause
fi

{
  echo "# tether load test, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  machine_md
  echo "- N=$N, hold $HOLD; evict server: heartbeat_interval 2s, heartbeat_timeout 5s, reap_interval 1s"
  if wants migrate; then
    echo "- migrate: node A --shutdown-mode restart --migrate-window ${MIGRATE_WINDOW:-10s} (paced) or 0s (all at once), node B plain; runs with --honor-hint: ${MIGRATE_HINT:-no yes}"
  fi
  if wants webhooks; then
    echo "- webhooks: storm -n $N, server --webhook-url http://127.0.0.1:${WEBHOOK_PORT:-$((PORT + 2))}/hook (offline_grace 5 s), sink: scripts/webhook-sink.mjs, fail-first ${WEBHOOK_FAIL_FIRST:-0}, delay ${WEBHOOK_DELAY_MS:-0} ms"
  fi
  if wants hold-history || wants hold-compression || wants hold-webhooks; then
    echo "- hold-history: --history-size 100; hold-compression: --compression true, every client negotiates it; hold-webhooks: --webhook-url to scripts/webhook-sink.mjs"
  fi
  if wants everything; then
    echo "- everything: hold -n $N with auth (a token each), history_size 100, compression negotiated by every client, webhooks to scripts/webhook-sink.mjs"
  fi
  if wants everything-cluster; then
    echo "- everything-cluster: everything, on a node with redis_url (a local redis-server) and cluster_secret"
  fi
  if wants connect-load; then
    echo "- connect-load: $((N - ${NEW:-500})) held + ${NEW:-500} new per phase, batches of ${BATCH:-8}, broadcasts ${BCAST_RATE:-3}/s, auth ${AUTH:-0}"
  fi
  echo
  summary_md "$OUT"
} >"$OUT/summary.md"
echo
cat "$OUT/summary.md"
echo "results in $OUT"
