# sparse-serve: the two commands a user needs.
#   make test   install missing Debian packages, configure, build, run every test
#   make demo   the main job: train a demo repository, serve it, compare sparse vs dense
# Other targets: build; install (cmake --install to PREFIX, default
# /usr/local); package (the Debian package, build/sparse-serve_*.deb); test-container (the container image, end to end);
# test-asan and test-tsan (the suite under sanitizers) and fuzz (libFuzzer
# targets), docs/reliability.md; bench (engine microbenchmarks);
# bench-serving (sparse vs dense under load), bench-precision (FP32, BF16 and
# INT8 under load), bench-sharding (sharded over 2 and 4 shard processes:
# the hop, memory, the largest model), bench-memory (mapped weights: loads,
# sharing, a model larger than memory) and bench-lifecycle (dynamic batching and hot reload under
# load), docs/benchmarks.md; soak (ten
# minutes under load with hot reloads), docs/reliability.md; peers (our engine
# next to PyTorch and FAISS; needs the demo models); clean.

BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
ASAN_OPTIONS_SET = detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=0

.PHONY: all deps deps-sanitizers configure build install package test test-container test-asan test-tsan fuzz bench bench-serving bench-precision bench-sharding bench-memory bench-admission bench-lifecycle soak peers demo clean

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

# The binaries, the Python client, the protos and the docs under PREFIX
# (CMakeLists.txt, "Install"): bin/, lib/python3/dist-packages/,
# share/sparse-serve/proto/, share/doc/sparse-serve/.
PREFIX ?= /usr/local
install: build
	cmake --install $(BUILD_DIR) --prefix $(PREFIX)

# The Debian package of the same files under /usr: sudo apt install ./build/sparse-serve_*.deb
package: build
	cd $(BUILD_DIR) && cpack -G DEB

# Builds the container image with podman (installed from Debian if missing)
# and checks it end to end: deploy/container-test.sh, docs/deploy.md.
test-container: build
	BUILD_DIR=$(BUILD_DIR) deploy/container-test.sh

# Sanitizer builds, with clang 14, in their own build directories.
ASAN_DIR ?= build-asan
TSAN_DIR ?= build-tsan
FUZZ_SECONDS ?= 60
SANITIZER_CMAKE = -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++

$(ASAN_DIR)/build.ninja:
	cmake -S . -B $(ASAN_DIR) $(SANITIZER_CMAKE) -DSPARSE_SANITIZE=asan

# The TSan build links an Abseil built with TSan from Debian's source
# (tests/sanitizers/build-abseil-tsan.sh), so TSan sees absl::Mutex.
$(TSAN_DIR)/build.ninja:
	cmake -S . -B $(TSAN_DIR) $(SANITIZER_CMAKE) -DSPARSE_SANITIZE=tsan \
	  -Dabsl_DIR=$(abspath $(TSAN_DIR))/abseil/lib/cmake/absl

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer.
test-asan: deps-sanitizers $(ASAN_DIR)/build.ninja
	cmake --build $(ASAN_DIR) -j $(JOBS)
	cd $(ASAN_DIR) && ASAN_OPTIONS=$(ASAN_OPTIONS_SET) UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/sanitizers/lsan.supp \
	  ctest --output-on-failure -j $(JOBS) --timeout 900

# ThreadSanitizer on the tests of the threaded code that does not run a
# gRPC server in process: the serving core (admission, queueing, batching,
# drain), the worker pool, dynamic batching, the model life
# cycle (rescans, polling, the reaper, load/unload), the engine's concurrent
# predictions, the load faults and the sharded front (against in-process
# fake shards, no gRPC channel). Debian's gRPC is not instrumented, so
# tests that serve gRPC in process report its own hand-overs
# (docs/reliability.md). TSAN_TARGETS / TSAN_TESTS (a ctest regex) pick
# others, e.g. make test-tsan TSAN_TARGETS=batcher_test TSAN_TESTS=batcher.
TSAN_TARGETS ?= worker_pool_test admission_gate_test batcher_test inference_core_test model_repository_test concurrency_test checkpoint_faults_test http_server_test sharded_model_test
empty :=
space := $(empty) $(empty)
TSAN_TESTS ?= ^($(subst $(space),|,$(strip $(TSAN_TARGETS))))$$
test-tsan: deps-sanitizers
	tests/sanitizers/build-abseil-tsan.sh $(TSAN_DIR)/abseil
	$(MAKE) $(TSAN_DIR)/build.ninja
	cmake --build $(TSAN_DIR) -j $(JOBS) --target $(TSAN_TARGETS)
	cd $(TSAN_DIR) && TSAN_OPTIONS="suppressions=$(CURDIR)/tests/sanitizers/tsan.supp halt_on_error=1 second_deadlock_stack=1" \
	  ctest --output-on-failure -j $(JOBS) --timeout 900 -R '$(TSAN_TESTS)'

# Each libFuzzer target on its seed corpus for FUZZ_SECONDS (default 60).
fuzz: deps-sanitizers $(ASAN_DIR)/build.ninja
	cmake --build $(ASAN_DIR) -j $(JOBS) --target checkpoint_fuzz checkpoint_structure_fuzz model_config_fuzz request_fuzz http_fuzz shard_request_fuzz dataset_fuzz weight_cache_fuzz
	BUILD_DIR=$(ASAN_DIR) FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run.sh

deps-sanitizers:
	@deploy/install-deps.sh --sanitizers

bench: build
	$(BUILD_DIR)/bench/engine_bench --benchmark_min_time=1

bench-serving: build
	BUILD_DIR=$(BUILD_DIR) bench/serving_bench.sh

# Serving at FP32, BF16 and INT8 alone (also step 6 of bench-serving).
bench-precision: build
	BUILD_DIR=$(BUILD_DIR) bench/precision_bench.sh

# Sharded models on loopback: the extra hop, memory per shard, the largest
# model (docs/benchmarks.md, "Sharded models").
bench-sharding: build
	BUILD_DIR=$(BUILD_DIR) bench/sharding_bench.sh

# Mapped weights (issue 32): load times and peaks, two processes on one
# version, a model 1.5x MEMORY_GIB (default 6) served in a memory cgroup
# (docs/benchmarks.md, "Mapped weights"). Runs as root (cgroup, page cache).
bench-memory: build
	BUILD_DIR=$(BUILD_DIR) bench/memory_bench.sh

# Admission control under a flood (issue 33): priorities, then per-model
# shares, against poly_lsh alone (docs/benchmarks.md "Admission control").
bench-admission: build
	BUILD_DIR=$(BUILD_DIR) bench/admission_bench.sh

bench-lifecycle: build
	BUILD_DIR=$(BUILD_DIR) bench/lifecycle_bench.sh

# Ten minutes of dsm1024 at a fixed rate with a hot reload every 30 s
# (docs/reliability.md).
soak: build
	BUILD_DIR=$(BUILD_DIR) bench/soak.sh

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
	rm -rf $(BUILD_DIR) $(ASAN_DIR) $(TSAN_DIR)
