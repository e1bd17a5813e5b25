#!/usr/bin/env bash
# Sharded models (issue 19), measured on loopback on this machine:
#
#  1. The extra hop: dsm1024 (d=1024, 64 experts x 256 units, trained by
#     make bench-serving) served whole and sharded over N=2 and N=4 shard
#     processes behind a front, closed loop at 1 and 16 in flight on the
#     sparse path: p50, p99, req/s, and req/s per core (the CPU every
#     server process used, over the run's wall time).
#  2. Memory: big512 (d=1024, 512 experts x 256 units: 512 MiB of experts,
#     FP32, random weights, no dense twin), served whole with
#     --nocost_only_dense and by 4 shards and a front: each process's RSS.
#  3. The largest model: a hash-routed DSM of d=1024 and 16,384 experts x 256
#     units (16 GiB of experts at FP32), written here streaming (random
#     weights), served by 4 shards started one after the other and a front;
#     each shard's RSS, and one request's reported cost at 1 in flight.
#
# Every process shares this machine's cores, so the sharded figures include
# the front and the shards competing for them. Results go to $OUT/sharding-*.
#
#   bench/sharding_bench.sh        (make bench-sharding; ~6 minutes measured,
#                                   plus writing the 16 GiB model once)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD_DIR:-build}
OUT=${OUT:-$BUILD/bench-results}
MODELS=$BUILD/bench-models
WINDOW=${WINDOW:-1}
LARGEST_EXPERTS=${LARGEST_EXPERTS:-16384}
# Which parts to run (the report reads every part's results from $OUT).
PARTS=${PARTS:-hop,memory,largest}
part() { [[ ",$PARTS," == *",$1,"* ]]; }
say() { echo "[sharding-bench] $*" >&2; }
source deploy/lib.sh
require_binaries "$TRAIN" "$SERVER" "$CLI"
mkdir -p "$OUT" "$MODELS"
train_dsm1024 "$MODELS"

pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do stop_process "$p"; done
  pids=()
}
trap cleanup EXIT

# Starts a server (flags after the log), appends its pid to pids and sets
# $target, waiting until it listens.
serve() {
  start_server "$@"
  pids+=("$server_pid")
}

# CPU seconds (user + system) the given pids have used so far.
cpu_seconds() {
  local total=0 p
  for p in "$@"; do
    total=$(awk -v t="$total" -v hz="$(getconf CLK_TCK)" '{print t + ($14 + $15) / hz}' "/proc/$p/stat")
  done
  echo "$total"
}

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
peak_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }

