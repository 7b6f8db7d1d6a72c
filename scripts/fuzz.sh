#!/usr/bin/env bash
# Bounded fuzzing of tether's untrusted inputs (the fuzz/ crate, outside the workspace): client
# frames, upgrade requests, tokens, configuration. Each target runs FUZZ_SECONDS (default 20)
# with libFuzzer; the corpus grows in target/fuzz-corpus/<name>, seeded from fuzz/seeds/<name>.
# Exits non-zero when a target crashes or does not build; a crash's input is kept in
# target/fuzz-artifacts/<name>/ and replays with `cargo fuzz run <name> <file> <same flags>`.
#
# It needs only a stable toolchain: with `--sanitizer none` cargo-fuzz passes no -Z flag.
# Rust's safety checks plus debug assertions (overflow checks) are what catch bugs here; set
# FUZZ_SANITIZER=address to add ASan, which needs nightly (or RUSTC_BOOTSTRAP=1 on stable).
#
#   FUZZ_SECONDS=60 bash scripts/fuzz.sh            # all targets, 60 s each
#   bash scripts/fuzz.sh envelope token             # some targets
set -uo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-20}"
rss_mb="${FUZZ_RSS_MB:-1024}"
sanitizer="${FUZZ_SANITIZER:-none}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(envelope upgrade token config cluster_wire)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked || exit 1
fi
if [ "$sanitizer" != none ] && ! rustc --version | grep -q nightly; then
    # Sanitizers are still -Z flags; stable accepts them only with this.
    export RUSTC_BOOTSTRAP=1
fi

# One target dir for every target: dependencies are built once. It lives under /target, so
# nothing of it is committed.
flags=(--sanitizer "$sanitizer" --debug-assertions --target-dir target/fuzz)
passed=0
failed=0
mkdir -p target/fuzz-logs
for name in "${targets[@]}"; do
    corpus="target/fuzz-corpus/$name"
    artifacts="target/fuzz-artifacts/$name"
    log="target/fuzz-logs/$name.log"
    mkdir -p "$corpus" "$artifacts"
    start=$(date +%s)
    if ! cargo fuzz build "${flags[@]}" "$name" >"$log" 2>&1; then
        tail -n 20 "$log"
        echo "fuzz: $name: FAILED to build (log: $log)"
        failed=$((failed + 1))
        continue
    fi
    built=$(date +%s)
    # The seed dir comes second: libFuzzer reads both and writes new inputs only to the first.
    cargo fuzz run "${flags[@]}" "$name" "$corpus" "fuzz/seeds/$name" -- \
        -max_total_time="$seconds" -rss_limit_mb="$rss_mb" -timeout=10 -max_len=16384 \
        -print_final_stats=1 -artifact_prefix="$artifacts/" >>"$log" 2>&1
    rc=$?
    ran=$(($(date +%s) - built))
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*$')
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -n 1)
    crash=$(grep -o 'Test unit written to [^ ]*' "$log" | tail -n 1 | sed 's/Test unit written to //')
    summary="${runs:-?} runs in ${ran}s (build $((built - start))s), ${cov:-no coverage line}"
    if [ "$rc" -eq 0 ]; then
        echo "fuzz: $name: ok, $summary"
        passed=$((passed + 1))
    else
        grep -m 1 -A 8 "panicked at\|ERROR: libFuzzer" "$log"
        echo "fuzz: $name: CRASH (exit $rc), $summary, input: ${crash:-none written}, log: $log"
        failed=$((failed + 1))
    fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
