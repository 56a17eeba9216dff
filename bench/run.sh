#!/usr/bin/env bash
# The full benchmark: builds release binaries, runs every scenario against
# rsync and Syncthing on this machine and writes docs/BENCHMARKS.md.
# Extra arguments go to the harness, e.g. `bench/run.sh --runs 5` or, for one
# scenario, `bench/run.sh` is not needed:
#   cargo run --release -p filesync-bench -- small-edit --edit-size 256MiB
set -euo pipefail
cd "$(dirname "$0")/.."

bench/setup.sh
# Measure the binaries that ship, built as the Dockerfile builds them (the
# client in its own invocation: ARCHITECTURE.md, "Cargo features and what ships"), then the harness.
cargo build --release --locked --bins -p filesync-http-api -p filesync-tcp-sync -p filesync-server --features filesync-server/mysql
cargo build --release --locked --bins -p filesync-client
cargo build --release --locked -p filesync-bench
start=$(date +%s)
target/release/filesync-bench all --json target/bench-results.json "$@"
echo "benchmark run took $(( $(date +%s) - start )) s"
