#!/usr/bin/env bash
# Mapped weights (issue 32, docs/weight-cache.md), measured on this machine:
#
#  1. load: a 512 MiB random DSM (d=512, 2,048 experts x 128 units, FP32,
#     lsh router, no dense twin, --nocost_only_dense). This machine's disk
#     read rate (dd iflag=direct) and SHA-256 rate (openssl speed, per core
#     and x cores) in the same run, then the time from server start to
#     `sparse-cli health --model` SERVING, and VmHWM / settled VmRSS, for:
#     (a) a cold first load (empty cache dir, model dropped from the page
#     cache), (b) a verified cold load of the cache file (dropped from the
#     page cache, --weight_verify=load), (c) warm restarts with a valid file
#     (--weight_verify=touch and =load), and the copy-in path (no
#     --weight_cache_dir) next to them.
#  2. shared: two server processes on the same repository and cache dir,
#     both warmed by a bench: each one's Pss (smaps_rollup), their sum
#     against one process's Rss.
#  3. larger: a DSM of 1.5x MEMORY_GIB (default 6 GiB: a 9 GiB model;
#     d=1024, 4,096 experts x k units, lsh router) served by one process in
#     a cgroup-v1 memory cgroup limited to MEMORY_GIB (page cache is charged
#     to it: a smaller machine), with traffic routed by the rows sent:
#     Zipf-skewed expert popularity (the experts carrying 99 % of requests
#     fit in half the limit), a hot set that shifts every SHIFT_SECONDS,
#     and uniform; next to the same d, k and router with fewer experts (at
#     most half the limit), same traffic, same cgroup. Throughput, p50/p99,
#     major faults per request, and resident bytes sampled every second.
#
# Results go to $OUT/memory-*; a summary is printed at the end.
#
#   bench/memory_bench.sh   (make bench-memory; PARTS=load,shared,larger;
#                            MEMORY_GIB=6; 10 minutes measured on
#                            2026-12-07, plus ~3 minutes writing the
#                            models the first time; needs root)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD_DIR:-build}
OUT=${OUT:-$BUILD/bench-results}
MODELS=$BUILD/bench-models
MEMORY_GIB=${MEMORY_GIB:-6}
TRAFFIC_SECONDS=${TRAFFIC_SECONDS:-30}  # per traffic kind and model
SHIFT_SECONDS=${SHIFT_SECONDS:-20}
SHIFTS=${SHIFTS:-3}
CONCURRENCY=${CONCURRENCY:-2}
CGROUP=/sys/fs/cgroup/memory/sparse-bench
PY=/usr/bin/python3
# Which parts to run (the report reads every part's results from $OUT).
PARTS=${PARTS:-load,shared,larger}
part() { [[ ",$PARTS," == *",$1,"* ]]; }
say() { echo "[memory-bench] $*" >&2; }
source deploy/lib.sh
require_binaries "$SERVER" "$CLI"
mkdir -p "$OUT" "$MODELS"

pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do stop_process "$p"; done
  pids=()
}
remove_cgroup() {
  cleanup
  stop_process "${server_pid:-}"  # one that start_server gave up on
  if [[ -d $CGROUP ]]; then
    local i
    for i in $(seq 1 50); do rmdir "$CGROUP" 2>/dev/null && break; sleep 0.1; done
  fi
  [[ -n "${sampler:-}" ]] && kill "$sampler" 2>/dev/null || true
}
trap remove_cgroup EXIT

serve() {
  start_server "$@"
  pids+=("$server_pid")
}

status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
rollup_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/smaps_rollup"; }
now() { date +%s.%N; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.6f", a - b}'; }
# CPU seconds (user + system) process $1 has used so far.
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }
# Drops file $1 from the page cache (no process may map it).
drop_file() { "$PY" -c 'import os,sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY); os.fdatasync(fd); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)' "$@"; }
# Writes, unless there, model $2 of repository $1: a random DSM with an lsh
# router (d=$3, $4 experts x $5 units, o=1, FP32, seed $6, no dense twin),
# streamed to disk with a format_version 2 manifest (per-expert part sums,
# as the server's writer makes), never holding the model in memory.
write_lsh_dsm() {
  local repo=$1 name=$2 d=$3 experts=$4 k=$5 seed=$6
  trained "$repo" "$name" && return 0
  say "writing $name (d=$d, $experts experts x $k units, lsh router, FP32, random weights, streamed)"
  mkdir -p "$repo/$name"
  "$PY" bench/write_random_dsm.py "$repo/$name" --d="$d" --experts="$experts" --k="$k" --router=lsh \
    --seed="$seed" --other_scale=0.05 --draw=float32
}

