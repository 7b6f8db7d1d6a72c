#!/usr/bin/env bash
# RFC 6455 conformance: runs the Autobahn TestSuite's fuzzing-client cases (chapters 1-10; 12 and
# 13 need permessage-deflate) against the echo example on loopback, with kosoku (PyPI), which
# drives Autobahn's own case files on Python 3.10+. Passes when every case is OK, NON-STRICT or
# INFORMATIONAL (close verdict OK or INFORMATIONAL); prints one line per case that is not plain
# OK, the NON-STRICT ids, and `autobahn: N passed, M failed`. Reports (JSON + HTML per case, and
# index.json/index.html) go to target/autobahn/reports.
#
# Environment:
#   ECHO_BIN              echo server binary to test (default: build target/release/examples/echo)
#   AUTOBAHN_CASES        space-separated case ids or globs to run (default: all, e.g. "1.* 9.7.1")
#   AUTOBAHN_EXCLUDE      space-separated case ids or globs to skip (default: "12.* 13.*")
#   AUTOBAHN_PATH         WebSocket path and query on the server (default: /ws)
#   AUTOBAHN_PARALLELISM  cases kosoku runs at once (default: 1)
#   AUTOBAHN_TIMEOUT      seconds for the whole kosoku run (default: 600)
set -euo pipefail
cd "$(dirname "$0")/.."

KOSOKU_VERSION=0.1.0
target_dir=${CARGO_TARGET_DIR:-target}
venv="$target_dir/autobahn-venv"
out="$target_dir/autobahn"
reports="$out/reports"
cases=${AUTOBAHN_CASES:-}
exclude=${AUTOBAHN_EXCLUDE-12.* 13.*}
ws_path=${AUTOBAHN_PATH:-/ws}
parallelism=${AUTOBAHN_PARALLELISM:-1}
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

rm -rf "$reports"
mkdir -p "$out"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
RUST_LOG=${RUST_LOG:-warn} "$ECHO_BIN" "127.0.0.1:$port" >"$out/echo.log" 2>&1 &
echo_pid=$!
ready=""
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
  tail -20 "$out/echo.log" >&2
  exit 1
fi

args=(-p "$parallelism" -o "$reports")
set -f # the ids are kosoku globs, not file names
for c in $cases; do args+=(-i "$c"); done
for c in $exclude; do args+=(-x "$c"); done
set +f
url="ws://127.0.0.1:$port$ws_path"
echo "== autobahn (kosoku $KOSOKU_VERSION) against $url, cases: ${cases:-all}, excluded: ${exclude:-none}"
start=$(date +%s)
# kosoku exits 1 when a case fails (after writing the reports), 0 when all pass. Its own failure
# list goes to kosoku.log; the summary below comes from the reports.
timeout --kill-after=10 "$run_timeout" "$venv/bin/kosoku" "${args[@]}" "$url" >"$out/kosoku.log" 2>&1 &
kosoku_pid=$!
kosoku_rc=0
wait "$kosoku_pid" || kosoku_rc=$?
kosoku_pid=""
elapsed=$(($(date +%s) - start))
stop_all

case "$kosoku_rc" in
  0 | 1) ;;
  124 | 137) echo "autobahn: kosoku timed out after ${run_timeout}s (it writes its reports only at the end)" ;;
  *)
    echo "autobahn: kosoku exited $kosoku_rc; its output:"
    tail -20 "$out/kosoku.log"
    ;;
esac
report_rc=0
"$venv/bin/python" scripts/autobahn_report.py "$reports" || report_rc=$?
echo "autobahn: took ${elapsed}s; reports in $reports/, kosoku output in $out/kosoku.log"
if [ "$kosoku_rc" -gt 1 ]; then exit 1; fi
if [ "$report_rc" -eq 0 ] && [ "$kosoku_rc" -ne 0 ]; then
  echo "autobahn: kosoku reported a failure the reports do not show; see $out/kosoku.log"
  exit 1
fi
exit "$report_rc"
