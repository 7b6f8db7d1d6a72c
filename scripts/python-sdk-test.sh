#!/usr/bin/env bash
# The Python SDK (clients/python, package tether-push) against a live tether: pytest starts the
# debug binary on 127.0.0.1:0 with an api_key (one node, and two nodes on a real redis-server)
# and watches deliveries with WebSocket clients. The venv lives under target/ (gitignored).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/python-sdk-venv
echo "== python SDK (tether-push): venv, pip install -e clients/python[test]"
cargo build --quiet --bin tether
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -e 'clients/python[test]'
# The FastAPI example is not run (FastAPI is not a test dependency), but it must compile.
"$venv/bin/python" -m py_compile clients/python/examples/fastapi_app.py
echo "== python SDK (mypy --strict on the package and its tests)"
(cd clients/python && "../../$venv/bin/mypy" --cache-dir ../../target/mypy-cache src tests)
echo "== python SDK (pytest against a live tether)"
TETHER_BIN="$PWD/target/debug/tether" "$venv/bin/python" -m pytest clients/python/tests -q \
  -p no:cacheprovider