quick=(--concurrency=1 --paths=sparse --warmup_seconds=0.5 --window_seconds=1 --stable_windows=1 --max_windows=2 --json --quiet)

# Starts a server on repository $1 for model $2 (flags after $3, the tag),
# timing start -> health SERVING; then warms it with a short bench and
# records VmHWM, VmRSS and RssFile. Leaves it running ($server_pid).
timed_load() {
  local repo=$1 model=$2 tag=$3
  shift 3
  local t0 t1
  t0=$(now)
  serve "$OUT/memory-$tag.log" --model_repository="$repo" --nocost_only_dense "$@"
  "$CLI" --target="$target" health --model="$model" --wait_seconds=600 >/dev/null
  t1=$(now)
  local hwm_load rss_load cpu_load
  cpu_load=$(cpu_seconds "$server_pid")
  hwm_load=$(status_kib "$server_pid" VmHWM)
  rss_load=$(status_kib "$server_pid" VmRSS)
  "$CLI" --target="$target" bench --model="$model" "${quick[@]}" >"$OUT/memory-$tag-bench.json"
  sleep 1
  "$CLI" --target="$target" models --json >"$OUT/memory-$tag-models.json"
  # The load itself, as the server times it ("loaded in S s"): without the
  # process's start, gRPC's and the health polling.
  local load_s
  load_s=$(sed -nE "s/.*model $model[: ].*loaded in ([0-9.]+) s.*/\1/p" "$OUT/memory-$tag.log" | tail -n 1)
  echo "{\"seconds\": $(minus "$t1" "$t0"), \"load_seconds\": ${load_s:-null}, \"cpu_seconds\": $cpu_load, \"hwm_after_load_kib\": $hwm_load, \"rss_after_load_kib\": $rss_load," \
       " \"hwm_kib\": $(status_kib "$server_pid" VmHWM), \"rss_kib\": $(status_kib "$server_pid" VmRSS)," \
       " \"rss_file_kib\": $(status_kib "$server_pid" RssFile), \"rss_anon_kib\": $(status_kib "$server_pid" RssAnon)}" >"$OUT/memory-$tag.json"
  say "$tag: $(cat "$OUT/memory-$tag.json")"
}

# ---- 1. Loads of the 512 MiB DSM ---------------------------------------------
if part load || part shared; then
  write_lsh_dsm "$MODELS" mem512 512 2048 128 32
  repo512=$OUT/memory-repo-mem512
  rm -rf "$repo512"
  mkdir -p "$repo512/mem512/1"
  ln "$(newest_version_dir "$MODELS" mem512)"/* "$repo512/mem512/1/"
  model512=$repo512/mem512/1/model.safetensors
fi
if part load; then
  say "load: disk and hash rates"
  drop_file "$model512"
  dd_line=$(dd if="$model512" of=/dev/null iflag=direct bs=4M 2>&1 | tail -n 1)
  dd_bytes=$(awk '{print $1}' <<<"$dd_line")
  dd_seconds=$(sed -E 's/.*copied, ([0-9.]+) s.*/\1/' <<<"$dd_line")
  sha_k=$(openssl speed -evp sha256 -seconds 3 2>/dev/null | awk '/^sha256/ {v=$6} END {sub("k","",v); print v}')
  cores=$(nproc)
  echo "{\"disk_bytes\": $dd_bytes, \"disk_seconds\": $dd_seconds, \"dd\": \"$dd_line\"," \
       " \"sha256_bytes_per_second_per_core\": $(awk -v k="$sha_k" 'BEGIN {printf "%.0f", k * 1000}'), \"cores\": $cores," \
       " \"model_bytes\": $(stat -c %s "$model512"), \"load_average\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}" \
    >"$OUT/memory-rates.json"
  say "rates: $(cat "$OUT/memory-rates.json")"
  cache=$OUT/memory-cache
  rm -rf "$cache"
  mkdir -p "$cache"

  say "load (a): cold first load, empty cache dir, model out of the page cache"
  drop_file "$model512"
  timed_load "$repo512" mem512 load-cold-first --weight_cache_dir="$cache" --weight_verify=load
  cleanup
  cache_file=$(find "$cache" -name '*.weights' | head -n 1)
  echo "{\"cache_file_bytes\": $(stat -c %s "$cache_file")}" >"$OUT/memory-cachefile.json"

  say "load (b): verified cold load of the cache file (file out of the page cache)"
  drop_file "$model512" "$cache_file"
  timed_load "$repo512" mem512 load-cold-verified --weight_cache_dir="$cache" --weight_verify=load
  cleanup

  for mode in touch load; do
    say "load (c): warm restart, valid file in the page cache, --weight_verify=$mode"
    cat "$cache_file" >/dev/null
    timed_load "$repo512" mem512 "load-warm-$mode" --weight_cache_dir="$cache" --weight_verify="$mode"
    cleanup
  done

  say "copy-in (no --weight_cache_dir), model out of the page cache"
  drop_file "$model512"
  timed_load "$repo512" mem512 load-copyin-cold
  cleanup
  say "copy-in, model in the page cache"
  timed_load "$repo512" mem512 load-copyin-warm
  cleanup
