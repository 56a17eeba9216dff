#!/usr/bin/env bash
# Fuzz smoke (fuzz/README.md): builds every cargo-fuzz target and runs each for
# FUZZ_SECONDS (default 15). A crash, a failed assertion, a timeout or an
# out-of-memory in any target fails the run; libFuzzer saves the input under
# fuzz/artifacts/<target>/ and prints it.
#
# cargo fuzz needs nightly compiler flags (-Zsanitizer, sancov): on the stable
# toolchain they are unlocked with RUSTC_BOOTSTRAP=1, for this build only.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs=${FUZZ_SECONDS:-15}
export RUSTC_BOOTSTRAP=1
export CARGO_INCREMENTAL=0

if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
# cargo fuzz has no --locked: make sure the committed Cargo.lock is complete and current first.
if ! cargo fetch --locked; then
  echo "fuzz/Cargo.lock is out of date (a dependency of filesync-core changed?): run \`cd fuzz && cargo update -w\` and commit it" >&2
  exit 1
fi
start=$(date +%s)
cargo fuzz build
echo "fuzz targets built in $(( $(date +%s) - start )) s"
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
for target in $(cargo fuzz list); do
  mkdir -p "$corpus/$target"
  echo "fuzzing $target for ${secs}s"
  log="$corpus/$target.log"
  if ! cargo fuzz run "$target" "$corpus/$target" -- \
      -max_total_time="$secs" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz target $target failed: the input is in fuzz/artifacts/$target/ (see fuzz/README.md)" >&2
    exit 1
  fi
  grep -E '^stat::number_of_executed_units' "$log" || true
done
