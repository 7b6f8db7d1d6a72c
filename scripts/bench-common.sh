#!/usr/bin/env bash
# Helpers shared by scripts/load-test.sh and scripts/compare.sh (sourced, not run).
# Everything stays on loopback. Servers started here are stopped by `stop_servers` (trap it).

SERVER_PIDS=()
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

# start_tether PORT [flags...]: starts target/release/tether in the background; sets SERVER_PID.
start_tether() {
  local port=$1; shift
  RUST_LOG=${SERVER_LOG:-warn} "${PIN_SERVER[@]}" target/release/tether --listen "127.0.0.1:$port" --demo-page false "$@" \
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
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  sleep 0.2
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do
    if ! kill -0 "$pid" 2>/dev/null; then wait "$pid" 2>/dev/null || true; return 0; fi
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
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

# Stops the servers and removes the secret (for `trap bench_cleanup EXIT`).
bench_cleanup() {
  stop_servers
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