fi

# ---- 2. Two processes on one version -------------------------------------------
if part shared; then
  cache=$OUT/memory-cache
  mkdir -p "$cache"
  say "shared: two servers on one repository and cache dir"
  serve "$OUT/memory-shared-a.log" --model_repository="$repo512" --nocost_only_dense --weight_cache_dir="$cache"
  a_pid=$server_pid a_target=$target
  serve "$OUT/memory-shared-b.log" --model_repository="$repo512" --nocost_only_dense --weight_cache_dir="$cache"
  b_pid=$server_pid b_target=$target
  warm=(--concurrency=1 --paths=sparse --warmup_seconds=0.5 --window_seconds=2 --stable_windows=1 --max_windows=2 --json --quiet)
  "$CLI" --target="$a_target" bench --model=mem512 "${warm[@]}" >"$OUT/memory-shared-a-bench.json"
  "$CLI" --target="$b_target" bench --model=mem512 "${warm[@]}" >"$OUT/memory-shared-b-bench.json"
  echo "{\"a_pss_kib\": $(rollup_kib "$a_pid" Pss), \"b_pss_kib\": $(rollup_kib "$b_pid" Pss)," \
       " \"a_rss_kib\": $(rollup_kib "$a_pid" Rss), \"b_rss_kib\": $(rollup_kib "$b_pid" Rss)," \
       " \"a_pss_file_kib\": $(rollup_kib "$a_pid" Pss_File), \"a_pss_anon_kib\": $(rollup_kib "$a_pid" Pss_Anon)}" \
    >"$OUT/memory-shared.json"
  say "shared: $(cat "$OUT/memory-shared.json")"
  cleanup
  say "shared, copy-in: two servers without --weight_cache_dir"
  serve "$OUT/memory-shared-c.log" --model_repository="$repo512" --nocost_only_dense
  a_pid=$server_pid a_target=$target
  serve "$OUT/memory-shared-d.log" --model_repository="$repo512" --nocost_only_dense
  b_pid=$server_pid b_target=$target
  "$CLI" --target="$a_target" bench --model=mem512 "${warm[@]}" >/dev/null
  "$CLI" --target="$b_target" bench --model=mem512 "${warm[@]}" >/dev/null
  echo "{\"a_pss_kib\": $(rollup_kib "$a_pid" Pss), \"b_pss_kib\": $(rollup_kib "$b_pid" Pss)," \
       " \"a_rss_kib\": $(rollup_kib "$a_pid" Rss), \"b_rss_kib\": $(rollup_kib "$b_pid" Rss)}" \
    >"$OUT/memory-shared-copyin.json"
  cleanup
fi

