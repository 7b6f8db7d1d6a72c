#!/usr/bin/env bash
# RFC 6455 conformance: runs the Autobahn TestSuite's fuzzing-client cases against the echo example
# on loopback, with kosoku (PyPI), which drives Autobahn's own case files on Python 3.10+. Two
# passes, each against a fresh echo server:
#   1. chapters 1-10 (plain WebSocket);
#   2. chapters 12 and 13 (permessage-deflate, RFC 7692) with TETHER_COMPRESSION=true and
#      TETHER_COMPRESSION_MIN_SIZE=0: the cases expect every echoed message compressed (kosoku
#      hands an uncompressed text echo to the case as a str, which its hash check rejects).
#      The 128 KiB cases of the binary and HTML data sets (12.2-12.5 .10, .15-.18) are left out
#      by default: they take half the pass's time and add nothing the JSON ones (12.1 and 13.x,
#      all sizes) do not. AUTOBAHN_DEFLATE_EXCLUDE="" runs all 216 cases.
# A pass passes when every case is OK, NON-STRICT or INFORMATIONAL (close verdict OK or
# INFORMATIONAL); each prints one line per case that is not plain OK, the NON-STRICT ids, and
# `autobahn: N passed, M failed`. Reports (JSON + HTML per case, and index.json/index.html) go to
# target/autobahn/reports and target/autobahn/reports-deflate.
#
# Environment:
#   ECHO_BIN                 echo server binary to test (default: build target/release/examples/echo)
#   AUTOBAHN_CASES           pass 1: space-separated case ids or globs (default: all, e.g. "1.* 9.7.1")
#   AUTOBAHN_EXCLUDE         pass 1: ids or globs to skip (default: "12.* 13.*")
#   AUTOBAHN_DEFLATE         0 skips pass 2 (default: 1)
#   AUTOBAHN_DEFLATE_CASES   pass 2: ids or globs (default: "12.* 13.*")
#   AUTOBAHN_DEFLATE_EXCLUDE pass 2: ids or globs to skip (default: the 20 cases named above)
#   AUTOBAHN_PATH            WebSocket path and query on the server (default: /ws)
#   AUTOBAHN_PARALLELISM     pass 1: cases kosoku runs at once (default: 1)
#   AUTOBAHN_DEFLATE_PARALLELISM  pass 2: the same (default: 2; its cases wait on deflate and
#                            on the round trip in turn, so two at once take half the time)
#   AUTOBAHN_TIMEOUT         seconds for each kosoku run (default: 600)
set -euo pipefail
cd "$(dirname "$0")/.."

KOSOKU_VERSION=0.1.0
target_dir=${CARGO_TARGET_DIR:-target}
venv="$target_dir/autobahn-venv"
out="$target_dir/autobahn"
cases=${AUTOBAHN_CASES:-}
exclude=${AUTOBAHN_EXCLUDE-12.* 13.*}
deflate=${AUTOBAHN_DEFLATE:-1}
deflate_cases=${AUTOBAHN_DEFLATE_CASES:-12.* 13.*}
heavy=""
for set_ in 2 3 4 5; do
  for size in 10 15 16 17 18; do heavy+="12.$set_.$size "; done
done
deflate_exclude=${AUTOBAHN_DEFLATE_EXCLUDE-$heavy}
ws_path=${AUTOBAHN_PATH:-/ws}
parallelism=${AUTOBAHN_PARALLELISM:-1}
deflate_parallelism=${AUTOBAHN_DEFLATE_PARALLELISM:-2}
run_timeout=${AUTOBAHN_TIMEOUT:-600}

