#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60) without a
# sanitizer, on the stable toolchain; exits non-zero if any target crashes.
#
#   fuzz/run.sh [SECONDS]
#
# Installs cargo-fuzz (`cargo install cargo-fuzz --locked`) when missing.
# Builds go to $FUZZ_TARGET_DIR, else $CARGO_TARGET_DIR/fuzz, else fuzz/target.
# New inputs go to fuzz/corpus-work/<target> (ignored by git); the committed
# seeds in fuzz/corpus/<target> are read only. Crashes land in
# fuzz/artifacts/<target>/; each run's libFuzzer output is in
# fuzz/artifacts/<target>/run.log.
set -euo pipefail

seconds="${1:-${FUZZ_SECONDS:-60}}"
case "$seconds" in
  ''|*[!0-9]*) echo "usage: fuzz/run.sh [SECONDS]" >&2; exit 2 ;;
esac

here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: installing it (cargo install cargo-fuzz --locked)"
  cargo install cargo-fuzz --locked
fi

target_dir="${FUZZ_TARGET_DIR:-}"
if [ -z "$target_dir" ]; then
  if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    target_dir="$CARGO_TARGET_DIR/fuzz"
  else
    target_dir="$here/target"
  fi
fi

targets="$(cargo fuzz list)"
failed=()
for t in $targets; do
  mkdir -p "corpus-work/$t" "artifacts/$t"
  log="artifacts/$t/run.log"
  echo "== fuzz $t for ${seconds}s"
  if cargo fuzz run --sanitizer none --target-dir "$target_dir" "$t" \
      "corpus-work/$t" "corpus/$t" -- \
      -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)"
    echo "   $t: ${runs:-?} runs, no crash"
  else
    echo "   $t: FAILED (see fuzz/$log); last lines:"
    tail -n 30 "$log" | sed 's/^/   | /'
    failed+=("$t")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzzing found crashes in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzzing: every target ran ${seconds}s without a crash"
