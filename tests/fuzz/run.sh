#!/usr/bin/env bash
# Runs each libFuzzer target on its seed corpus for FUZZ_SECONDS (make fuzz;
# FUZZ_TARGETS="a b" picks targets). New inputs that reach new code go into
# a scratch corpus under $OUT, not the checked-in one; a crash, leak or
# timeout stops the target, leaves the input as crash-* / leak-* /
# timeout-* in $OUT, and fails the run. Prints executions and coverage per
# target.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD_DIR:-build-asan}
SECONDS_EACH=${FUZZ_SECONDS:-60}
OUT=${OUT:-$BUILD/fuzz-results}
mkdir -p "$OUT"
status=0
for target in ${FUZZ_TARGETS:-checkpoint_fuzz checkpoint_structure_fuzz model_config_fuzz request_fuzz http_fuzz shard_request_fuzz dataset_fuzz weight_cache_fuzz}; do
  corpus="$OUT/corpus-$target"
  mkdir -p "$corpus"
  dict=()
  [[ -f "tests/fuzz/$target.dict" ]] && dict=(-dict="tests/fuzz/$target.dict")
  echo "[fuzz] $target for ${SECONDS_EACH}s (seeds: tests/fuzz/corpus/$target${dict:+, dictionary tests/fuzz/$target.dict})" >&2
  if ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
     "$BUILD/tests/fuzz/$target" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
       -max_len=65536 -print_final_stats=1 "${dict[@]}" -artifact_prefix="$OUT/$target-" \
       "$corpus" "tests/fuzz/corpus/$target" >"$OUT/$target.log" 2>&1; then
    echo "[fuzz] $target: $(grep -E '^stat::number_of_executed_units' "$OUT/$target.log" | awk '{print $2}') executions, no crash; $(grep -E '#[0-9]+.*(DONE|pulse)' "$OUT/$target.log" | tail -n 1 | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9/]+[a-zA-Z]*')" >&2
  else
    echo "[fuzz] $target FAILED; log $OUT/$target.log; inputs $OUT/$target-*" >&2
    tail -30 "$OUT/$target.log" >&2
    status=1
  fi
done
exit $status
