#!/usr/bin/env bash
# Fuzzes purposegate with cargo-fuzz (libFuzzer) on the stable toolchain
# (`--sanitizer none`: Rust's own bounds and overflow checks stand in for
# ASan, which needs nightly). The seed corpus is made from the test files.
#
#   fuzz/run.sh                   every target, FUZZ_SECONDS (20) each: what .ci/run does
#   fuzz/run.sh policy 3600       one target for an hour
#
# A crash or a single input slower than 5 s (the policy loader: 1 s, on
# inputs up to 64 KiB) fails the run; libFuzzer saves
# the input under fuzz/artifacts/<target>/ (reproduce: cargo fuzz run -s none
# <target> <file>, from fuzz/).
set -euo pipefail
cd "$(dirname "$0")/.."

targets=${1:-"policy check_request request_text uri_sans request_path first_message"}
seconds=${2:-${FUZZ_SECONDS:-20}}

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi

cargo build --quiet -p purposegate-tests --bin fuzz-seeds
target/debug/fuzz-seeds . fuzz/corpus

cd fuzz
cargo fuzz build --sanitizer none
mkdir -p artifacts
for target in $targets; do
    echo "fuzz: $target for ${seconds}s"
    log="artifacts/$target.log"
    # The loader must stay near-linear: inputs up to 64 KiB, each within a
    # second, so a quadratic path shows up as a timeout.
    case "$target" in
        policy) limits="-timeout=1 -max_len=65536" ;;
        *) limits="-timeout=5" ;;
    esac
    # shellcheck disable=SC2086
    if ! cargo fuzz run --sanitizer none "$target" -- \
        -max_total_time="$seconds" $limits -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1; then
        tail -60 "$log"
        echo "fuzz: $target FAILED (input saved under fuzz/artifacts/$target/)"
        exit 1
    fi
    grep -E '^INFO: seed corpus|^stat::(number_of_executed_units|peak_rss_mb)' "$log" || true
done
