#!/usr/bin/env bash
# Two sparse-server binaries in turn on the same machine and models: the way
# to tell a code change from this VM's drift (docs/benchmarks.md).
#
#   bench/ab_servers.sh OLD_SERVER NEW_SERVER [ROUNDS]
#
# Each round starts a fresh server of each binary on the bench-serving
# repository ($BUILD/bench-models, from make bench-serving) and measures
# poly_lsh over native gRPC and REST at 1 and 16 in flight, then dsm1024's
# sparse and dense paths at 16 in flight, with sparse-cli bench.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD_DIR:-build}
OLD=$1 NEW=$2 ROUNDS=${3:-3}
REPO=$BUILD/bench-models
CLI=$BUILD/client/sparse-cli
[[ -d $REPO/poly_lsh && -d $REPO/dsm1024 ]] || { echo "no $REPO: run make bench-serving first" >&2; exit 1; }
ports=$(mktemp)
trap 'rm -f "$ports"' EXIT

run() {  # label, server binary
  "$2" --model_repository="$REPO" --port=0 --http_port=0 --workers=2 >"$ports" 2>/dev/null &
  local pid=$!
  for _ in $(seq 200); do [[ $(wc -l <"$ports") -ge 2 ]] && break; sleep 0.1; done
  local port http
  port=$(sed -n 1p "$ports") http=$(sed -n 2p "$ports")
  echo "== $1"
  "$CLI" bench --target="localhost:$port" --http_target="localhost:$http" --model=poly_lsh \
    --paths=sparse --protocols=native,rest --concurrency=1,16 --warmup_seconds=1 --window_seconds=1 \
    --stable_windows=3 --max_windows=6 2>&1 | grep -E '^\s*(1|16)\s+sparse'
  "$CLI" bench --target="localhost:$port" --model=dsm1024 --paths=sparse,dense --concurrency=16 \
    --warmup_seconds=1 --window_seconds=1 --stable_windows=3 --max_windows=6 2>&1 |
    grep -E '^\s*16\s+(sparse|dense)'
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
}

for round in $(seq "$ROUNDS"); do
  run "old, round $round: $OLD" "$OLD"
  run "new, round $round: $NEW" "$NEW"
done
