#!/usr/bin/env bash
# The benchmark command: builds every binary in release mode, then measures
# and writes BENCHMARKS.md, bench/results/latest.json and the plots.
# About 8 minutes from a clean clone on 2 cores (most of it compiling).
set -euo pipefail
cd "$(dirname "$0")/.."
# h2load, the load generator of the "Under load" section (Debian's
# nghttp2-client), and valgrind, whose callgrind counts the instructions.
missing=""
command -v h2load >/dev/null 2>&1 || missing="$missing nghttp2-client"
command -v valgrind >/dev/null 2>&1 || missing="$missing valgrind"
if [ -n "$missing" ]; then
  as_root=""
  if [ "$(id -u)" != 0 ]; then as_root="sudo"; fi
  $as_root apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
cargo build --release --locked --bins \
  -p purposegate-server -p purposegate-sidecar -p purposegate-demo-service -p purposegate-bench
exec "${CARGO_TARGET_DIR:-target}/release/purposegate-bench" "$@"
