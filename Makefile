# sparse-serve: the two commands a user needs.
#   make test   install missing Debian packages, configure, build, run every test
#   make demo   the main job: train a demo repository, serve it, compare sparse vs dense
# Other targets: build, test-container (the container image, end to end), bench (engine microbenchmarks), bench-serving (sparse vs dense
# under load, docs/benchmarks.md), bench-lifecycle (dynamic batching and hot reload
# under load, docs/benchmarks.md), peers (our engine next to PyTorch and FAISS;
# needs the demo models), clean.

BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)

.PHONY: all deps configure build test test-container bench bench-serving bench-lifecycle peers demo clean

all: build

deps:
	@deploy/install-deps.sh

$(BUILD_DIR)/build.ninja:
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

configure: deps $(BUILD_DIR)/build.ninja

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

# Builds the container image with podman (installed from Debian if missing)
# and checks it end to end: deploy/container-test.sh, docs/deploy.md.
test-container: build
	BUILD_DIR=$(BUILD_DIR) deploy/container-test.sh

bench: build
	$(BUILD_DIR)/bench/engine_bench --benchmark_min_time=1

bench-serving: build
	BUILD_DIR=$(BUILD_DIR) bench/serving_bench.sh

bench-lifecycle: build
	BUILD_DIR=$(BUILD_DIR) bench/lifecycle_bench.sh

# Installs PyTorch and FAISS if missing, re-runs CMake so it finds FAISS, and
# builds and runs only what bench/peers needs.
peers:
	@ls $(BUILD_DIR)/demo-models/poly_lsh/*/manifest.json \
	    $(BUILD_DIR)/demo-models/poly_dsm/*/manifest.json >/dev/null 2>&1 || \
	  { echo "make peers: needs the demo models in $(BUILD_DIR)/demo-models; run 'make demo' first" >&2; exit 1; }
	@deploy/install-deps.sh --peers
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)
	cmake --build $(BUILD_DIR) --target peers_bench -j $(JOBS)
	BUILD_DIR=$(BUILD_DIR) bench/peers/run.sh

demo: build
	BUILD_DIR=$(BUILD_DIR) deploy/demo.sh

clean:
	rm -rf $(BUILD_DIR)
