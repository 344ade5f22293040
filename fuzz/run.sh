#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each, one after
# the other, from its working corpus (fuzz/corpus/TARGET, grown by earlier
# runs, not committed) and its committed seeds (fuzz/seeds/TARGET).
# Installs cargo-fuzz when it is missing. A crash, a panic, a timeout
# (10 s for one input) or running out of memory (2 GiB) fails the run and
# prints the reproducer's path and how to replay it.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 45 s, all)
#
# cargo-fuzz drives libFuzzer; the instrumentation flags it passes to
# rustc are unstable ones, which the stable toolchain accepts with
# RUSTC_BOOTSTRAP=1. No sanitizer (safe Rust: ASan adds little and halves
# the speed), but debug assertions and overflow checks on.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-45}
[ $# -gt 0 ] && shift
[[ $seconds =~ ^[0-9]+$ ]] || { echo "fuzz/run.sh: SECONDS_PER_TARGET must be a whole number, not \`$seconds'" >&2; exit 2; }

CARGO_FUZZ_VERSION=0.13.2
export RUSTC_BOOTSTRAP=1 CARGO_TERM_COLOR=never
# venussup's build.rs asks git for the commit (and its `git status` may
# refresh the index it watches); a fixed one keeps the build apart from git.
export VENUSSUP_COMMIT=fuzz
flags=(--sanitizer none --debug-assertions)

if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
  echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
  timeout 900 cargo install cargo-fuzz --version "=$CARGO_FUZZ_VERSION" --locked
fi

# The committed Cargo.lock is used as it is (cargo fuzz has no --locked).
# It pins venussup's own dependencies too: a dependency added to
# ../Cargo.toml needs `cargo update -w` here, committed with it.
cargo fetch --locked >/dev/null || {
  echo "fuzz/Cargo.lock is behind ../Cargo.toml (a dependency of venussup changed): run \`cd fuzz && cargo update -w\` and commit fuzz/Cargo.lock" >&2
  exit 1
}
echo "== building the fuzz targets"
timeout 1800 cargo fuzz build "${flags[@]}"
# The targets are run as built, not through `cargo fuzz run`, which asks
# cargo again for each (and venussup's build script, watching git files
# that may not exist, makes cargo build the crate again every time).
bin="target/$(rustc -vV | sed -n 's/^host: //p')/release"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi

failed=()
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "artifacts/$target"
  log="artifacts/$target/last-run.log"
  before=$(ls -1 "artifacts/$target" | sort)
  echo "== fuzzing $target for ${seconds}s"
  status=0
  # The outer timeout only guards against a hung libFuzzer; it stops by
  # itself after max_total_time.
  timeout $((seconds + 600)) "$bin/$target" -artifact_prefix="artifacts/$target/" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 "corpus/$target" "seeds/$target" >"$log" 2>&1 || status=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  echo "   ${runs:-?} executions, corpus $(ls -1 "corpus/$target" | wc -l) inputs, exit $status"
  if [ "$status" -ne 0 ]; then
    failed+=("$target")
    tail -n 40 "$log"
    new=$(comm -13 <(echo "$before") <(ls -1 "artifacts/$target" | sort) | grep -v '^last-run.log$' || true)
    for f in $new; do
      echo "fuzz: $target failed; reproducer: fuzz/artifacts/$target/$f"
      echo "      replay: fuzz/$bin/$target fuzz/artifacts/$target/$f"
    done
    [ -n "$new" ] || echo "fuzz: $target failed without a reproducer; see fuzz/$log"
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, no crash"
