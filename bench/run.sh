#!/usr/bin/env bash
# The benchmark command: builds every binary in release mode, then measures
# and writes BENCHMARKS.md, bench/results/latest.json and the plots.
# About 5 minutes from a clean clone on 2 cores (most of it compiling).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bins \
  -p purposegate-server -p purposegate-sidecar -p purposegate-demo-service -p purposegate-bench
exec "${CARGO_TARGET_DIR:-target}/release/purposegate-bench" "$@"
