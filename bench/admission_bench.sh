#!/usr/bin/env bash
# Admission control under a flood (issue 33; docs/benchmarks.md "Admission
# control"): poly_lsh's sparse path at a steady rate (open loop, default
# 1,000 req/s) on the same server as a flood of poly_dsm's dense path
# (closed loop, 16 in flight). Four servers, one after the other:
#
#   alone       poly_lsh alone (the flood not started): its p99 to keep;
#   flood       the flood with no levels or limits (today's default);
#   priorities  poly_dsm at level 2 (low), poly_lsh at level 1 (high):
#               priority_levels: 2 in both config.pbtxt, --priority on each bench;
#   shares      no priorities; poly_dsm held to one worker (instance_count: 1,
#               worker_weight: 1) and poly_lsh given weight 4.
#
# Each prints poly_lsh's p50, p99 and errors, its p99 against alone's, and
# the flood's throughput. Every process runs on this machine (two sparse-cli
# load generators beside the server on its cores).
#
#   bench/admission_bench.sh            (about 3.5 minutes after the demo's models are trained)
#   RATE=500 ROUNDS=3 bench/admission_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD_DIR:-build}
OUT=${OUT:-$BUILD/bench-results}
MODELS=$BUILD/bench-models
RATE=${RATE:-1000}
ROUNDS=${ROUNDS:-5}
# The flood's load generator runs at this nice level: it stands in for
# clients on other machines, taking the CPU the server leaves idle rather
# than competing with it (FLOOD_NICE=0 measures both clients at equal
# weight instead).
FLOOD_NICE=${FLOOD_NICE:-19}
say() { echo "[admission-bench] $*" >&2; }
source deploy/lib.sh
require_binaries "$TRAIN" "$SERVER" "$CLI"
mkdir -p "$OUT" "$MODELS"
train_demo_models "$MODELS"

server_pid=""
flood_pid=""
trap 'stop_process "$flood_pid"; stop_process "$server_pid"' EXIT

# Writes repository $1 for scenario $2.
write_repo() {
  local repo=$1 scenario=$2 model
  rm -rf "$repo"
  for model in poly_lsh poly_dsm; do
    mkdir -p "$repo/$model"
    cp -r "$(newest_version_dir "$MODELS" "$model")" "$repo/$model/1"
  done
  case $scenario in
    priorities)
      echo "priority_levels: 2 default_priority_level: 1" >"$repo/poly_lsh/config.pbtxt"
      echo "priority_levels: 2 default_priority_level: 2" >"$repo/poly_dsm/config.pbtxt"
      ;;
    shares)
      echo "limits { worker_weight: 4 }" >"$repo/poly_lsh/config.pbtxt"
      echo "instance_count: 1 limits { worker_weight: 1 }" >"$repo/poly_dsm/config.pbtxt"
      ;;
  esac
}

lsh_schedule=(--warmup_seconds=1 --window_seconds=1 --stable_windows=5 --max_windows=5)
flood_schedule=(--warmup_seconds=1 --window_seconds=1 --stable_windows=9 --max_windows=9)
for round in $(seq 1 "$ROUNDS"); do
  for scenario in alone flood priorities shares; do
    repo=$OUT/admission-repo
    write_repo "$repo" "$scenario"
    start_server "$OUT/admission-server.log" --model_repository="$repo"
    lsh_priority=(); flood_priority=()
    if [[ $scenario == priorities ]]; then lsh_priority=(--priority=1); flood_priority=(--priority=2); fi
    if [[ $scenario != alone ]]; then
      nice -n "$FLOOD_NICE" "$CLI" --target="$target" bench --model=poly_dsm --paths=dense --concurrency=16 --quiet \
        "${flood_schedule[@]}" "${flood_priority[@]}" --json \
        >"$OUT/admission-flood-$scenario-$round.json" &
      flood_pid=$!
      sleep 2  # the flood's warm-up, and a second of it running
    fi
    say "round $round, $scenario: poly_lsh sparse at $RATE req/s"
    "$CLI" --target="$target" bench --model=poly_lsh --paths=sparse --mode=open --rate="$RATE" \
      --quiet "${lsh_schedule[@]}" "${lsh_priority[@]}" --json \
      >"$OUT/admission-lsh-$scenario-$round.json"
    if [[ -n $flood_pid ]]; then wait "$flood_pid"; flood_pid=""; fi
    stop_process "$server_pid"
    server_pid=""
  done
done
rm -rf "$OUT/admission-repo"

/usr/bin/python3 - "$OUT" "$ROUNDS" "$RATE" <<'PY'
import json, os, statistics, sys
out, rounds, rate = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def result(kind, scenario, r):
    path = os.path.join(out, "admission-%s-%s-%d.json" % (kind, scenario, r))
    return json.load(open(path))["results"][0] if os.path.exists(path) else None
print("\nAdmission control: poly_lsh sparse at %s req/s (open loop) beside poly_dsm dense at 16 in flight" % rate)
rows = {}
print("  %-6s %-11s %10s %10s %10s %7s %12s %14s" % (
    "round", "scenario", "lsh req/s", "p50 us", "p99 us", "errors", "p99 / alone", "flood req/s"))
for r in range(1, rounds + 1):
    alone = result("lsh", "alone", r)["p99_us"]
    for scenario in ("alone", "flood", "priorities", "shares"):
        lsh, flood = result("lsh", scenario, r), result("flood", scenario, r)
        print("  %-6d %-11s %10.0f %10.1f %10.1f %7d %11.2fx %14s" % (
            r, scenario, lsh["throughput_rps"], lsh["p50_us"], lsh["p99_us"], lsh["errors"],
            lsh["p99_us"] / alone,
            "-" if flood is None else "%.0f (%d errors)" % (flood["throughput_rps"], flood["errors"])))
        rows.setdefault(scenario, []).append((lsh, flood))
# This VM's tail is noisy even alone (p99 from under 1 ms to several ms in
# one minute): the medians over the rounds, each scenario's rounds
# interleaved with the others'.
print("\n  median over %d rounds:" % rounds)
print("  %-11s %10s %10s %10s %13s %12s %12s %14s" % (
    "scenario", "p50 us", "p90 us", "p99 us", "lsh errors", "p90 / alone", "p99 / alone", "flood req/s"))
med = lambda xs: statistics.median(xs)
alone90 = med([l["p90_us"] for l, _ in rows["alone"]])
alone99 = med([l["p99_us"] for l, _ in rows["alone"]])
for scenario, results in rows.items():
    p90 = med([l["p90_us"] for l, _ in results])
    p99 = med([l["p99_us"] for l, _ in results])
    floods = [f["throughput_rps"] for _, f in results if f is not None]
    print("  %-11s %10.1f %10.1f %10.1f %13d %11.2fx %11.2fx %14s" % (
        scenario, med([l["p50_us"] for l, _ in results]), p90, p99,
        sum(l["errors"] for l, _ in results), p90 / alone90, p99 / alone99,
        "-" if not floods else "%.0f" % med(floods)))
PY
