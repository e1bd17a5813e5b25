#!/usr/bin/env bash
# Production-serving figures of docs/benchmarks.md (make bench-lifecycle):
# dynamic batching on and off, and hot reload under load, both on dsm1024.
#
#   bench/lifecycle_bench.sh     (about 5 minutes, plus dsm1024's training
#                                 the first time if bench-serving has not
#                                 trained it)
#
#  1. Batching: one server, one repository holding dsm1024's version three
#     times (hard links): model "off" without config.pbtxt, "on" with
#     dynamic_batching { max_batch_rows: 32 max_queue_delay_us: 5000 } and
#     "dense_only" with the same and paths: DENSE_ONLY. Closed-loop sweeps of
#     both endpoints of each, then the ratios the issue asks for: dense at 64
#     in flight on/off (>= 4x) and sparse on/off (never lower).
#  2. Hot reload: tests/hot_reload_test.py at 32 in flight for 60 s while
#     20 new versions and 5 corrupt ones are published.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD_DIR:-build}
OUT=${OUT:-$BUILD/bench-results}
REPO=$BUILD/bench-models
say() { echo "[lifecycle-bench] $*" >&2; }
source deploy/lib.sh
require_binaries "$TRAIN" "$SERVER" "$CLI"
mkdir -p "$OUT" "$REPO"
train_dsm1024 "$REPO"
version_dir=$(newest_version_dir "$REPO" dsm1024)

# Inside the build directory: the versions are hard links of dsm1024's files
# (the server refuses symlinks that lead out of its repository).
batching_repo=$(mktemp -d "$BUILD/batching-repo.XXXXXX")
server_pid=""
cleanup() {
  stop_process "$server_pid"
  rm -rf "$batching_repo"
}
trap cleanup EXIT
for model in off on dense_only; do
  mkdir -p "$batching_repo/$model"
  cp -al "$version_dir" "$batching_repo/$model/1"
done
echo 'dynamic_batching { max_batch_rows: 32 max_queue_delay_us: 5000 }' >"$batching_repo/on/config.pbtxt"
echo 'dynamic_batching { max_batch_rows: 32 max_queue_delay_us: 5000 paths: DENSE_ONLY }' \
  >"$batching_repo/dense_only/config.pbtxt"

say "batching: dsm1024 without and with dynamic batching, closed loop 1..64, sparse / dense"
start_server "$OUT/lifecycle-server.log" --model_repository="$batching_repo"
schedule=(--warmup_seconds=1 --window_seconds=1 --stable_windows=3 --max_windows=10)
for model in off on dense_only; do
  "$CLI" --target="$target" bench --model=$model --concurrency=1,4,16,64 --paths=sparse,dense \
    "${schedule[@]}" --csv="$OUT/batching-$model.csv" --plot="$OUT/batching-$model.svg" \
    --json >"$OUT/batching-$model.json"
done
# The headline ratios at 64 in flight: run-to-run noise on this VM is
# 5-10 %, so the three models alternate, three rounds, and the median of
# each round's ratio is reported.
for round in 1 2 3; do
  for model in off on dense_only; do
    say "64 in flight, round $round: $model"
    "$CLI" --target="$target" bench --model=$model --concurrency=64 --paths=sparse,dense \
      "${schedule[@]}" --quiet --json >"$OUT/batching-c64-$model-$round.json"
  done
done
stop_process "$server_pid"
server_pid=""

/usr/bin/python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
runs = {m: json.load(open(os.path.join(out, "batching-%s.json" % m)))["results"]
        for m in ("off", "on", "dense_only")}
def at(model, path, c):
    return next(r for r in runs[model] if r["path"] == path and r["concurrency"] == c)
print("\ndsm1024, closed loop; req/s without batching (off), with batching on both paths (on:"
      "\nmax_batch_rows 32, max_queue_delay_us 5000) and on the dense path only (dense_only):")
print("  %-8s %-7s %9s %9s %9s %8s %12s %11s %11s" % (
    "inflight", "path", "off", "on", "dense_only", "on/off", "d_only/off", "off p50 us", "on p50 us"))
for c in (1, 4, 16, 64):
    for path in ("sparse", "dense"):
        off, on, donly = at("off", path, c), at("on", path, c), at("dense_only", path, c)
        print("  %-8d %-7s %9.0f %9.0f %10.0f %7.2fx %11.2fx %11.1f %11.1f" % (
            c, path, off["throughput_rps"], on["throughput_rps"], donly["throughput_rps"],
            on["throughput_rps"] / off["throughput_rps"], donly["throughput_rps"] / off["throughput_rps"],
            off["p50_us"], on["p50_us"]))
def c64(model, path, round):
    results = json.load(open(os.path.join(out, "batching-c64-%s-%d.json" % (model, round))))["results"]
    return next(r["throughput_rps"] for r in results if r["path"] == path)
print("\nAt 64 in flight, three alternating rounds (req/s off / batching, ratio); median ratio:")
for model in ("on", "dense_only"):
    for path, target in (("dense", "target >= 4"), ("sparse", "target: not lower")):
        rounds = [(c64("off", path, k), c64(model, path, k)) for k in (1, 2, 3)]
        ratios = sorted(b / a for a, b in rounds)
        print("  %-10s %-6s %s  median %.2fx  (%s)" % (
            model, path, "  ".join("%.0f/%.0f %.2fx" % (a, b, b / a) for a, b in rounds), ratios[1], target))
PY

say "hot reload: 60 s at 32 in flight, 20 new + 5 corrupt versions of dsm1024"
/usr/bin/python3 tests/hot_reload_test.py . "$BUILD" --version_dir="$version_dir" --seconds=60 \
  --versions=20 --corrupt=5 --concurrency=32
