#!/usr/bin/env bash
# Builds the sparse-serve image from deploy/Dockerfile with podman and checks
# it end to end (make test-container; .ci/run runs it after make test):
#
#  1. installs podman, runc and debootstrap from Debian if missing;
#  2. builds the debian:bookworm-slim base locally (no registry is reachable
#     here): debootstrap --variant=minbase bookworm, trimmed as Debian's slim
#     image is, imported and tagged docker.io/library/debian:bookworm-slim so
#     the Dockerfile builds unchanged with --pull=never. The base is cached
#     in $CACHE_DIR and in podman's store, so a warm run skips this;
#  3. builds the image (the build stage's ccache is a cache mount, so a
#     rebuild compiles only what changed; it makes the .deb with CPack and
#     the runtime stage installs it), and checks that the runtime image
#     runs as a non-root user, is under 200 MB, has the package installed
#     at the VERSION file's version and runs each binary's --version;
#  4. trains the demo repository with the host's sparse-train (once, shared
#     with make demo), starts the image with it mounted read-only and waits
#     for the image's own HEALTHCHECK to pass;
#  5. sends Predict and PredictDense from the host and checks that the
#     outputs equal a host-built sparse-server's on the same repository;
#  6. plays deploy/podman-sharded/pods.yaml (4 shard pods and a front on a
#     podman network with DNS, the front published on loopback only) and
#     checks that the front answers as the host server, that a stopped
#     shard fails the requests that need it UNAVAILABLE and that, started
#     again, it serves them again with no restart of the front;
#  7. removes the pods and the container and stops the host server (the
#     images and the network stay as caches).
#
# Needs root (or a working rootless podman) and the host binaries (make build).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD_DIR:-build}
CACHE_DIR=${SPARSE_CONTAINER_CACHE:-/var/cache/sparse-serve}
IMAGE=localhost/sparse-serve:test
BASE_TAG=docker.io/library/debian:bookworm-slim
MAX_IMAGE_MB=200
say() { echo "[container-test] $*" >&2; }
fail() { echo "[container-test] FAILED: $*" >&2; exit 1; }
source deploy/lib.sh
require_binaries "$TRAIN" "$SERVER" "$CLI"