echo_pid=""
kosoku_pid=""
stop_all() {
  local pid i
  for pid in "$kosoku_pid" "$echo_pid"; do
    [ -n "$pid" ] || continue
    kill "$pid" 2>/dev/null || continue
    for i in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  kosoku_pid=""
  echo_pid=""
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# kosoku, pinned, in its own venv (target/ is gitignored).
if ! "$venv/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("kosoku") != sys.argv[1])' \
  "$KOSOKU_VERSION" 2>/dev/null; then
  echo "== installing kosoku $KOSOKU_VERSION into $venv"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || { echo "kosoku needs Python 3.10+, have $(python3 --version)" >&2; exit 1; }
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "kosoku==$KOSOKU_VERSION"
fi

if [ -z "${ECHO_BIN:-}" ]; then
  echo "== cargo build --release --example echo"
  cargo build --release --example echo
  ECHO_BIN="$target_dir/release/examples/echo"
fi
[ -x "$ECHO_BIN" ] || { echo "no echo binary at $ECHO_BIN" >&2; exit 1; }

mkdir -p "$out"

# One pass: a fresh echo server with the environment given as arguments (NAME=VALUE...), kosoku
# on the cases, the summary. Returns 0 when every case passed.
run_pass() {
  local name=$1 reports=$2 pass_cases=$3 pass_exclude=$4 pass_parallelism=$5
  shift 5
  rm -rf "$reports"
  local port ready="" c
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  env "$@" RUST_LOG="${RUST_LOG:-warn}" "$ECHO_BIN" "127.0.0.1:$port" >"$out/echo-$name.log" 2>&1 &
  echo_pid=$!
  for _ in $(seq 100); do
    kill -0 "$echo_pid" 2>/dev/null || break
    if python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.5).close()' \
      "$port" 2>/dev/null; then
      ready=1
      break
    fi
    sleep 0.1
  done
  if [ -z "$ready" ]; then
    echo "echo server ($ECHO_BIN) did not accept on 127.0.0.1:$port; its log:" >&2
    tail -20 "$out/echo-$name.log" >&2
    return 1
  fi

  local args=(-p "$pass_parallelism" -o "$reports")
  set -f # the ids are kosoku globs, not file names
  for c in $pass_cases; do args+=(-i "$c"); done
  for c in $pass_exclude; do args+=(-x "$c"); done
  set +f
  local url="ws://127.0.0.1:$port$ws_path" start elapsed kosoku_rc=0 report_rc=0
  echo "== autobahn $name (kosoku $KOSOKU_VERSION) against $url${*:+ with $*}"
  echo "   cases: ${pass_cases:-all}; excluded: ${pass_exclude:-none}"
  start=$(date +%s)
  # kosoku exits 1 when a case fails (after writing the reports), 0 when all pass. Its own failure
  # list goes to kosoku-NAME.log; the summary below comes from the reports.
  timeout --kill-after=10 "$run_timeout" "$venv/bin/kosoku" "${args[@]}" "$url" \
    >"$out/kosoku-$name.log" 2>&1 &
  kosoku_pid=$!
  wait "$kosoku_pid" || kosoku_rc=$?
  kosoku_pid=""
  elapsed=$(($(date +%s) - start))
  stop_all

  case "$kosoku_rc" in
    0 | 1) ;;
    124 | 137) echo "autobahn: kosoku timed out after ${run_timeout}s (it writes its reports only at the end)" ;;
    *)
      echo "autobahn: kosoku exited $kosoku_rc; its output:"
      tail -20 "$out/kosoku-$name.log"
      ;;
  esac
  "$venv/bin/python" scripts/autobahn_report.py "$reports" || report_rc=$?
  echo "autobahn: $name took ${elapsed}s; reports in $reports/, kosoku output in $out/kosoku-$name.log"
  if [ "$kosoku_rc" -gt 1 ]; then return 1; fi
  if [ "$report_rc" -eq 0 ] && [ "$kosoku_rc" -ne 0 ]; then
    echo "autobahn: kosoku reported a failure the reports do not show; see $out/kosoku-$name.log"
    return 1
  fi
  return "$report_rc"
}

rc=0
run_pass plain "$out/reports" "$cases" "$exclude" "$parallelism" || rc=1
if [ "$deflate" != 0 ]; then
  # Heartbeat pings are off in the echo example: an unsolicited Ping ends an Autobahn case.
  run_pass deflate "$out/reports-deflate" "$deflate_cases" "$deflate_exclude" "$deflate_parallelism" \
    TETHER_COMPRESSION=true TETHER_COMPRESSION_MIN_SIZE=0 || rc=1
fi
exit "$rc"
