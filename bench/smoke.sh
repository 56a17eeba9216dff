#!/usr/bin/env bash
# Smoke run of the benchmark harness: every scenario at tiny sizes on a debug
# build. It checks that the harness works end to end, not speed, and fails if
# any figure fails. Syncthing is skipped (and the run says so) if it is not
# installed and cannot be.
set -euo pipefail
cd "$(dirname "$0")/.."

bench/setup.sh || echo "bench/setup.sh could not install the peers: their figures will say \"not available\"" >&2
cargo build --workspace --bins --locked
out=target/bench-smoke
mkdir -p "$out"
timeout 300 target/debug/filesync-bench all --smoke --out "$out/BENCHMARKS.md" --json "$out/results.json"
echo "smoke report: $out/BENCHMARKS.md"