# 1. Tools.
missing=()
for tool in podman runc debootstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [[ ${#missing[@]} -gt 0 ]]; then
  say "installing ${missing[*]} from Debian"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q podman runc debootstrap
fi
# On this machine kind the OCI runtime cannot set podman's default rlimits.
if ! grep -qs '^default_ulimits' /etc/containers/containers.conf; then
  say "setting default_ulimits = [] in /etc/containers/containers.conf"
  mkdir -p /etc/containers
  if grep -qs '^\[containers\]' /etc/containers/containers.conf; then
    sed -i 's/^\[containers\]/[containers]\ndefault_ulimits = []/' /etc/containers/containers.conf
  else
    printf '[containers]\ndefault_ulimits = []\n' >>/etc/containers/containers.conf
  fi
fi

# 2. The base image.
if ! podman image exists "$BASE_TAG"; then
  if [[ ! -s "$CACHE_DIR/bookworm-slim.tar" ]]; then
    say "building the bookworm-slim base with debootstrap (a few minutes, once)"
    mkdir -p "$CACHE_DIR"
    rootfs=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
    debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >"$CACHE_DIR/debootstrap.log" 2>&1 \
      || { tail -20 "$CACHE_DIR/debootstrap.log" >&2; fail "debootstrap"; }
    # What Debian's slim image leaves out, now and for every later install.
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
    cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
EOF
    find "$rootfs/usr/share/doc" -mindepth 2 ! -name copyright -delete 2>/dev/null || true
    rm -rf "$rootfs"/usr/share/{man,info}/* "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* \
      "$rootfs"/var/log/* "$rootfs"/tmp/*
    find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
    tar --numeric-owner -C "$rootfs" -cf "$CACHE_DIR/bookworm-slim.tar.part" .
    mv "$CACHE_DIR/bookworm-slim.tar.part" "$CACHE_DIR/bookworm-slim.tar"
    rm -rf "$rootfs"
  fi
  say "importing the base as $BASE_TAG"
  podman import --change 'CMD ["bash"]' "$CACHE_DIR/bookworm-slim.tar" "$BASE_TAG" >/dev/null 2>&1
fi

# 3. The image. Docker's image format: OCI images have no HEALTHCHECK.
say "building $IMAGE from deploy/Dockerfile (the first build compiles the project: ~10 minutes)"
podman build --pull=never --network=host --format=docker -f deploy/Dockerfile -t "$IMAGE" . >"$BUILD/container-build.log" 2>&1 \
  || { tail -40 "$BUILD/container-build.log" >&2; fail "podman build (log: $BUILD/container-build.log)"; }
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
size_mb=$((size / 1000000))
say "image $IMAGE: ${size_mb} MB, user $user"
[[ $size_mb -lt $MAX_IMAGE_MB ]] || fail "the image is ${size_mb} MB, over ${MAX_IMAGE_MB} MB"
[[ -n "$user" && "${user%%:*}" != 0 && "${user%%:*}" != root ]] || fail "the image runs as '$user', not a non-root user"
# The image is the Debian package installed on a fresh Debian 12: dpkg knows
# it at the VERSION file's version, and the binaries it put on PATH run.
want_version=$(cat VERSION)
installed=$(podman run --rm --entrypoint dpkg-query "$IMAGE" -W -f '${Package} ${Version} ${Status}' sparse-serve) \
  || fail "the image has no sparse-serve package installed"
[[ "$installed" == "sparse-serve $want_version install ok installed" ]] \
  || fail "dpkg in the image reports '$installed', expected sparse-serve $want_version installed"
for binary in sparse-server sparse-cli sparse-train; do
  printed=$(podman run --rm --entrypoint "$binary" "$IMAGE" --version) || fail "$binary --version in the image"
  [[ "$printed" == "sparse-serve $want_version"* ]] || fail "$binary --version in the image printed '$printed'"
done
say "package: $installed; $(podman run --rm --entrypoint sparse-server "$IMAGE" --version)"

# 4. Serve the demo repository from the image.
REPO=$BUILD/demo-models
train_demo_models "$REPO"
container=sparse-serve-test-$$
server_pid=""
cleanup() {
  podman rm -f "$container" >/dev/null 2>&1 || true
  stop_process "$server_pid"
}
trap cleanup EXIT
say "starting the image with $REPO mounted read-only at /models"
# The HEALTHCHECK runs on demand below (podman's timer needs systemd).
podman run -d --name "$container" --health-interval=disable -p 127.0.0.1::8500 -v "$(realpath "$REPO"):/models:ro" \
  "$IMAGE" --drain_seconds=25 --weight_cache_dir=/var/cache/sparse-serve 2>"$BUILD/container-run.log" \
  >/dev/null || { cat "$BUILD/container-run.log" >&2; fail "podman run"; }
port=$(podman port "$container" 8500/tcp | head -n 1 | sed 's/.*://')
[[ -n "$port" ]] || fail "no host port for the container's 8500"
container_target=127.0.0.1:$port
for i in $(seq 1 120); do
  podman healthcheck run "$container" >/dev/null 2>&1 && break
  [[ "$(podman inspect --format '{{.State.Running}}' "$container")" == true ]] \
    || { podman logs "$container" >&2; fail "the container exited"; }
  sleep 1
done
podman healthcheck run "$container" >/dev/null 2>&1 || { podman logs "$container" >&2; fail "HEALTHCHECK never passed"; }
say "healthy after ${i}s; container user: $(podman exec "$container" id -u)"
[[ "$(podman exec "$container" id -u)" != 0 ]] || fail "the server runs as root in the container"

# 5. Same outputs as a host-built server.
start_server "$BUILD/container-test-host.log" --model_repository="$REPO"
host_target=$target
checked=0
for model in poly_lsh poly_dsm; do
  d=$("$CLI" --target="$host_target" models --json |
      /usr/bin/python3 -c "import json,sys; m=[m for m in json.load(sys.stdin)['models'] if m['name']=='$model'][0]; print(m['versions'][-1]['input_dim'])")
  inputs=$(/usr/bin/python3 -c "
import random
random.seed(7)
print(';'.join(','.join('%.6f' % random.uniform(-1, 1) for _ in range($d)) for _ in range(3)))")
  for mode in --sparse --dense; do
    flag=""
    [[ $mode == --dense ]] && flag=--dense
    got=$("$CLI" --target="$container_target" predict --model=$model --inputs="$inputs" $flag --json)
    want=$("$CLI" --target="$host_target" predict --model=$model --inputs="$inputs" $flag --json)
    /usr/bin/python3 - "$got" "$want" "$model ${mode#--}" <<'PY' || fail "outputs differ"
import json, sys
got, want, what = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
path = "dense" if "dense" in got else "sparse"
g, w = got[path]["outputs"], want[path]["outputs"]
if not g or g != w:
    sys.exit("%s: container %s != host %s" % (what, str(g)[:200], str(w)[:200]))
print("[container-test] %s: 3 rows, outputs equal the host server's: %s" % (what, str(g)[:60]), file=sys.stderr)
PY
    checked=$((checked + 1))
  done
done
[[ $checked -eq 4 ]] || fail "checked $checked of 4 endpoint/model pairs"
# Served from weight cache files the container wrote (--weight_cache_dir):
# both models' weights are mapped, not copied in.
mapped=$("$CLI" --target="$container_target" models | grep -c " mapped, " || true)
[[ $mapped -eq 2 ]] || { "$CLI" --target="$container_target" models >&2; fail "$mapped of 2 models mapped in the container"; }
say "${size_mb} MB image, user $user, Predict and PredictDense equal the host server's"

# 6. The sharded topology as plain Pods (deploy/podman-sharded/pods.yaml)
#    under podman kube play: 4 shards and a front on a podman network with
#    DNS, only the front published, on loopback. Its answers equal the host
#    server's; a stopped shard fails the requests that need it UNAVAILABLE
#    and, started again (at whatever address), serves them again with no
#    restart of the front.
network=sparse-serve-test
pods=$BUILD/container-test-pods.yaml
front_port=$(/usr/bin/python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
sed -e "s#localhost/sparse-serve:latest#$IMAGE#" -e "s#/srv/sparse-serve/models#$(realpath "$REPO")#" \
    -e "s#hostPort: 8500#hostPort: $front_port#" deploy/podman-sharded/pods.yaml >"$pods"
cleanup() {
  podman kube down "$pods" >/dev/null 2>&1 || true
  podman rm -f "$container" >/dev/null 2>&1 || true
  stop_process "$server_pid"
}
podman kube down "$pods" >/dev/null 2>&1 || true
podman network exists "$network" || podman network create "$network" >/dev/null
say "playing deploy/podman-sharded/pods.yaml: 4 shard pods and a front on network $network"
podman kube play --network "$network" "$pods" >"$BUILD/container-kube-play.log" 2>&1 \
  || { cat "$BUILD/container-kube-play.log" >&2; fail "podman kube play"; }
front_target=127.0.0.1:$front_port
for i in $(seq 1 180); do
  "$CLI" --target="$front_target" --timeout_ms=1000 health >/dev/null 2>&1 && break
  sleep 1
done
"$CLI" --target="$front_target" --timeout_ms=1000 health >/dev/null 2>&1 \
  || { podman logs sparse-front-sparse-server >&2; fail "the front never served on $front_target"; }
say "the front serves on $front_target after ${i}s"
published=$(podman port sparse-front-sparse-server)
[[ "$published" == "8500/tcp -> 127.0.0.1:$front_port" ]] || fail "the front publishes '$published', not loopback alone"
for shard in 0 1 2 3; do
  [[ -z "$(podman port sparse-shard-$shard-sparse-server)" ]] || fail "shard $shard publishes a port"
done
input_dim() {  # model: its input width, as the host server reports it
  "$CLI" --target="$host_target" models --json |
    /usr/bin/python3 -c "import json,sys; m=[m for m in json.load(sys.stdin)['models'] if m['name']=='$1'][0]; print(m['versions'][-1]['input_dim'])"
}
same_as_host() {  # model: the front's sparse answers equal the host server's
  local model=$1 d inputs got want
  d=$(input_dim "$model")
  inputs=$(/usr/bin/python3 -c "
import random
random.seed(11)
print(';'.join(','.join('%.6f' % random.uniform(-1, 1) for _ in range($d)) for _ in range(8)))")
  got=$("$CLI" --target="$front_target" predict --model="$model" --inputs="$inputs" --json) || return 1
  want=$("$CLI" --target="$host_target" predict --model="$model" --inputs="$inputs" --json)
  /usr/bin/python3 - "$got" "$want" "$model" <<'PY'
import json, sys
got, want, model = json.loads(sys.argv[1])["sparse"], json.loads(sys.argv[2])["sparse"], sys.argv[3]
g, w = got["outputs"], want["outputs"]
close = len(g) == len(w) > 0 and all(abs(a - b) <= 1e-5 * max(1.0, abs(b)) for a, b in zip(g, w))
if not close or got["route"] != want["route"] or got["cost"]["flops"] != want["cost"]["flops"]:
    sys.exit("%s: the front's answer %s differs from the host server's %s" % (model, str(got)[:300], str(want)[:300]))
print("[container-test] %s through the front: 8 rows, %s shards, routes, FLOPs (%s) and outputs equal the "
      "host server's" % (model, got["cost"]["shards"], got["cost"]["flops"]), file=sys.stderr)
PY
}
same_as_host poly_lsh || fail "poly_lsh through the front"
same_as_host poly_dsm || fail "poly_dsm through the front"
# An LSH row needs every shard: with shard 2 stopped, each request fails.
podman pod stop -t 10 sparse-shard-2 >/dev/null
lsh_dim=$(input_dim poly_lsh) && [[ -n "$lsh_dim" ]] || fail "the host server does not list poly_lsh"
lsh_row=$(/usr/bin/python3 -c "print(','.join(['0.25'] * $lsh_dim))")
refused=$("$CLI" --target="$front_target" predict --model=poly_lsh --inputs="$lsh_row" 2>&1) \
  && fail "a request needing a stopped shard succeeded: $refused"
[[ "$refused" == *UNAVAILABLE* ]] || fail "a request needing a stopped shard: '$refused', not UNAVAILABLE"
say "shard 2 stopped: a request that needs it fails UNAVAILABLE"
podman pod start sparse-shard-2 >/dev/null
started=$(date +%s.%N)
for i in $(seq 1 120); do
  "$CLI" --target="$front_target" predict --model=poly_lsh --inputs="$lsh_row" >/dev/null 2>&1 && break
  sleep 0.5
done
same_as_host poly_lsh || fail "the front did not serve again after shard 2 restarted"
say "shard 2 started again: served again $(/usr/bin/python3 -c "import time; print('%.1f' % (time.time() - $started))") s later, front not restarted"
podman kube down "$pods" >/dev/null 2>&1 || true
say "passed: ${size_mb} MB image, user $user, the image's and the sharded pods' answers equal the host server's"
