#!/usr/bin/env bash
# Installs the Debian 12 packages that sparse-serve's build, tests and demo
# need. Idempotent: a package that is already installed is left alone, and
# nothing is fetched when everything is present.
#
#   deploy/install-deps.sh          install what is missing
#   deploy/install-deps.sh --peers  also the peers benchmark's packages (make peers)
#   deploy/install-deps.sh --list   print the package list and exit (with --peers too)
set -euo pipefail

PACKAGES=(
  # toolchain
  g++ cmake ninja-build ccache pkg-config make python3
  # libraries (DESIGN.md §6)
  libabsl-dev libdnnl-dev nlohmann-json3-dev libssl-dev libeigen3-dev
  # zlib reads gzip-compressed IDX datasets (sparse-train --dataset=idx)
  zlib1g-dev
  # Debian's oneDNN is built with the OpenCL GPU runtime: its CMake config
  # calls find_package(OpenCL REQUIRED), and apt only recommends the package
  ocl-icd-opencl-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc prometheus-cpp-dev libboost-dev
  # the Python package and its tests (Debian's grpcio, protobuf, NumPy and
  # PyTorch for /usr/bin/python3; docs/python.md), and what
  # pip install --no-build-isolation ./client/python builds it with in a venv
  python3-grpcio python3-grpc-tools python3-protobuf python3-numpy python3-torch
  python3-venv python3-pip python3-setuptools python3-wheel
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  # the TLS test makes its certificates with the openssl command line; the
  # metrics and observability tests are scraped by a real Prometheus server
  # (and run promtool, in the same package); the deployment test parses
  # YAML and validates the KEDA manifests with KEDA's schema compiled to
  # JavaScript (tests/schemas/keda/, run by nodejs); the slow-client test
  # attacks the HTTP ports with slowhttptest
  openssl prometheus python3-yaml nodejs slowhttptest
  # real data no one here made: Fashion-MNIST's IDX files under
  # /usr/share/datasets/fashion-mnist/ (sparse-train --dataset=fashion_mnist)
  dataset-fashion-mnist
)

# Optional: bench/peers (make peers) compares us with PyTorch (installed
# above) and FAISS.
# OpenBLAS is the BLAS both then run on; libtorch only recommends it, and
# without it both fall back to the reference BLAS, a comparison that would
# flatter us.
PEERS_PACKAGES=(libfaiss-dev libopenblas0)
# make test-asan, test-tsan and fuzz: clang 14 with its sanitizer and
# libFuzzer runtimes.
SANITIZER_PACKAGES=(clang libclang-rt-14-dev)

list=0
for arg in "$@"; do
  case "$arg" in
    --list) list=1 ;;
    --peers) PACKAGES+=("${PEERS_PACKAGES[@]}") ;;
    --sanitizers) PACKAGES+=("${SANITIZER_PACKAGES[@]}") ;;
    *) echo "install-deps: unknown argument: $arg (expected --peers, --sanitizers or --list)" >&2; exit 2 ;;
  esac
done

if [[ $list -eq 1 ]]; then
  printf '%s\n' "${PACKAGES[@]}"
  exit 0
fi

# The deployment test runs kubectl: Debian's kubernetes-client, unless a
# kubectl is installed already (from another package).
command -v kubectl >/dev/null || PACKAGES+=(kubernetes-client)

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${#missing[@]} missing package(s): ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
# Update the index only when a plain install cannot find a package.
if ! $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"; then
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
