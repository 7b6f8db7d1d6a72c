#!/usr/bin/env bash
# Helpers shared by scripts/load-test.sh and scripts/compare.sh (sourced, not run).
# Everything stays on loopback. Servers started here are stopped by `stop_servers` (trap it).

SERVER_PIDS=()
HELPER_PIDS=()
SECRET_FILE=""
# PIN=1: servers started here run on CPU 1 and tether-bench on CPU 0 (taskset), so the load
# generator cannot take the servers' core; PIN=0 (the default) leaves both to the scheduler.
PIN_SERVER=() PIN_BENCH=()
if [[ ${PIN:-0} == 1 ]]; then PIN_SERVER=(taskset -c 1) PIN_BENCH=(taskset -c 0); fi

# Waits (bounded, 20 s) until GET http://127.0.0.1:$1/health answers.
wait_health() {
  local port=$1 i
  for i in $(seq 1 200); do
    if curl -fs -o /dev/null "http://127.0.0.1:$port/health"; then return 0; fi
    sleep 0.1
  done
  echo "server on port $port did not become healthy" >&2
  return 1
}

# lift_http_cap BIN: the flags that lift max_http_connections_per_ip, for a binary that has the
# key (none for a build from before it, given as SERVER_BIN for an A/B).
lift_http_cap() {
  if "$1" --help 2>/dev/null | grep -q -- --max-http-connections-per-ip; then
    echo "--max-http-connections-per-ip 0"
  fi
}

# start_tether PORT [flags...]: starts target/release/tether (or $SERVER_BIN, for comparing two
# builds) in the background; sets SERVER_PID.
# The load tool keeps hundreds of handshakes in flight from each source address: more than
# max_http_connections_per_ip (64) allows one address, so the benches lift that cap.
# (A build from before that key, given as SERVER_BIN for an A/B, does not get the flag.)
start_tether() {
  local port=$1; shift
  local bin=${SERVER_BIN:-target/release/tether} lift=()
  read -ra lift <<<"$(lift_http_cap "$bin")"
  RUST_LOG=${SERVER_LOG:-warn} "${PIN_SERVER[@]}" "$bin" --listen "127.0.0.1:$port" --demo-page false \
    "${lift[@]}" "$@" \
    >>"$OUT/tether-server.log" 2>&1 &
  SERVER_PID=$!
  SERVER_PIDS+=("$SERVER_PID")
  wait_health "$port"
}

# start_reference PORT [ENV=VALUE...]: starts the Node reference server from $REF_DIR; sets SERVER_PID.
start_reference() {
  local port=$1; shift
  env "$@" node "$REF_DIR/server.js" --port "$port" >>"$OUT/reference-server.log" 2>&1 &
  SERVER_PID=$!
  SERVER_PIDS+=("$SERVER_PID")
  wait_health "$port"
}

# stop_server PID: SIGTERM twice (drain skipped), then SIGKILL after 10 s if still there.
stop_server() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  sleep 0.2
  stop_helper "$pid"
}

# Stops every server this script started (for `trap stop_servers EXIT`).
stop_servers() {
  local pid
  for pid in "${SERVER_PIDS[@]}"; do stop_server "$pid"; done
  SERVER_PIDS=()
}

# new_secret: a random HS256 secret (64 base64 characters) in a fresh 0600 temp file; sets
# SECRET_FILE, once per run. `bench_cleanup` removes it.
new_secret() {
  [[ -n $SECRET_FILE ]] && return 0
  SECRET_FILE=$(mktemp "${TMPDIR:-/tmp}/tether-bench-secret.XXXXXX")
  head -c 48 /dev/urandom | base64 -w0 >"$SECRET_FILE"
}

# start_sink PORT OUT_JSON [sink flags...]: starts scripts/webhook-sink.mjs on 127.0.0.1:PORT
# (on tether-bench's CPU with PIN=1: the receiver stands for the outside world, the server keeps
# its core), the HMAC secret from WEBHOOK_SECRET; sets SINK_PID. It writes OUT_JSON on SIGTERM.
start_sink() {
  local port=$1 out=$2 i; shift 2
  "${PIN_BENCH[@]}" node scripts/webhook-sink.mjs --port "$port" --out "$out" "$@" \
    >>"$OUT/webhook-sink.log" 2>&1 &
  SINK_PID=$!
  HELPER_PIDS+=("$SINK_PID")
  for i in $(seq 1 100); do
    if curl -fs -o /dev/null "http://127.0.0.1:$port/summary"; then return 0; fi
    sleep 0.1
  done
  echo "webhook sink on port $port did not start" >&2
  return 1
}

