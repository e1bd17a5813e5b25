#!/usr/bin/env bash
# The main job (make demo): train a small model repository if there is none,
# start sparse-server on localhost, measure thousands of prediction RPCs on
# each model on both endpoints, print how sparse and dense compare, stop.
#
#   deploy/demo.sh            (make demo builds first, then runs this)
#   DEMO_SECONDS=2 deploy/demo.sh     (measurement window per path, default 0.5 s)
#
# Models (trained once into $BUILD_DIR/demo-models, reused afterwards):
#   poly_lsh  LSH table, 8 tables x 11 hyperplane bits, on the paper's random
#             polynomial (d=8, degree 4); dense twin: its 8 activated units.
#   poly_dsm  DSM with an lsh router, 64 experts x 64 units (t=4096), on the
#             paper's manifold polynomial p(Ax) (appendix D.2, d=512, k=8);
#             dense twin: the full width t=4096.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD_DIR:-build}
REPO=${DEMO_REPOSITORY:-$BUILD/demo-models}
WINDOW=${DEMO_SECONDS:-0.5}
TRAIN=$BUILD/model_store/sparse-train
SERVER=$BUILD/server/sparse-server
CLI=$BUILD/client/sparse-cli
for bin in "$TRAIN" "$SERVER" "$CLI"; do
  [[ -x "$bin" ]] || { echo "demo: $bin is missing; run 'make demo' (it builds first)" >&2; exit 1; }
done
say() { echo "[demo] $*" >&2; }

# A model counts as trained when one of its versions has a manifest (a run
# that failed or was interrupted leaves none, and is retrained).
trained() { compgen -G "$REPO/$1/*/manifest.json" >/dev/null; }

if ! trained poly_lsh; then
  say "training poly_lsh (LSH table on the random polynomial, a few seconds)"
  "$TRAIN" --quiet --model=lsh_table --tables=8 --hashes=11 \
    --repository="$REPO" --model_name=poly_lsh >&2
fi
if ! trained poly_dsm; then
  say "training poly_dsm (DSM with an lsh router and its full-width dense twin, about 30 s)"
  "$TRAIN" --quiet --dataset=manifold --d=512 --manifold_dim=8 --router=lsh --experts=64 \
    --active_units=64 --dense_width=4096 --repository="$REPO" --model_name=poly_dsm >&2
fi

work=$(mktemp -d)
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

say "starting sparse-server on 127.0.0.1 (a free port)"
"$SERVER" --model_repository="$REPO" --address=127.0.0.1 --port=0 >"$work/port" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 1 600); do
  [[ -s "$work/port" ]] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.1
done
[[ -s "$work/port" ]] || { echo "demo: sparse-server did not start within 60 s:" >&2; cat "$work/server.log" >&2; exit 1; }
port=$(head -n 1 "$work/port")
target="127.0.0.1:$port"
"$CLI" --target="$target" health >/dev/null || { echo "demo: server is not serving" >&2; exit 1; }
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
