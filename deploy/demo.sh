#!/usr/bin/env bash
# The main job (make demo): train a small model repository if there is none,
# start sparse-server on localhost, measure thousands of prediction RPCs on
# each model on both endpoints, print how sparse and dense compare, stop.
#
#   deploy/demo.sh            (make demo builds first, then runs this)
#   DEMO_SECONDS=2 deploy/demo.sh     (measurement window per path, default 0.5 s)
#
# Models: see train_demo_models in deploy/lib.sh (trained once into
# $BUILD_DIR/demo-models, reused afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD_DIR:-build}
REPO=${DEMO_REPOSITORY:-$BUILD/demo-models}
WINDOW=${DEMO_SECONDS:-0.5}
say() { echo "[demo] $*" >&2; }
source deploy/lib.sh
require_binaries "$TRAIN" "$SERVER" "$CLI"
train_demo_models "$REPO"

work=$(mktemp -d)
server_pid=""
cleanup() {
  stop_process "$server_pid"
  rm -rf "$work"
}
trap cleanup EXIT

say "starting sparse-server on 127.0.0.1 (a free port)"
start_server "$work/server.log" --model_repository="$REPO"
"$CLI" --target="$target" models --json >"$work/models.json"

for model in poly_lsh poly_dsm; do
  say "measuring both endpoints of $model, one request in flight (sparse-cli bench)"
  "$CLI" --target="$target" bench --model="$model" --concurrency=1 --warmup_seconds=0.5 \
    --window_seconds="$WINDOW" --max_windows=8 --quiet --json >"$work/$model.json"
done

kill -TERM "$server_pid"
wait "$server_pid" || true
server_pid=""

/usr/bin/python3 - "$work" <<'PY'
import json, sys, os
work = sys.argv[1]
models = {m["name"]: m for m in json.load(open(os.path.join(work, "models.json")))["models"]}
print()
print("%-9s %-7s %-11s %14s %9s %9s %10s %12s" % ("model", "path", "test MSE", "FLOPs/request",
                                                  "p50 us", "p99 us", "route us", "compute us"))
for name in ["poly_lsh", "poly_dsm"]:
    bench = {r["path"]: r for r in json.load(open(os.path.join(work, name + ".json")))["results"]}
    info = models[name]["versions"][-1]["info"]
    for path, key in (("sparse", "test_mse"), ("dense", "dense_test_mse")):
        b = bench[path]
        print("%-9s %-7s %-11s %14d %9.1f %9.1f %10.1f %12.1f" % (
            name, path, "%.3e" % float(info.get(key, "nan")), b["flops_per_request"],
            b["p50_us"], b["p99_us"], b["route_p50_us"], b["compute_p50_us"]))
for name in ["poly_lsh", "poly_dsm"]:
    bench = {r["path"]: r for r in json.load(open(os.path.join(work, name + ".json")))["results"]}
    s, d = bench["sparse"], bench["dense"]
    print("%s: dense / sparse = %.2fx the FLOPs, %.2fx the compute time, %.2fx route+compute" % (
        name, d["flops_per_request"] / s["flops_per_request"],
        d["compute_p50_us"] / max(s["compute_p50_us"], 1e-3),
        (d["route_p50_us"] + d["compute_p50_us"]) / max(s["route_p50_us"] + s["compute_p50_us"], 1e-3)))
print("\np50/p99: round trips measured by sparse-cli (one request in flight, batch 1, loopback).")
print("route/compute: the server's own p50 time hashing or routing, and computing, from Cost.")
PY
