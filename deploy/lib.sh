# Shell functions shared by deploy/demo.sh and bench/serving_bench.sh.
# Source it after setting BUILD (the build directory) and defining say().

TRAIN=$BUILD/trainer/sparse-train
SERVER=$BUILD/server/sparse-server
CLI=$BUILD/client/sparse-cli
ECHO_SERVER=$BUILD/bench/echo_server

require_binaries() {
  local bin
  for bin in "$@"; do
    [[ -x "$bin" ]] || { echo "$bin is missing; build first (make build)" >&2; exit 1; }
  done
}

# A model counts as trained when one of its versions has a manifest (a run
# that failed or was interrupted leaves none, and is retrained).
trained() { compgen -G "$1/$2/*/manifest.json" >/dev/null; }

# The demo's models, trained once into repository $1:
#   poly_lsh  LSH table, 8 tables x 11 hyperplane bits, on the paper's random
#             polynomial (d=8, degree 4); dense twin: its 8 activated units.
#   poly_dsm  DSM with an lsh router, 64 experts x 64 units (t=4096), on the
#             paper's manifold polynomial p(Ax) (appendix D.2, d=512, k=8);
#             dense twin: the full width t=4096.
train_demo_models() {
  local repo=$1
  if ! trained "$repo" poly_lsh; then
    say "training poly_lsh (LSH table on the random polynomial, a few seconds)"
    "$TRAIN" --quiet --model=lsh_table --tables=8 --hashes=11 \
      --repository="$repo" --model_name=poly_lsh >&2
  fi
  if ! trained "$repo" poly_dsm; then
    say "training poly_dsm (DSM with an lsh router and its full-width dense twin, about 30 s)"
    "$TRAIN" --quiet --dataset=manifold --d=512 --manifold_dim=8 --router=lsh --experts=64 \
      --active_units=64 --dense_width=4096 --repository="$repo" --model_name=poly_dsm >&2
  fi
}

# dsm1024, the engine benchmark's DSM (d=1024, 64 experts x 256 units, lsh
# router) on the paper's manifold function (k=8), with its full-width dense
# twin (t=16384), trained once into repository $1 (a few minutes).
train_dsm1024() {
  local repo=$1
  if ! trained "$repo" dsm1024; then
    say "training dsm1024 (d=1024, 64 x 256 units, and a dense twin of 16384 units by Adam; a few minutes)"
    "$TRAIN" --quiet --dataset=manifold --d=1024 --manifold_dim=8 --router=lsh --experts=64 \
      --active_units=256 --dense_width=16384 --repository="$repo" --model_name=dsm1024 >&2
  fi
}

# Writes, unless it is there, model $2 of repository $1: a DSM of d=1024
# and 512 experts x 256 units (512 MiB of experts at FP32), o=1, lsh
# router, random weights from torch seed $3, stored at precision $4
# (FP32, BF16 or INT8) by the Python export; no dense twin. About a minute.
write_random_dsm512() {
  local repo=$1 name=$2 seed=$3 precision=$4
  trained "$repo" "$name" && return 0
  say "writing $name (d=1024, 512 experts x 256 units, random weights, stored at $precision; ~1 minute)"
  /usr/bin/python3 - "$repo/$name" "$seed" "$precision" <<'PY'
import importlib.util, sys
import torch
def load(name):
    spec = importlib.util.spec_from_file_location(name, "client/python/sparse_serve/%s.py" % name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
nn, export = load("nn"), load("export")
seed = int(sys.argv[2])
torch.manual_seed(seed)
with torch.no_grad():
    model = nn.DSM(1024, 1, experts=512, active_units=256, router="lsh", seed=seed)
export.export_dsm(model, sys.argv[1], precision=sys.argv[3], info={"data": "random weights (benchmark)"})
PY
}

# The newest published version directory of model $2 in repository $1.
newest_version_dir() {
  dirname "$(ls -d "$1/$2"/*/manifest.json | sort -V | tail -n 1)"
}

# Starts sparse-server on a free loopback port with the given flags; sets
# server_pid and target. The caller kills $server_pid (stop_server). It
# waits START_SECONDS (default 60) for the models to load.
start_server() {
  local log=$1
  shift
  local port_file
  port_file=$(mktemp)
  "$SERVER" --address=127.0.0.1 --port=0 "$@" >"$port_file" 2>"$log" &
  server_pid=$!
  local i
  for i in $(seq 1 $((${START_SECONDS:-60} * 10))); do
    [[ -s "$port_file" ]] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$log" >&2; rm -f "$port_file"; exit 1; }
    sleep 0.1
  done
  [[ -s "$port_file" ]] || { echo "sparse-server did not start within ${START_SECONDS:-60} s:" >&2; cat "$log" >&2; exit 1; }
  target="127.0.0.1:$(head -n 1 "$port_file")"
  # Every port it printed, in order (--port, then --health_port,
  # --metrics_port and --http_port when given).
  mapfile -t server_ports <"$port_file"
  rm -f "$port_file"
  # A connection refused under load is retried (a fresh channel every 0.2 s).
  "$CLI" --target="$target" health --wait_seconds=10 >/dev/null || { echo "sparse-server is not serving" >&2; exit 1; }
}

# Stops the process $1 (SIGTERM) if it is running and waits for it.
stop_process() {
  if [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; then
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
  fi
}
