#!/usr/bin/env bash
# Serving at FP32, BF16 and INT8 (issue 18): saturated throughput of the
# sparse and the dense path, bytes per request and memory, for two DSMs:
#
#   dsm1024  d=1024, 64 experts x 256 units (64 MiB of experts), trained by
#            make bench-serving, with its trained dense twin (t=16384);
#   big      d=1024, 512 experts x 256 units (512 MiB of experts at FP32,
#            128 MiB at INT8: more than the 32 MiB L3 at every precision),
#            lsh router, random weights (written once with the Python export,
#            stored as I8); no twin, so its dense path is the DSM's own
#            weights unmasked (t=131072), a cost baseline at equal precision.
#
# For each precision a server holds both models at that precision
# (config.pbtxt `precision:`); it reports its RSS and each version's
# resident bytes (GetModel), then runs a closed loop at 16 in flight on the
# sparse and the dense path of each model. Results go to $OUT/precision-*.
#
#   bench/precision_bench.sh      (run by bench/serving_bench.sh as step 6;
#                                  1.5 minutes measured, plus ~1 to write big)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD_DIR:-build}
OUT=${OUT:-$BUILD/bench-results}
MODELS=$BUILD/bench-models
WINDOW=${WINDOW:-1}
say() { echo "[precision-bench] $*" >&2; }
source deploy/lib.sh
require_binaries "$TRAIN" "$SERVER" "$CLI"
mkdir -p "$OUT" "$MODELS"
train_dsm1024 "$MODELS"

write_random_dsm512 "$MODELS" big 7 INT8

server_pid=""
trap 'stop_process "$server_pid"' EXIT
schedule=(--warmup_seconds=1 --window_seconds="$WINDOW" --stable_windows=3 --max_windows=8)
for precision in FP32 BF16 INT8; do
  repo=$OUT/precision-repo-$precision
  rm -rf "$repo"
  mkdir -p "$repo"
  for model in dsm1024 big; do
    # A copy per precision (the repository refuses symlinks that lead out).
    mkdir -p "$repo/$model"
    cp -r "$(newest_version_dir "$MODELS" "$model")" "$repo/$model/1"
    echo "precision: $precision" >"$repo/$model/config.pbtxt"
  done
  say "$precision: starting sparse-server with dsm1024 and big"
  start_server "$OUT/precision-server-$precision.log" --model_repository="$repo"
  rss_kib=$(awk '/^VmRSS/ {print $2}' "/proc/$server_pid/status")
  "$CLI" --target="$target" models --json >"$OUT/precision-models-$precision.json"
  echo "{\"rss_kib\": $rss_kib}" >"$OUT/precision-rss-$precision.json"
  for model in dsm1024 big; do
    say "$precision: $model, closed loop at 16 in flight, sparse and dense"
    "$CLI" --target="$target" bench --model="$model" --concurrency=16 --paths=sparse,dense \
      "${schedule[@]}" --json >"$OUT/precision-$model-$precision.json"
  done
  stop_process "$server_pid"
  server_pid=""
  rm -rf "$repo"
done

/usr/bin/python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
def load(name):
    return json.load(open(os.path.join(out, name + ".json")))
print("\nServing precision (closed loop, 16 in flight; one server per precision holding both models):")
print("  %-8s %-5s %10s %10s %8s %13s %13s %11s %11s" % (
    "model", "prec", "sparse/s", "dense/s", "d/s", "bytes/req s", "bytes/req d", "resident", "server RSS"))
base = {}
for model in ("dsm1024", "big"):
    for p in ("FP32", "BF16", "INT8"):
        results = load("precision-%s-%s" % (model, p))["results"]
        sparse = [r for r in results if r["path"] == "sparse"][0]
        dense = [r for r in results if r["path"] == "dense"][0]
        versions = [m for m in load("precision-models-" + p)["models"] if m["name"] == model][0]["versions"]
        resident = int(versions[0].get("residentBytes", versions[0].get("resident_bytes", 0)))
        rss = load("precision-rss-" + p)["rss_kib"] * 1024
        base.setdefault(model, sparse["throughput_rps"])
        print("  %-8s %-5s %10.0f %10.1f %8.1f %13d %13d %8.0f MiB %7.0f MiB" % (
            model, p, sparse["throughput_rps"], dense["throughput_rps"],
            dense["throughput_rps"] and sparse["throughput_rps"] / dense["throughput_rps"],
            sparse["weight_bytes_per_request"], dense["weight_bytes_per_request"],
            resident / 2**20, rss / 2**20))
print("  d/s: sparse over dense throughput at equal precision. resident: GetModel's resident_bytes\n"
      "  (both paths; big's cost-only dense path packs its own copy of the weights). server RSS:\n"
      "  the whole process with both models loaded at that precision.")
PY
