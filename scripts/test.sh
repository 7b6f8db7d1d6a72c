#!/usr/bin/env bash
# Every test tether has: formatting, lints, the Rust unit and integration tests (real servers on
# loopback, real nginx and Chromium where a feature involves them), the browser client's tests and
# types, and the Python SDK against a live tether.
# On a fresh machine it first installs what those tests need (see scripts/install-test-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# A one-shot full run gains nothing from incremental caches, which cost ~2 GB of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# Each stage's wall time is printed when the next begins and at the end, so a run that nears
# the 20-minute budget shows where the time went.
stage_name="" stage_start=$SECONDS
stage() {
  if [ -n "$stage_name" ]; then echo "-- $stage_name took $((SECONDS - stage_start)) s (total $SECONDS s)"; fi
  stage_name="$1" stage_start=$SECONDS
  if [ -n "$1" ]; then echo "== $1"; fi
}
trap 'stage ""' EXIT

stage "install test dependencies"
bash scripts/install-test-deps.sh

stage "cargo fmt --check"
cargo fmt --all -- --check
stage "module layering (no import cycle between the library's modules)"
python3 scripts/module-cycles.py
stage "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
stage "cargo test (unit, integration, examples; the server and tether-bench)"
cargo test --workspace
stage "autobahn (RFC 6455 conformance, chapters 1-10; RFC 7692 chapters 12-13; against the echo example)"
# Four deflate cases at once: they are CPU-bound on this 2-core size, 120 s against 140 s with two.
AUTOBAHN_DEFLATE_PARALLELISM=${AUTOBAHN_DEFLATE_PARALLELISM:-4} bash scripts/autobahn.sh
stage "fuzz (cargo-fuzz on the stable toolchain, bounded: FUZZ_SECONDS per target)"
# 6 s a target (0.3-1.0 million inputs each); the build (~4 min, instrumented release) is most
# of this stage. Longer runs: FUZZ_SECONDS=60 bash scripts/fuzz.sh.
FUZZ_SECONDS=${FUZZ_SECONDS:-6} bash scripts/fuzz.sh
stage "browser client (node --test; the npm package's types with tsc --strict)"
bash scripts/js-client-test.sh
stage "python SDK (pytest against a live tether and a two-node cluster)"
bash scripts/python-sdk-test.sh
stage "schemathesis (every HTTP API operation fuzzed against docs/openapi.json)"
bash scripts/schemathesis.sh
stage "Debian package (cargo-deb from the release build; dpkg -i, run, purge)"
bash scripts/deb-test.sh
stage "cargo package --workspace (the crates as crates.io would get them, built from the package)"
# --allow-dirty: a run on a working tree with uncommitted edits checks those edits too.
# Both crates are packaged; the server's package is also built from its tarball (16 s), the
# bench's is not (its dev-dependencies took 1.5 min of a 20-minute budget, for a crate nobody
# installs from crates.io).
cargo package --workspace --allow-dirty --no-verify
cargo package -p tether --allow-dirty