# ---- 3. A model larger than memory -------------------------------------------------
if part larger; then
  limit=$((MEMORY_GIB * 1024 * 1024 * 1024))
  d=1024 big_experts=4096
  k=$(( limit * 3 / 2 / (big_experts * d * 4) ))
  expert_bytes=$((k * d * 4))
  big_bytes=$((big_experts * expert_bytes))
  small_experts=$big_experts
  while ((small_experts * expert_bytes > limit / 2)); do small_experts=$((small_experts / 2)); done
  small_bytes=$((small_experts * expert_bytes))
  # The model, its cache file, and the small model and its cache file.
  need_kib=$(( (2 * big_bytes + 2 * small_bytes) / 1024 + 1024 * 1024 ))
  have_kib=$(df -k --output=avail "$MODELS" | tail -n 1)
  if ! trained "$MODELS" memory_big && ((have_kib < need_kib)); then
    say "larger: needs $((need_kib / 1024 / 1024)) GiB free under $MODELS (the ${MEMORY_GIB}x1.5 GiB model," \
        "its cache file, the small model and its cache file), has $((have_kib / 1024 / 1024)) GiB;" \
        "set MEMORY_GIB lower or free disk"
    exit 1
  fi
  [[ -d /sys/fs/cgroup/memory ]] || { say "larger: needs cgroup v1's memory controller"; exit 1; }
  write_lsh_dsm "$MODELS" memory_big $d $big_experts $k 41
  write_lsh_dsm "$MODELS" memory_small $d $small_experts $k 42
  bigcache=$MODELS/memory-cache
  mkdir -p "$bigcache"
  # Traffic: rows that route to chosen experts (x = pinv(A) (t - b), t_j =
  # +-1 by the expert's bits), written as .npy files per model and kind.
  traffic=$OUT/memory-traffic
  rm -rf "$traffic"
  mkdir -p "$traffic"
  for m in memory_big memory_small; do
    "$PY" - "$(newest_version_dir "$MODELS" $m)/model.safetensors" "$traffic/$m" "$big_experts" \
      "$expert_bytes" "$limit" "$SHIFTS" <<'PY'