# A repository holding version 1 of model $2 from $3, with a format_version
# 2 manifest (written here from the files when the source has version 1),
# so that shards read their ranges only.
make_repo() {
  local repo=$1 model=$2 source_dir=$3
  rm -rf "$repo"
  mkdir -p "$repo/$model/1"
  cp "$source_dir"/*.safetensors "$repo/$model/1/"
  /usr/bin/python3 - "$repo/$model/1" <<'PY'
import importlib.util, json, os, sys
spec = importlib.util.spec_from_file_location("export", "client/python/sparse_serve/export.py")
export = importlib.util.module_from_spec(spec)
spec.loader.exec_module(export)
d = sys.argv[1]
files = {}
for name in sorted(os.listdir(d)):
    if name.endswith(".safetensors"):
        with open(os.path.join(d, name), "rb") as f:
            files[name] = export.manifest_entry(f.read())
with open(os.path.join(d, "manifest.json"), "w") as f:
    json.dump({"format_version": export.MANIFEST_FORMAT_VERSION, "files": files}, f)
PY
}

# Starts n shards and a front on repository $1 (shards one after the
# other, so that only one loads at a time); sets $target to the front.
serve_sharded() {
  local repo=$1 n=$2 tag=$3 i targets=""
  shards=()
  for ((i = 0; i < n; i++)); do
    serve "$OUT/sharding-$tag-shard$i.log" --model_repository="$repo" --shard="$i/$n"
    shards+=("$server_pid")
    targets+="${targets:+;}$target"
  done
  serve "$OUT/sharding-$tag-front.log" --model_repository="$repo" --shard_targets="$targets"
  front=$server_pid
}

schedule=(--warmup_seconds=1 --window_seconds="$WINDOW" --stable_windows=3 --max_windows=8)

# ---- 1. The hop, on dsm1024 ---------------------------------------------------
if part hop; then
repo=$OUT/sharding-repo-dsm1024
make_repo "$repo" dsm1024 "$(newest_version_dir "$MODELS" dsm1024)"
for n in 1 2 4; do
  if ((n == 1)); then
    say "dsm1024 whole"
    serve "$OUT/sharding-hop-whole.log" --model_repository="$repo"
    procs=("$server_pid")
  else
    say "dsm1024 over $n shards and a front"
    serve_sharded "$repo" "$n" "hop$n"
    procs=("${shards[@]}" "$front")
  fi
  for inflight in 1 16; do
    before=$(cpu_seconds "${procs[@]}")
    start=$(date +%s.%N)
    "$CLI" --target="$target" bench --model=dsm1024 --concurrency="$inflight" --paths=sparse \
      "${schedule[@]}" --json >"$OUT/sharding-hop-n$n-c$inflight.json"
    end=$(date +%s.%N)
    after=$(cpu_seconds "${procs[@]}")
    echo "{\"cpu_seconds\": $(echo "$after - $before" | bc -l), \"wall_seconds\": $(echo "$end - $start" | bc -l)}" \
      >"$OUT/sharding-hop-n$n-c$inflight-cpu.json"
  done
  cleanup
done
fi

# ---- 2. Memory, on big512 -----------------------------------------------------
if part memory; then
write_random_dsm512 "$MODELS" big512 11 FP32
repo=$OUT/sharding-repo-big512
make_repo "$repo" big512 "$(newest_version_dir "$MODELS" big512)"
say "big512 whole (no dense endpoint)"
serve "$OUT/sharding-mem-whole.log" --model_repository="$repo" --nocost_only_dense
whole_rss=$(rss_kib "$server_pid")
quick=(--concurrency=1 --paths=sparse --warmup_seconds=0.5 --window_seconds=0.5 --stable_windows=1 --max_windows=2 --json)
"$CLI" --target="$target" bench --model=big512 "${quick[@]}" >"$OUT/sharding-mem-whole-bench.json"
cleanup
say "big512 over 4 shards and a front"
serve_sharded "$repo" 4 mem
"$CLI" --target="$target" bench --model=big512 "${quick[@]}" >"$OUT/sharding-mem-sharded-bench.json"
{
  echo "{\"whole_kib\": $whole_rss, \"front_kib\": $(rss_kib "$front"), \"shards_kib\": ["
  for i in "${!shards[@]}"; do echo "$( ((i > 0)) && echo ,)$(rss_kib "${shards[$i]}")"; done
  echo "]}"
} >"$OUT/sharding-mem.json"
cleanup
rm -rf "$repo"
fi

# ---- 3. The largest model ----------------------------------------------------
if part largest; then
largest=$MODELS/largest
if ! trained "$MODELS" largest; then
  say "writing largest (d=1024, $LARGEST_EXPERTS experts x 256 units, FP32, random weights, streamed)"
  mkdir -p "$largest"
  /usr/bin/python3 bench/write_random_dsm.py "$largest" --d=1024 --experts="$LARGEST_EXPERTS" --k=256 \
    --router=hash --seed=5 --scale=0.03 --other_scale=0.03 --draw=float64
fi
repo=$OUT/sharding-repo-largest
rm -rf "$repo"
mkdir -p "$repo/largest/1"
ln "$(newest_version_dir "$MODELS" largest)"/* "$repo/largest/1/"  # hard links: no 16 GiB copy
say "largest over 4 shards (one loading at a time) and a front"
load_start=$(date +%s.%N)
serve_sharded "$repo" 4 largest
load_end=$(date +%s.%N)
"$CLI" --target="$target" models --json >"$OUT/sharding-largest-models.json"
"$CLI" --target="$target" bench --model=largest --concurrency=1 --paths=sparse "${schedule[@]}" --json \
  >"$OUT/sharding-largest-bench.json"
{
  echo "{\"load_seconds\": $(echo "$load_end - $load_start" | bc -l), \"front_kib\": $(rss_kib "$front"),"
  echo " \"model_bytes\": $(stat -c %s "$repo/largest/1/model.safetensors"), \"shards_kib\": ["
  for i in "${!shards[@]}"; do echo "$( ((i > 0)) && echo ,)$(rss_kib "${shards[$i]}")"; done
  echo "], \"shards_peak_kib\": ["
  for i in "${!shards[@]}"; do echo "$( ((i > 0)) && echo ,)$(peak_kib "${shards[$i]}")"; done
  echo "], \"mem_available_kib\": $(awk '/^MemAvailable/ {print $2}' /proc/meminfo)}"
} >"$OUT/sharding-largest.json"
cleanup
rm -rf "$repo"
fi

/usr/bin/python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
def load(name):
    with open(os.path.join(out, name + ".json")) as f:
        return json.load(f)
def ran(name):  # PARTS may have left a part out
    return os.path.exists(os.path.join(out, name + ".json"))
if ran("sharding-hop-n1-c1"):
  print("\nThe extra hop (dsm1024, sparse path, closed loop; all processes on this machine's cores):")
  print("  %-12s %9s %10s %10s %10s %14s" % ("servers", "in flight", "req/s", "p50 us", "p99 us", "req/s per core"))
  for n in (1, 2, 4):
      for c in (1, 16):
          r = [x for x in load("sharding-hop-n%d-c%d" % (n, c))["results"] if x["path"] == "sparse"][-1]
          cpu = load("sharding-hop-n%d-c%d-cpu" % (n, c))
          cores = cpu["cpu_seconds"] / cpu["wall_seconds"]
          print("  %-12s %9d %10.0f %10.1f %10.1f %14.0f" % (
              "whole" if n == 1 else "%d shards" % n, c, r["throughput_rps"], r["p50_us"], r["p99_us"],
              r["throughput_rps"] / cores if cores > 0 else 0))
if ran("sharding-mem"):
  m = load("sharding-mem")
  print("\nMemory (big512: 512 MiB of experts, no dense endpoint on either side), RSS:")
  print("  whole server  %8.0f MiB" % (m["whole_kib"] / 1024))
  for i, kib in enumerate(m["shards_kib"]):
      print("  shard %d/4     %8.0f MiB  (%.2f x the whole server)" % (i, kib / 1024, kib / m["whole_kib"]))
  print("  front         %8.0f MiB  (%.2f x)" % (m["front_kib"] / 1024, m["front_kib"] / m["whole_kib"]))
if ran("sharding-largest"):
  g = load("sharding-largest")
  r = [x for x in load("sharding-largest-bench")["results"] if x["path"] == "sparse"][-1]
  print("\nThe largest model (%.1f GiB file), 4 shards and a front, loaded in %.0f s:" % (
      g["model_bytes"] / 2**30, g["load_seconds"]))
  for i, kib in enumerate(g["shards_kib"]):
      print("  shard %d/4  %8.0f MiB  (peak while loading %.0f MiB)" % (i, kib / 1024, g["shards_peak_kib"][i] / 1024))
  print("  front      %8.0f MiB;  MemAvailable after: %.1f GiB" % (g["front_kib"] / 1024, g["mem_available_kib"] / 2**20))
  print("  one request (1 in flight): %.0f req/s, p50 %.0f us, p99 %.0f us, %d FLOPs, %d weight bytes" % (
      r["throughput_rps"], r["p50_us"], r["p99_us"], r.get("flops_per_request", 0), r.get("weight_bytes_per_request", 0)))
PY