# stop_helper PID: SIGTERM, wait (bounded, 10 s), then SIGKILL.
stop_helper() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  for i in $(seq 1 100); do
    if ! kill -0 "$pid" 2>/dev/null; then wait "$pid" 2>/dev/null || true; return 0; fi
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# Stops every helper (sink, poller) this script started.
stop_helpers() {
  local pid
  for pid in "${HELPER_PIDS[@]}"; do stop_helper "$pid"; done
  HELPER_PIDS=()
}

# awk program: one line `t queued delivered failed_attempts dropped_queue_full dropped_expired
# pending` from tether's /metrics text (t from `-v t=`).
WEBHOOK_AWK='
  $1 == "tether_webhook_events_total" { q = $2 }
  $1 == "tether_webhook_delivered_total" { d = $2 }
  $1 == "tether_webhook_failed_attempts_total" { f = $2 }
  $1 == "tether_webhook_dropped_total{reason=\"queue_full\"}" { full = $2 }
  $1 == "tether_webhook_dropped_total{reason=\"expired\"}" { ex = $2 }
  $1 == "tether_webhook_pending" { p = $2 }
  END { print t, q + 0, d + 0, f + 0, full + 0, ex + 0, p + 0 }'

# webhook_counters PORT: `queued delivered failed_attempts dropped_queue_full dropped_expired
# pending` now (zeros when the server does not answer).
webhook_counters() {
  { curl -fs "http://127.0.0.1:$1/metrics" || true; } | awk -v t=0 "$WEBHOOK_AWK" | cut -d' ' -f2-
}

