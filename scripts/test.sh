#!/usr/bin/env bash
# Every test tether has: formatting, lints, the Rust unit and integration tests (real servers on
# loopback, real nginx and Chromium where a feature involves them), the browser client's tests and
# types, and the Python SDK against a live tether.
# On a fresh machine it first installs what those tests need (see scripts/install-test-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# A one-shot full run gains nothing from incremental caches, which cost ~2 GB of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

bash scripts/install-test-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== module layering (no import cycle between the library's modules)"
python3 scripts/module-cycles.py
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test (unit, integration, examples; the server and tether-bench)"
cargo test --workspace
echo "== autobahn (RFC 6455 conformance, chapters 1-10; RFC 7692 chapters 12-13; against the echo example)"
bash scripts/autobahn.sh
echo "== fuzz (cargo-fuzz on the stable toolchain, bounded: FUZZ_SECONDS per target)"
FUZZ_SECONDS=${FUZZ_SECONDS:-10} bash scripts/fuzz.sh
echo "== browser client (node --test; the npm package's types with tsc --strict)"
bash scripts/js-client-test.sh
echo "== python SDK (pytest against a live tether and a two-node cluster)"
bash scripts/python-sdk-test.sh
echo "== schemathesis (every HTTP API operation fuzzed against docs/openapi.json)"
bash scripts/schemathesis.sh
echo "== Debian package (cargo-deb from the release build; dpkg -i, run, purge)"
bash scripts/deb-test.sh
echo "== cargo package --workspace (the crates as crates.io would get them, built from the package)"
# --allow-dirty: a run on a working tree with uncommitted edits checks those edits too.
# Both crates are packaged; the server's package is also built from its tarball (16 s), the
# bench's is not (its dev-dependencies took 1.5 min of a 20-minute budget, for a crate nobody
# installs from crates.io).
cargo package --workspace --allow-dirty --no-verify
cargo package -p tether --allow-dirty
