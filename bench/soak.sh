#!/usr/bin/env bash
# The soak of docs/reliability.md (make soak): dsm1024 under a fixed open-loop
# rate on both paths for 10 minutes, a hot reload every 30 s, RSS sampled
# every second (tests/faults/soak_test.py). Zero failed requests and RSS
# growth under 5 % after the warm-up (two reloads) must hold.
#
#   bench/soak.sh            SOAK_SECONDS, SOAK_RATE (per path) and
#                            SOAK_RELOAD_EVERY override 600, 100 and 30.
# dsm1024 is trained the first time (a few minutes) into $BUILD/bench-models.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD_DIR:-build}
OUT=${OUT:-$BUILD/bench-results}
REPO=$BUILD/bench-models
say() { echo "[soak] $*" >&2; }
source deploy/lib.sh
require_binaries "$TRAIN" "$SERVER" "$CLI"
mkdir -p "$OUT" "$REPO"
train_dsm1024 "$REPO"
version_dir=$(newest_version_dir "$REPO" dsm1024)
seconds=${SOAK_SECONDS:-600}
rate=${SOAK_RATE:-100}
every=${SOAK_RELOAD_EVERY:-30}
say "dsm1024: $seconds s at $rate req/s per path (sparse, dense), a new version every $every s"
# The repository lives in the build directory, on the same file system as
# dsm1024's files: new versions are hard links of them.
TMPDIR=$(realpath "$BUILD") /usr/bin/python3 tests/faults/soak_test.py . "$BUILD" \
  --version_dir="$version_dir" --seconds="$seconds" --rate="$rate" --reload_every="$every" \
  --csv="$OUT/soak.csv"
say "RSS curve: $OUT/soak.csv"