import json, struct, sys
import numpy as np
path, out, big_experts, expert_bytes, limit, shifts = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
with open(path, "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
    def tensor(name):
        a, b = header[name]["data_offsets"]
        f.seek(8 + n + a)
        return np.frombuffer(f.read(b - a), np.float32).reshape(header[name]["shape"])
    A, b = tensor("router.weight").astype(np.float64), tensor("router.bias").astype(np.float64)
experts = int(header["__metadata__"]["experts"])
r = A.shape[0]
pinv = np.linalg.pinv(A)
def row(e):
    t = np.array([1.0 if (e >> j) & 1 else -1.0 for j in range(r)])
    return (pinv @ (t - b)).astype(np.float32)
X = np.stack([row(e) for e in range(experts)])  # X[e] routes to expert e
assert all(int(sum(1 << j for j in range(r) if z[j] >= 0)) == e for e, z in enumerate(X.astype(np.float64) @ A.T + b))
# The Zipf exponent is chosen on the big model: the experts that carry 99 %
# of requests fit in half the memory limit (the rest is the server's own
# memory and what the kernel keeps for the rest of the file).
hot = (limit // 2) // expert_bytes
ranks = np.arange(1, big_experts + 1, dtype=np.float64)
s = 0.5
while True:
    p = ranks ** -s
    p /= p.sum()
    if np.cumsum(p)[hot - 1] >= 0.99:
        break
    s += 0.01
p = np.arange(1, experts + 1, dtype=np.float64) ** -s
p /= p.sum()
hot99 = int(np.searchsorted(np.cumsum(p), 0.99) + 1)
rows = 20000
rng = np.random.default_rng(7)
def zipf_rows(perm):
    return X[perm[rng.choice(experts, size=rows, p=p)]]
np.save(out + "-zipf.npy", zipf_rows(rng.permutation(experts)))
for i in range(shifts):
    np.save(out + "-shift%d.npy" % i, zipf_rows(rng.permutation(experts)))
np.save(out + "-uniform.npy", X[rng.integers(0, experts, size=rows)])
np.save(out + "-route-check.npy", X[:8])
json.dump({"experts": experts, "zipf_s": round(s, 2), "hot99_experts": hot99,
           "hot99_bytes": hot99 * expert_bytes, "expert_bytes": expert_bytes, "rows": rows},
          open(out + "-traffic.json", "w"))
PY
  done
  echo "{\"limit_bytes\": $limit, \"d\": $d, \"k\": $k, \"big_experts\": $big_experts, \"small_experts\": $small_experts," \
       " \"big_bytes\": $(stat -c %s "$(newest_version_dir "$MODELS" memory_big)/model.safetensors")," \
       " \"small_bytes\": $(stat -c %s "$(newest_version_dir "$MODELS" memory_small)/model.safetensors")}" \
    >"$OUT/memory-larger.json"

  mkdir -p "$CGROUP"
  echo "$limit" >"$CGROUP/memory.limit_in_bytes"
  wrapper=$OUT/memory-in-cgroup.sh
  printf '#!/bin/sh\necho $$ > %s/cgroup.procs && exec %s "$@"\n' "$CGROUP" "$(realpath "$SERVER")" >"$wrapper"
  chmod +x "$wrapper"

  for m in memory_small memory_big; do
    repo=$OUT/memory-repo-$m
    rm -rf "$repo"
    mkdir -p "$repo/$m/1"
    ln "$(newest_version_dir "$MODELS" $m)"/* "$repo/$m/1/"
    flags=(--model_repository="$repo" --nocost_only_dense --weight_cache_dir="$bigcache" --weight_verify=touch)
    if ! compgen -G "$bigcache/$m/1/*.weights" >/dev/null; then
      say "larger: $m: writing its cache file (a first load, outside the cgroup)"
      t0=$(now)
      START_SECONDS=3600 serve "$OUT/memory-$m-build.log" "${flags[@]}"
      echo "{\"seconds\": $(minus "$(now)" "$t0")}" >"$OUT/memory-$m-build.json"
      cleanup
    fi
    drop_file "$repo/$m/1/model.safetensors" "$bigcache/$m/1/"*.weights
    echo 0 >"$CGROUP/memory.max_usage_in_bytes" 2>/dev/null || true
    echo 0 >"$CGROUP/memory.failcnt" 2>/dev/null || true
    say "larger: $m in a ${MEMORY_GIB} GiB cgroup"
    SERVER=$wrapper serve "$OUT/memory-$m.log" "${flags[@]}"
    pid=$server_pid
    # The route of rows written for experts 0..7.
    "$CLI" --target="$target" predict --model=$m --json --csv=<("$PY" -c 'import numpy as np,sys
np.savetxt(sys.stdout, np.load(sys.argv[1]), delimiter=",", fmt="%.9g")' "$traffic/$m-route-check.npy") \
      >"$OUT/memory-$m-route.json"
    for kind in zipf shift uniform; do
      samples=$OUT/memory-$m-$kind-samples.csv
      echo "t,rss_kib,rss_file_kib,cgroup_usage_bytes" >"$samples"
      (t0=$(date +%s); while kill -0 "$pid" 2>/dev/null; do
         echo "$(( $(date +%s) - t0 )),$(status_kib "$pid" VmRSS),$(status_kib "$pid" RssFile),$(cat "$CGROUP/memory.usage_in_bytes")" >>"$samples"
         sleep 1; done) &
      sampler=$!
      bench=(--model=$m --paths=sparse --concurrency="$CONCURRENCY" --json --quiet)
      if [[ $kind == shift ]]; then
        for ((i = 0; i < SHIFTS; i++)); do
          "$CLI" --target="$target" bench "${bench[@]}" --rows="$traffic/$m-shift$i.npy" --warmup_seconds=0 \
            --window_seconds="$SHIFT_SECONDS" --stable_windows=1 --max_windows=1 >"$OUT/memory-$m-shift$i.json" || true
        done
      else
        "$CLI" --target="$target" bench "${bench[@]}" --rows="$traffic/$m-$kind.npy" --warmup_seconds=2 \
          --window_seconds="$TRAFFIC_SECONDS" --stable_windows=1 --max_windows=1 >"$OUT/memory-$m-$kind.json" || true
      fi
      kill "$sampler" 2>/dev/null || true
      wait "$sampler" 2>/dev/null || true
      sampler=
    done
    alive=false
    kill -0 "$pid" 2>/dev/null && alive=true
    echo "{\"alive\": $alive, \"failcnt\": $(cat "$CGROUP/memory.failcnt")," \
         " \"max_usage_bytes\": $(cat "$CGROUP/memory.max_usage_in_bytes")," \
         " \"oom_kills\": $(awk '/oom_kill / {print $2}' "$CGROUP/memory.oom_control" 2>/dev/null || echo null)," \
         " \"hwm_kib\": $(status_kib "$pid" VmHWM 2>/dev/null || echo null)}" >"$OUT/memory-$m-end.json"
    cleanup
    rm -rf "$repo"
  done
  rmdir "$CGROUP"
  # Would madvise(WILLNEED) on the routed expert before compute help? One
  # expert's B slice (k x d FP32, contiguous) read cold from the big model,
  # page by page through a mapping (what a first request does), against the
  # same after one madvise(WILLNEED) of the slice; 200 random experts each.
  say "larger: cold reads of one expert slice, with and without madvise(WILLNEED)"
  big_model=$(newest_version_dir "$MODELS" memory_big)/model.safetensors
  "$PY" - "$big_model" "$OUT/memory-willneed.json" <<'PY'
import json, mmap, os, struct, sys, time
import numpy as np
path, out = sys.argv[1], sys.argv[2]
with open(path, "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
meta = header["__metadata__"]
experts, k, d = int(meta["experts"]), int(meta["active_units"]), int(meta["input_dim"])
start = 8 + n + header["bottom.weight"]["data_offsets"][0]
slice_bytes = k * d * 4
fd = os.open(path, os.O_RDONLY)
m = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
page = mmap.PAGESIZE
rng = np.random.default_rng(3)
chosen = rng.choice(experts, size=400, replace=False)
times = {"touch": [], "willneed": []}
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
for i, e in enumerate(chosen):
    kind = "willneed" if i % 2 else "touch"
    a = start + int(e) * slice_bytes
    lo = a - a % page
    t = time.perf_counter()
    if kind == "willneed":
        m.madvise(mmap.MADV_WILLNEED, lo, a + slice_bytes - lo)
    s = 0
    for p in range(lo, a + slice_bytes, page):
        s += m[p]
    times[kind].append(time.perf_counter() - t)
res = {"slice_bytes": slice_bytes}
for kind, v in times.items():
    v = sorted(v)
    res[kind + "_p50_ms"] = 1000 * v[len(v) // 2]
    res[kind + "_mean_ms"] = 1000 * sum(v) / len(v)
json.dump(res, open(out, "w"))
m.close()
os.close(fd)
PY
fi

"$PY" - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
def load(name):
    with open(os.path.join(out, name + ".json")) as f:
        return json.load(f)
def ran(name):
    return os.path.exists(os.path.join(out, name + ".json"))
MiB, GB = 2**20, 1e9
if ran("memory-rates") and ran("memory-load-copyin-warm"):
    r = load("memory-rates")
    disk = r["disk_bytes"] / r["disk_seconds"]
    sha = r["sha256_bytes_per_second_per_core"]
    bound = min(disk, sha * r["cores"])
    size = r["model_bytes"]
    print("\nLoads of mem512 (%.0f MiB file; load average %s):" % (size / MiB, r["load_average"]))
    print("  disk read (dd iflag=direct bs=4M): %.2f GB/s; SHA-256 %.2f GB/s per core x %d cores = %.2f GB/s;"
          " bound min(...) = %.2f GB/s, 70 %% of it = %.2f GB/s" % (disk / GB, sha / GB, r["cores"], sha * r["cores"] / GB,
                                                             bound / GB, 0.7 * bound / GB))
    print("  s: server start to SERVING; load s: the load alone, as the server logs it")
    print("  %-34s %8s %8s %8s %8s %8s %10s %10s %10s %7s" % ("load", "s", "GB/s", "load s", "GB/s", "CPU s", "peak MiB",
                                                            "settled", "file MiB", "peak/settled"))
    for tag, label in [("load-cold-first", "(a) cold first load, builds file"),
                       ("load-cold-verified", "(b) cold file, verify=load"),
                       ("load-warm-touch", "(c) warm file, verify=touch"),
                       ("load-warm-load", "(c) warm file, verify=load"),
                       ("load-copyin-cold", "copy-in, cold"),
                       ("load-copyin-warm", "copy-in, warm")]:
        if not ran("memory-" + tag):
            continue
        m = load("memory-" + tag)
        ls = m.get("load_seconds") or float("nan")
        print("  %-34s %8.3f %8.2f %8.3f %8.2f %8.2f %10.0f %10.0f %10.0f %7.2f" % (
            label, m["seconds"], size / m["seconds"] / GB, ls, size / ls / GB, m.get("cpu_seconds", -1),
            m["hwm_kib"] / 1024, m["rss_kib"] / 1024,
            m["rss_file_kib"] / 1024, m["hwm_kib"] / m["rss_kib"]))
if ran("memory-shared"):
    s = load("memory-shared")
    print("\nTwo servers on one version (mapped): Pss %.0f + %.0f = %.0f MiB; one process's Rss %.0f MiB; ratio %.2f (target <= 1.2)" % (
        s["a_pss_kib"] / 1024, s["b_pss_kib"] / 1024, (s["a_pss_kib"] + s["b_pss_kib"]) / 1024, s["a_rss_kib"] / 1024,
        (s["a_pss_kib"] + s["b_pss_kib"]) / s["a_rss_kib"]))
    if ran("memory-shared-copyin"):
        c = load("memory-shared-copyin")
        print("  copy-in: Pss %.0f + %.0f = %.0f MiB; one Rss %.0f MiB; ratio %.2f" % (
            c["a_pss_kib"] / 1024, c["b_pss_kib"] / 1024, (c["a_pss_kib"] + c["b_pss_kib"]) / 1024, c["a_rss_kib"] / 1024,
            (c["a_pss_kib"] + c["b_pss_kib"]) / c["a_rss_kib"]))
if ran("memory-larger"):
    g = load("memory-larger")
    print("\nLarger than memory: cgroup limit %.1f GiB; big %.2f GiB (%d experts), small %.2f GiB (%d experts); d=%d, k=%d" % (
        g["limit_bytes"] / 2**30, g["big_bytes"] / 2**30, g["big_experts"], g["small_bytes"] / 2**30, g["small_experts"], g["d"], g["k"]))
    print("  %-13s %-8s %8s %9s %9s %7s %11s %12s %12s" % ("model", "traffic", "req/s", "p50 us", "p99 us", "errors",
                                                        "faults/req", "RSS MiB max", "cgroup MiB max"))
    for m in ("memory_small", "memory_big"):
        t = json.load(open(os.path.join(out, "memory-traffic", m + "-traffic.json")))
        print("  %s: Zipf s=%.2f, the experts carrying 99 %% of requests: %d (%.2f GiB)" % (
            m, t["zipf_s"], t["hot99_experts"], t["hot99_bytes"] / 2**30))
        for kind in ("zipf", "shift", "uniform"):
            names = ["memory-%s-shift%d" % (m, i) for i in range(10) if ran("memory-%s-shift%d" % (m, i))] \
                if kind == "shift" else ["memory-%s-%s" % (m, kind)]
            rs = []
            for n in names:
                if ran(n):
                    try:
                        rs += [x for x in load(n)["results"] if x["path"] == "sparse"]
                    except (ValueError, KeyError):
                        pass
            samples = os.path.join(out, "memory-%s-%s-samples.csv" % (m, kind))
            rss = cg = 0
            if os.path.exists(samples):
                rows = [l.split(",") for l in open(samples).read().split("\n")[1:] if l.count(",") == 3 and l.split(",")[1]]
                rss = max((int(x[1]) for x in rows), default=0) / 1024
                cg = max((int(x[3]) for x in rows), default=0) / MiB
            if not rs:
                print("  %-13s %-8s (no result)" % (m, kind))
                continue
            req = sum(x["requests"] for x in rs)
            sec = sum(x["seconds"] for x in rs)
            p50 = sorted(x["p50_us"] for x in rs)[len(rs) // 2]
            p99 = max(x["p99_us"] for x in rs)
            err = sum(x["errors"] for x in rs)
            faults = sum(x["major_faults_per_request"] * x["requests"] for x in rs) / max(req, 1)
            print("  %-13s %-8s %8.0f %9.0f %9.0f %7d %11.2f %12.0f %12.0f" % (m, kind, req / sec, p50, p99, err, faults, rss, cg))
        if ran("memory-%s-end" % m):
            print("    end: %s" % json.dumps(load("memory-%s-end" % m)))
if ran("memory-willneed"):
    w = load("memory-willneed")
    print("\nOne expert slice (%.2f MiB) read cold through a mapping: page by page p50 %.2f ms (mean %.2f);"
          " after madvise(WILLNEED) p50 %.2f ms (mean %.2f)" % (w["slice_bytes"] / MiB, w["touch_p50_ms"],
          w["touch_mean_ms"], w["willneed_p50_ms"], w["willneed_mean_ms"]))
PY