# webhooks_report DIR E1 E2 QUEUED DELIVERED FAILED DROPPED_FULL DROPPED_EXPIRED PENDING
#   STORM_START_MS STORM_END_MS DRAINED_MS: joins DIR/webhook-sink.json (what the sink got),
# DIR/webhooks-storm.json and the server's counters into DIR/webhooks.json; prints the summary.
webhooks_report() {
  local dir=$1 maxp
  maxp=$(awk 'NR > 1 && $7 > m { m = $7; at = $1 } END { printf "%.0f %.0f\n", m, at }' "$dir/webhooks-metrics.tsv")
  jq -n --slurpfile s "$dir/webhook-sink.json" --slurpfile st "$dir/webhooks-storm.json" \
    --argjson e1 "$2" --argjson e2 "$3" --argjson q "$4" --argjson d "$5" --argjson f "$6" \
    --argjson full "$7" --argjson ex "$8" --argjson pend "$9" --argjson t0 "${10}" \
    --argjson t1 "${11}" --argjson t2 "${12}" --arg maxp "$maxp" '
    $s[0] as $s | $st[0] as $st |
    {connect: ($e1 + $e2), disconnect: ($e1 + $e2), online: $e1, offline: $e1} as $exp |
    ($exp | add) as $total |
    ($s.first_last_ms) as $fl |
    ([$fl.connect, $fl.online, $fl.disconnect] | map(select(. != null))) as $storm_fl |
    (($s.by_event.connect // 0) + ($s.by_event.online // 0) + ($s.by_event.disconnect // 0)) as $storm_n |
    (if ($storm_fl | length) > 0
     then (($storm_fl | map(.[1]) | max) - ($storm_fl | map(.[0]) | min)) / 1000 else null end) as $storm_secs |
    (if $fl.offline then ($fl.offline[1] - $fl.offline[0]) / 1000 else null end) as $off_secs |
    ($maxp | split(" ") | map(tonumber)) as $mp |
    {
      scenario: "webhooks",
      clients: $e1, reconnected: $e2,
      storm_all_back_secs: $st.all_back_secs,
      offline_grace_secs: 5,
      expected: ($exp + {total: $total}),
      server: {queued: $q, delivered: $d, failed_attempts: $f, dropped_queue_full: $full,
               dropped_expired: $ex, pending: $pend, generated: ($q + $full),
               max_pending: $mp[0], max_pending_at_ms: (if $mp[1] > 0 then $mp[1] - $t0 else null end)},
      sink: ($s | {received, by_event, duplicates, bad_signature, missing_signature, bad_json,
                   answered_500, requests, distinct_sessions, distinct_clients,
                   disconnect_before_connect, out_of_order, close_codes, sequences,
                   connections, max_open_connections, cpu_ms, event_loop_delay_ms}),
      missing_by_event: ($exp | with_entries(.value -= ($s.by_event[.key] // 0))),
      lost: ($total - $s.received),
      lost_because: {dropped_queue_full: $full, dropped_expired: $ex, pending_when_stopped: $pend,
                     never_generated: ($total - $q - $full),
                     delivered_not_received: ($d - $s.received)},
      storm_burst: {events: $storm_n, secs: $storm_secs,
                    events_per_sec: (if ($storm_secs // 0) > 0 then $storm_n / $storm_secs else null end)},
      offline_burst: {events: ($s.by_event.offline // 0), secs: $off_secs,
                      events_per_sec: (if ($off_secs // 0) > 0 then ($s.by_event.offline // 0) / $off_secs else null end)},
      peak_per_100ms: $s.peak_per_100ms,
      peak_at_ms: (if $s.peak_at_ms > 0 then $s.peak_at_ms - $t0 else null end),
      busy_bins: $s.busy_bins,
      latency_ms: $s.latency_ms,
      latency_ms_by_event: $s.latency_ms_by_event,
      per_sec: ([range(0; $s.per_100ms | length)] | group_by((($s.first_bin_ms + . * 100) - $t0) / 1000 | floor)
                | map({sec: ((($s.first_bin_ms + .[0] * 100) - $t0) / 1000 | floor), events: (map($s.per_100ms[.]) | add)})),
      storm_start_ms: $t0, storm_secs: (($t1 - $t0) / 1000), drained_secs: (($t2 - $t0) / 1000)
    }' >"$dir/webhooks.json"
  jq -r '
    def n: if . == null then "-" elif type == "number" then (. * 10 | round / 10 | tostring) else tostring end;
    "== webhooks during a reconnect storm ==",
    "clients \(.clients), back in wave 2 \(.reconnected) after \(.storm_all_back_secs | n) s (offline_grace \(.offline_grace_secs) s)",
    "expected \(.expected.total): \(.expected | del(.total) | to_entries | map("\(.key) \(.value)") | join(", "))",
    "server: generated \(.server.generated), queued \(.server.queued), delivered \(.server.delivered), dropped queue_full \(.server.dropped_queue_full) expired \(.server.dropped_expired), failed attempts \(.server.failed_attempts), pending \(.server.pending); deepest queue \(.server.max_pending) at \(.server.max_pending_at_ms | n) ms",
    "sink: received \(.sink.received) (\(.sink.by_event | to_entries | map("\(.key) \(.value)") | join(", "))), duplicates \(.sink.duplicates), bad / missing signatures \(.sink.bad_signature) / \(.sink.missing_signature), refused on purpose \(.sink.answered_500), sessions \(.sink.distinct_sessions), client ids \(.sink.distinct_clients)",
    "sink: out of order \(.sink.out_of_order), connections from tether \(.sink.connections) (at most \(.sink.max_open_connections) open), CPU \(.sink.cpu_ms.user + .sink.cpu_ms.system | n) ms, event loop delay p99 \(.sink.event_loop_delay_ms.p99 | n) ms max \(.sink.event_loop_delay_ms.max | n) ms",
    "LOST \(.lost) (missing: \(.missing_by_event | to_entries | map("\(.key) \(.value)") | join(", "))); of the expected: \(.lost_because | to_entries | map("\(.key) \(.value)") | join(", "))",
    "storm burst: \(.storm_burst.events) events in \(.storm_burst.secs | n) s = \(.storm_burst.events_per_sec | n)/s; offline burst: \(.offline_burst.events) in \(.offline_burst.secs | n) s = \(.offline_burst.events_per_sec | n)/s",
    "peak \(.peak_per_100ms) per 100 ms at \(.peak_at_ms | n) ms after the storm started",
    "latency (arrival - timestamp, ms): p50 \(.latency_ms.p50) p90 \(.latency_ms.p90) p99 \(.latency_ms.p99) max \(.latency_ms.max)",
    (.latency_ms_by_event | to_entries[] | "  \(.key): p50 \(.value.p50) p99 \(.value.p99) max \(.value.max)"),
    "sequences per client id:",
    (.sink.sequences | to_entries | sort_by(-.value)[] | "  \(.value)  \(.key)"),
    "arrivals per second after the storm started:",
    (.per_sec[] | "  \(.sec) s: \(.events)")
  ' "$dir/webhooks.json"
}

# A redis-server on 127.0.0.1:$REDIS_PORT (16379), no persistence, its files in a temp dir;
# on the servers' CPU with PIN=1. Sets REDIS_PID; `stop_redis` (and `bench_cleanup`) stop it.
REDIS_PID="" REDIS_DIR=""
REDIS_PORT=${REDIS_PORT:-16379}
start_redis() {
  REDIS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/tether-bench-redis.XXXXXX")
  "${PIN_SERVER[@]}" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$REDIS_DIR" --maxclients 10000 >"$OUT/redis.log" 2>&1 &
  REDIS_PID=$!
  for _ in $(seq 1 100); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "redis-server did not start" >&2; exit 1
}
stop_redis() {
  if [[ -n $REDIS_PID ]]; then kill -KILL "$REDIS_PID" 2>/dev/null || true; wait "$REDIS_PID" 2>/dev/null || true; fi
  if [[ -n $REDIS_DIR ]]; then rm -rf "$REDIS_DIR"; fi
  REDIS_PID="" REDIS_DIR=""
}
redis_info() { redis-cli -p "$REDIS_PORT" info "$1" | tr -d '\r' | awk -F: -v k="$2" '$1 == k { print $2 }'; }

# Stops the servers, helpers and Redis and removes the secret (for `trap bench_cleanup EXIT`).
bench_cleanup() {
  stop_servers
  stop_helpers
  stop_redis
  if [[ -n $SECRET_FILE ]]; then rm -f "$SECRET_FILE"; fi
}

# bench NAME SCENARIO [args...]: runs `tether-bench`, JSON to $OUT/NAME.json, summary to NAME.txt.
bench() {
  local name=$1; shift
  echo "== $name: tether-bench $*" >&2
  "${PIN_BENCH[@]}" target/release/tether-bench "$@" --json "$OUT/$name.json" | tee "$OUT/$name.txt"
}

# src N: the first loopback source address of a scenario (127.0.N.1; its workers count up from
# there). Each scenario gets its own addresses so it never meets the TIME_WAIT ports of the last.
src() { echo "127.0.$1.1"; }

# Lets the kernel settle between scenarios (TIME_WAIT sockets, server cleanup).
pause() { sleep "${PAUSE_SECS:-5}"; }

# The machine, for the reports.
machine_md() {
  echo "- date (UTC): $(date -u '+%Y-%m-%d %H:%M')"
  echo "- CPU: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
  echo "- memory: $(free -g | awk '/Mem:/{print $2}') GiB; kernel $(uname -r)"
  echo "- $(rustc --version); node $(node --version 2>/dev/null || echo 'not installed')"
  echo "- descriptor limit per process: $(ulimit -n); ephemeral ports: $(tr '\t' '-' </proc/sys/net/ipv4/ip_local_port_range)"
  echo "- PIN=${PIN:-0} (1: servers on CPU 1, tether-bench on CPU 0)"
}

# jq helper: prints field $2 of JSON file $1 (or "-" when missing or null).
field() { jq -r "($2) // \"-\"" "$1" 2>/dev/null || echo "-"; }

# round X [digits]
round() { awk -v x="$1" -v d="${2:-0}" 'BEGIN { if (x == "-" || x == "") print "-"; else printf "%.*f\n", d, x }'; }

# The figures put in the markdown tables: "label|file|jq expression|decimals".
METRICS=(
  "hold: connections established|hold|.established|0"
  "hold: connect rate (conn/s)|hold|.connect.connect_rate|0"
  "hold: handshake p50 (ms)|hold|.connect.handshake_ms.p50|1"
  "hold: handshake p99 (ms)|hold|.connect.handshake_ms.p99|1"
  "hold: unexpected closes (false evictions)|hold|.unexpected_closes|0"
  "hold: heartbeats sent / acks|hold|\"\\(.heartbeats_sent) / \\(.acks_received)\"|"
  "hold: server RSS after connect (MiB)|hold|(.server.rss_connected_kib // null) / 1024|1"
  "hold: server RSS per connection (bytes)|hold|.server.rss_per_conn_bytes|0"
  "hold: server CPU during hold (%)|hold|.server.cpu_percent_hold|2"
  "fanout: clients|fanout|.established|0"
  "fanout: expected / received deliveries|fanout|\"\\(.expected) / \\(.received)\"|"
  "fanout: lost|fanout|.lost|0"
  "fanout: duplicated / out of order|fanout|\"\\(.duplicated) / \\(.out_of_order)\"|"
  "fanout: latency p50 (ms)|fanout|.latency_ms.p50|1"
  "fanout: latency p90 (ms)|fanout|.latency_ms.p90|1"
  "fanout: latency p99 (ms)|fanout|.latency_ms.p99|1"
  "fanout: latency p99.9 (ms)|fanout|.latency_ms.p999|1"
  "fanout: latency max (ms)|fanout|.latency_ms.max|1"
  "fanout: deliveries/s|fanout|.deliveries_per_sec|0"
  "fanout: broadcast API call p50 (ms)|fanout|.api_ms.p50|1"
  "fanout: server CPU seconds|fanout|.server.cpu_secs|2"
  "evict: silent clients ended / total|evict|\"\\(.evicted) / \\(.silent)\"|"
  "evict: how they were ended|evict|.close_codes \| to_entries \| map(\"\\(.key)=\\(.value)\") \| join(\" \")|"
  "evict: advertised timeout + reap (ms)|evict|.limit_ms|0"
  "evict: time to eviction min (ms)|evict|.evict_ms.min|0"
  "evict: time to eviction p50 (ms)|evict|.evict_ms.p50|0"
  "evict: time to eviction p99 (ms)|evict|.evict_ms.p99|0"
  "evict: time to eviction max (ms)|evict|.evict_ms.max|0"
  "evict: later than timeout + reap|evict|.late|0"
  "evict: healthy clients wrongly closed|evict|.healthy_wrongly_closed|0"
  "storm: wave 1 accept rate (conn/s)|storm|.wave1.connect_rate|0"
  "storm: wave 2 accept rate (conn/s)|storm|.wave2.connect_rate|0"
  "storm: wave 2 failed attempts|storm|.wave2.failed_attempts|0"
  "storm: wave 2 failures by kind|storm|.wave2.failures \| to_entries \| map(\"\\(.key)=\\(.value)\") \| join(\" \")|"
  "storm: all back after the drop (s)|storm|.all_back_secs|2"
  "batch: single pushes/s (one keep-alive connection)|batch|.single_pushes_per_s|0"
  "batch: batched pushes/s (one POST /api/v1/batch)|batch|.batch_pushes_per_s|0"
  "batch: batch / single|batch|.ratio|1"
  "auth: connections established (token each)|auth|.established|0"
  "auth: connect rate (conn/s)|auth|.connect.connect_rate|0"
  "auth: handshake p50 (ms)|auth|.connect.handshake_ms.p50|1"
  "auth: handshake p99 (ms)|auth|.connect.handshake_ms.p99|1"
  "auth: failures by kind|auth|.connect.failures \| to_entries \| map(\"\\(.key)=\\(.value)\") \| join(\" \")|"
  "auth: unexpected closes|auth|.unexpected_closes|0"
  "auth: server RSS per connection (bytes)|auth|.server.rss_per_conn_bytes|0"
  "connect-load: held / new per phase|connect-load|\"\\(.held) / \\(.new_clients_per_phase)\"|"
  "connect-load: idle handshake p50 (ms)|connect-load|.idle.handshake_ms.p50|1"
  "connect-load: idle handshake p99 (ms)|connect-load|.idle.handshake_ms.p99|1"
  "connect-load: idle handshake max (ms)|connect-load|.idle.handshake_ms.max|1"
  "connect-load: loaded handshake p50 (ms)|connect-load|.loaded.handshake_ms.p50|1"
  "connect-load: loaded handshake p99 (ms)|connect-load|.loaded.handshake_ms.p99|1"
  "connect-load: loaded handshake max (ms)|connect-load|.loaded.handshake_ms.max|1"
  "connect-load: p99 loaded / idle|connect-load|.handshake_p99_loaded_over_idle|2"
  "connect-load: new clients failed idle / loaded|connect-load|\"\\(.idle.failed) / \\(.loaded.failed)\"|"
  "connect-load: broadcasts during the loaded phase|connect-load|.loaded.broadcasts_during_phase|0"
  "webhooks: clients / back in wave 2|webhooks|\"\\(.clients) / \\(.reconnected)\"|"
  "webhooks: expected / received by the sink|webhooks|\"\\(.expected.total) / \\(.sink.received)\"|"
  "webhooks: lost|webhooks|.lost|0"
  "webhooks: dropped queue_full / expired|webhooks|\"\\(.server.dropped_queue_full) / \\(.server.dropped_expired)\"|"
  "webhooks: failed attempts (retried)|webhooks|.server.failed_attempts|0"
  "webhooks: duplicates / out of order / bad signatures|webhooks|\"\\(.sink.duplicates) / \\(.sink.out_of_order) / \\(.sink.bad_signature)\"|"
  "webhooks: storm burst (events/s)|webhooks|.storm_burst.events_per_sec|0"
  "webhooks: offline burst (events/s)|webhooks|.offline_burst.events_per_sec|0"
  "webhooks: peak per 100 ms|webhooks|.peak_per_100ms|0"
  "webhooks: deepest queue (pending)|webhooks|.server.max_pending|0"
  "webhooks: latency p50 / p99 (ms)|webhooks|\"\\(.latency_ms.p50) / \\(.latency_ms.p99)\"|"
)
# The migration runs of load-test.sh (ONLY=migrate): paced / all at once, clients that
# reconnect when closed / that honour the hint.
for m in migrate-paced migrate-unpaced migrate-paced-hint migrate-unpaced-hint; do
  METRICS+=(
    "$m: back on node B / connected to node A|$m|\"\\(.reconnected) / \\(.established)\"|"
    "$m: peak reconnects per 100 ms|$m|.peak_per_100ms|0"
    "$m: peak at (ms after go)|$m|.peak_at_ms|0"
    "$m: all back after go (s)|$m|.all_back_secs|2"
    "$m: go to reconnected p50 / p99 (ms)|$m|\"\\(.go_to_reconnected_ms.p50) / \\(.go_to_reconnected_ms.p99)\"|"
    "$m: wave 2 failed attempts / gave up|$m|\"\\(.failed_attempts) / \\(.gave_up)\"|"
    "$m: wave 2 failures by kind|$m|.failures \| to_entries \| map(\"\\(.key)=\\(.value)\") \| join(\" \")|"
    "$m: shutdown with a hint / just closed|$m|\"\\(.shutdown_with_hint) / \\(.just_closed)\"|"
  )
done

# metric DIR ENTRY: the formatted value of one METRICS entry from DIR's JSON files.
metric() {
  local dir=$1 entry=$2 label file expr digits v
  IFS='|' read -r label file expr digits <<<"${entry//\\|/$'\x1f'}"
  expr=${expr//$'\x1f'/|}
  v=$(field "$dir/$file.json" "$expr")
  if [[ -n $digits && $v != "-" ]]; then v=$(round "$v" "$digits"); fi
  [[ -z $v ]] && v="-"
  echo "$v"
}

# has_file DIR... ENTRY: whether any DIR holds the JSON file of a METRICS entry (scenarios that
# were not run get no rows).
has_file() {
  local entry=${*: -1} file d
  file=$(cut -d'|' -f2 <<<"$entry")
  for d in "${@:1:$#-1}"; do [[ -f $d/$file.json ]] && return 0; done
  return 1
}

# summary_md DIR: a one-column markdown table of DIR's figures.
summary_md() {
  local dir=$1 entry
  echo "| figure | tether |"
  echo "|---|---|"
  for entry in "${METRICS[@]}"; do
    has_file "$dir" "$entry" || continue
    echo "| ${entry%%|*} | $(metric "$dir" "$entry") |"
  done
}

# compare_md TETHER_DIR REF_DIR: side by side with the ratio tether / reference.
compare_md() {
  local t=$1 r=$2 entry a b ratio
  echo "| figure | tether | reference (Node ws) | tether / ref |"
  echo "|---|---|---|---|"
  for entry in "${METRICS[@]}"; do
    has_file "$t" "$r" "$entry" || continue
    a=$(metric "$t" "$entry"); b=$(metric "$r" "$entry")
    ratio=$(awk -v a="$a" -v b="$b" 'BEGIN { if (a ~ /^-?[0-9.]+$/ && b ~ /^-?[0-9.]+$/ && b + 0 != 0) printf "%.2f", a / b; else print "-" }')
    echo "| ${entry%%|*} | $a | $b | $ratio |"
  done
}
