// Peers side by side (issue 5, item 3), the C++ half: our engine in-process
// on the networks bench/peers/torch_peers.py runs in PyTorch, and our LSH
// hashing step next to FAISS's LSH encoder. bench/peers/run.sh runs both
// halves in one go and prints them side by side.
//
//   Networks, each on its sparse and its dense path, at batch 1 and 32:
//     poly_lsh   the demo's LSH table (d=8, 8 tables x 11 hyperplane bits,
//                Δ=0) and its 8-unit dense twin, read from --models
//     poly_dsm   the demo's DSM (d=512, lsh router, 64 experts x 64 units,
//                t=4096) and its 4096-unit dense twin, read from --models
//     bench_dsm  engine_bench's DSM (d=1024, 64 experts x 256 units,
//                t=16384, o=1, lsh router of 6 bits, random weights, seed 1)
//                and the same weights unmasked (the cost-only dense baseline)
//   Hashing, at batch 1 and 256: the route step of an LSH table (all s·m
//   hyperplanes as one matmul with the offsets as bias, then one key per
//   table: LshTableModel's code path) against faiss::IndexLSH::sa_encode
//   given the same hyperplanes and offsets, on the same inputs:
//     demo   d=8,  8 tables x 11 bits (poly_lsh's hyperplanes)
//     bench  d=64, 8 tables x 16 bits (engine_bench's random table, seed 2)
//   FAISS's codes are checked bit for bit against our keys before timing.
//
// Every case runs on 1 thread (oneDNN's OpenMP and, for FAISS's sgemm,
// OpenBLAS). Inputs cycle through a pool of 512 rows from U[-1,1]^d (the
// demo models' training distribution), so the DSMs visit every expert and
// their weights come from memory as in serving. Each call is timed on its
// own after a warm-up and the report is the median; torch_peers.py applies
// the same rules (its TimeCalls mirrors the one here).
//
// With --export_dir, the input pools, our outputs and routes, and the
// bench_dsm checkpoint are written there; torch_peers.py reads them and
// checks that PyTorch computes the same function before timing anything.
//
//   build/bench/peers_bench --models=build/demo-models [--export_dir=DIR]
//                           [--min_time=1] [--json] [--cases=poly_dsm/sparse/1,hash/demo]
// (--cases runs a subset, e.g. under perf.)
#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/command_line.h"
#include "common/version.h"
#include "common/process_cpu.h"
#include "engine/dense_model.h"
#include "engine/dsm_model.h"
#include "engine/hashing.h"
#include "engine/matmul_kernel.h"
#include "common/status_macros.h"
#include "engine/workspace.h"
#include "faiss/Index.h"
#include "faiss/IndexLSH.h"
#include "model_store/checkpoint.h"
#include "model_store/safetensors.h"
#include "nlohmann/json.hpp"
#include "tests/testing/random_models.h"

ABSL_FLAG(std::string, models, "build/demo-models",
          "The demo's model repository with poly_lsh and poly_dsm (make demo trains it).");
ABSL_FLAG(std::string, export_dir, "",
          "If set, write peers_io.safetensors (input pools, our outputs and routes) and the "
          "bench_dsm checkpoint there, for torch_peers.py.");
ABSL_FLAG(double, min_time, 1.0, "Seconds of timed calls per case, after the warm-up.");
ABSL_FLAG(bool, json, false, "Print JSON instead of tables.");
ABSL_FLAG(std::vector<std::string>, cases, {},
          "Run only the cases whose name contains one of these strings (names are "
          "network/path/batch and hash/shape/batch, e.g. poly_dsm/sparse/1,hash/demo); for "
          "profiling one case. Empty: all.");

namespace sparse {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr int64_t kPoolRows = 512;
constexpr int64_t kModelBatches[] = {1, 32};
constexpr int64_t kHashBatches[] = {1, 256};
// Timing rules, the same in torch_peers.py.
constexpr int64_t kWarmupCalls = 20;
constexpr double kWarmupSeconds = 0.2;
constexpr int64_t kMinCalls = 100;
constexpr int64_t kMaxCalls = 2'000'000;

// ---------------------------------------------------------------------------
// Timing

struct Timing {
  double median_us = 0, p10_us = 0, p90_us = 0;
  int64_t calls = 0;
};

json ToJson(const Timing& t) {
  return {
      {"median_us", t.median_us}, {"p10_us", t.p10_us}, {"p90_us", t.p90_us}, {"calls", t.calls}};
}

// Runs call(0), call(1), ...: a warm-up of at least kWarmupCalls calls and
// kWarmupSeconds, then at least kMinCalls calls and `min_seconds`, each
// timed on its own. Quantiles are nearest-rank on the sorted times.
absl::StatusOr<Timing> TimeCalls(const std::function<absl::Status(int64_t)>& call,
                                 double min_seconds) {
  using Clock = std::chrono::steady_clock;
  const auto seconds_since = [](Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  };
  int64_t i = 0;
  const auto warmup_start = Clock::now();
  while (i < kWarmupCalls || seconds_since(warmup_start) < kWarmupSeconds) {
    RETURN_IF_ERROR(call(i++));
  }
  std::vector<double> ns;
  const auto start = Clock::now();
  while (static_cast<int64_t>(ns.size()) < kMinCalls ||
         (seconds_since(start) < min_seconds && static_cast<int64_t>(ns.size()) < kMaxCalls)) {
    const auto t0 = Clock::now();
    RETURN_IF_ERROR(call(i++));
    ns.push_back(std::chrono::duration<double, std::nano>(Clock::now() - t0).count());
  }
  std::sort(ns.begin(), ns.end());
  const auto quantile = [&ns](double p) {
    return ns[static_cast<size_t>(p * static_cast<double>(ns.size() - 1) + 0.5)] / 1e3;
  };
  return Timing{.median_us = quantile(0.5),
                .p10_us = quantile(0.1),
                .p90_us = quantile(0.9),
                .calls = static_cast<int64_t>(ns.size())};
}

// Whether --cases selects the case `name`.
bool Selected(const std::string& name) {
  const std::vector<std::string> cases = absl::GetFlag(FLAGS_cases);
  return cases.empty() || std::any_of(cases.begin(), cases.end(), [&name](const std::string& c) {
           return name.find(c) != std::string::npos;
         });
}

// ---------------------------------------------------------------------------
// Networks

struct Network {
  std::string name;
  std::string checkpoint;  // version directory torch_peers.py loads
  std::unique_ptr<Model> sparse;
  std::unique_ptr<Model> dense;
  bool dense_cost_only = false;
  std::vector<float> pool;  // kPoolRows x d
  // Our answers on the pool (batches of 32), for torch_peers.py's check.
  std::vector<float> sparse_y, dense_y;
  std::vector<uint64_t> keys;    // LSH table: [rows, s] bucket keys
  std::vector<int64_t> experts;  // DSM: [rows, L] expert ids
  int64_t route_width = 0;       // s or L
};

// The highest integer version directory of <repository>/<model> that has a
// manifest (what the server would load).
absl::StatusOr<std::string> LatestVersion(const std::string& repository, const std::string& model) {
  const fs::path dir = fs::path(repository) / model;
  std::error_code ec;
  int64_t best = -1;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const bool integer =
        !name.empty() && name.size() <= 18 &&
        std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!integer) continue;
    if (!fs::exists(entry.path() / kManifestFile)) continue;
    best = std::max<int64_t>(best, std::stoll(name));
  }
  if (best < 0) {
    return absl::NotFoundError(
        absl::StrCat("no trained version of ", model, " in ", repository,
                     " (run 'make demo' once; it trains the demo models there)"));
  }
  return fs::absolute(dir / std::to_string(best)).string();
}

absl::StatusOr<Network> LoadNetwork(const std::string& name, const std::string& version_dir,
                                    uint64_t input_seed) {
  Network net;
  net.name = name;
  net.checkpoint = version_dir;
  ASSIGN_OR_RETURN(LoadedModel loaded, LoadCheckpoint(version_dir));
  if (loaded.dense == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(name, " has no dense twin"));
  }
  net.sparse = std::move(loaded.sparse);
  net.dense = std::move(loaded.dense);
  net.dense_cost_only = loaded.dense_cost_only;
  net.pool = testing::RandomInputs(kPoolRows, net.sparse->info().input_dim, input_seed);
  return net;
}

// Runs the pool through both paths in batches of 32 and keeps the outputs
// and the sparse path's route.
absl::Status ComputeAnswers(Network& net) {
  const int64_t d = net.sparse->info().input_dim, o = net.sparse->info().output_dim;
  constexpr int64_t kBatch = 32;
  net.sparse_y.resize(kPoolRows * o);
  net.dense_y.resize(kPoolRows * o);
  for (int64_t r0 = 0; r0 < kPoolRows; r0 += kBatch) {
    const absl::Span<const float> x(net.pool.data() + r0 * d, kBatch * d);
    PredictStats stats;
    Route route;
    RETURN_IF_ERROR(net.sparse->Predict(
        x, kBatch, absl::MakeSpan(net.sparse_y.data() + r0 * o, kBatch * o), &stats, &route));
    RETURN_IF_ERROR(net.dense->Predict(
        x, kBatch, absl::MakeSpan(net.dense_y.data() + r0 * o, kBatch * o), &stats, nullptr));
    if (net.sparse->info().kind == ModelKind::kLshTable) {
      net.route_width = route.keys_per_row;
      net.keys.insert(net.keys.end(), route.bucket_keys.begin(), route.bucket_keys.end());
    } else {
      net.route_width = route.experts_per_row;
      net.experts.insert(net.experts.end(), route.expert_ids.begin(), route.expert_ids.end());
    }
  }
  return absl::OkStatus();
}

struct ModelCase {
  std::string network, path;
  int64_t batch = 0;
  int64_t flops_per_row = 0;
  Timing timing;
};

absl::StatusOr<ModelCase> TimeModel(const Network& net, bool sparse, int64_t batch,
                                    double min_seconds) {
  const Model& model = sparse ? *net.sparse : *net.dense;
  const int64_t d = model.info().input_dim;
  std::vector<float> y(batch * model.info().output_dim);
  const int64_t batches = kPoolRows / batch;
  int64_t flops = 0;
  ASSIGN_OR_RETURN(
      Timing timing,
      TimeCalls(
          [&](int64_t i) {
            PredictStats stats;
            const absl::Span<const float> x(net.pool.data() + (i % batches) * batch * d, batch * d);
            RETURN_IF_ERROR(model.Predict(x, batch, absl::MakeSpan(y), &stats, nullptr));
            flops = stats.flops;
            return absl::OkStatus();
          },
          min_seconds));
  return ModelCase{.network = net.name,
                   .path = sparse ? "sparse" : "dense",
                   .batch = batch,
                   .flops_per_row = flops / batch,
                   .timing = timing};
}

// ---------------------------------------------------------------------------
// Hashing

// LshTableModel's route step on its own: all s·m projections of a batch as
// one matmul with the offsets as bias, then one hyperplane key per (row,
// table). Same kernel spec, packing and key function as the model.
class EngineHasher {
 public:
  static absl::StatusOr<EngineHasher> Create(const LshTableWeights& w) {
    ASSIGN_OR_RETURN(MatmulKernel kernel,
                     MatmulKernel::Create({.k = w.input_dim,
                                           .n = w.num_tables * w.num_hashes,
                                           .layout = MatmulSpec::WeightLayout::kOutputMajor,
                                           .bias = true}));
    ASSIGN_OR_RETURN(PackedWeights projection, kernel.PackAll(w.projection.data(), 1));
    return EngineHasher(w, std::move(kernel), std::move(projection));
  }

  // keys: [rows, s].
  absl::Status Hash(const float* x, int64_t rows, uint64_t* keys) const {
    const int64_t hashes = s_ * m_;
    float* z = ScratchFloats(Scratch::kRouter, rows * hashes);
    int64_t flops = 0, bytes = 0;
    RETURN_IF_ERROR(kernel_.Run(x, rows, projection_.data(), offset_.data(), z, &flops, &bytes));
    for (int64_t i = 0; i < rows * s_; ++i) keys[i] = HyperplaneKey(z + i * m_, m_);
    return absl::OkStatus();
  }

 private:
  EngineHasher(const LshTableWeights& w, MatmulKernel kernel, PackedWeights projection)
      : s_(w.num_tables),
        m_(w.num_hashes),
        kernel_(std::move(kernel)),
        projection_(std::move(projection)),
        offset_(w.offset) {}

  int64_t s_, m_;
  MatmulKernel kernel_;
  PackedWeights projection_;
  std::vector<float> offset_;
};

// faiss::IndexLSH with our hyperplanes as its transform matrix and our
// offsets as its bias (what IndexLSH::transfer_thresholds does with trained
// thresholds): sa_encode then computes sgemm + bias and packs the bits
// [a_j·x + b_j >= 0] LSB first (fvecs2bitvecs), so bit i·m + j of a code is
// hash j of table i, the same bits as our keys.
std::unique_ptr<faiss::IndexLSH> MakeFaissLsh(const LshTableWeights& w) {
  auto index = std::make_unique<faiss::IndexLSH>(w.input_dim, w.num_tables * w.num_hashes,
                                                 /*rotate_data=*/true, /*train_thresholds=*/false);
  index->rrot.A = w.projection;
  index->rrot.b = w.offset;
  index->rrot.have_bias = true;
  return index;
}

// Bits where FAISS's codes and our keys disagree, over all rows of `x`.
// A disagreement is tolerated only where the projection is within rounding
// of 0 (|z| < 1e-4, z recomputed in double); any other is an error.
absl::StatusOr<int64_t> CompareCodes(const LshTableWeights& w, const std::vector<float>& x,
                                     const EngineHasher& ours, const faiss::IndexLSH& faiss) {
  const int64_t rows = static_cast<int64_t>(x.size()) / w.input_dim;
  const int64_t s = w.num_tables, m = w.num_hashes, d = w.input_dim;
  std::vector<uint64_t> keys(rows * s);
  RETURN_IF_ERROR(ours.Hash(x.data(), rows, keys.data()));
  std::vector<uint8_t> codes(rows * faiss.code_size);
  faiss.sa_encode(rows, x.data(), codes.data());
  int64_t mismatches = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t h = 0; h < s * m; ++h) {
      const bool theirs = (codes[r * faiss.code_size + h / 8] >> (h % 8)) & 1;
      const bool mine = (keys[r * s + h / m] >> (h % m)) & 1;
      if (theirs == mine) continue;
      double z = w.offset[h];
      for (int64_t j = 0; j < d; ++j) z += double{w.projection[h * d + j]} * x[r * d + j];
      if (std::fabs(z) >= 1e-4) {
        return absl::InternalError(absl::StrCat("FAISS and engine hash bits differ at row ", r,
                                                " bit ", h, " with z = ", z));
      }
      ++mismatches;
    }
  }
  return mismatches;
}

struct HashCase {
  std::string shape;
  int64_t d = 0, tables = 0, bits = 0, batch = 0;
  int64_t near_zero_mismatches = 0;
  Timing engine, faiss;
};

absl::StatusOr<std::vector<HashCase>> TimeHashing(const std::string& shape,
                                                  const LshTableWeights& w,
                                                  const std::vector<float>& pool,
                                                  double min_seconds) {
  ASSIGN_OR_RETURN(EngineHasher ours, EngineHasher::Create(w));
  const std::unique_ptr<faiss::IndexLSH> faiss = MakeFaissLsh(w);
  ASSIGN_OR_RETURN(const int64_t mismatches, CompareCodes(w, pool, ours, *faiss));
  const int64_t d = w.input_dim;
  std::vector<HashCase> cases;
  for (const int64_t batch : kHashBatches) {
    if (!Selected(absl::StrCat("hash/", shape, "/", batch))) continue;
    HashCase c{.shape = shape,
               .d = d,
               .tables = w.num_tables,
               .bits = w.num_hashes,
               .batch = batch,
               .near_zero_mismatches = mismatches,
               .engine = {},
               .faiss = {}};
    const int64_t batches = kPoolRows / batch;
    std::vector<uint64_t> keys(batch * w.num_tables);
    std::vector<uint8_t> codes(batch * faiss->code_size);
    ASSIGN_OR_RETURN(c.engine, TimeCalls(
                                   [&](int64_t i) {
                                     return ours.Hash(pool.data() + (i % batches) * batch * d,
                                                      batch, keys.data());
                                   },
                                   min_seconds));
    ASSIGN_OR_RETURN(c.faiss, TimeCalls(
                                  [&](int64_t i) {
                                    faiss->sa_encode(batch, pool.data() + (i % batches) * batch * d,
                                                     codes.data());
                                    return absl::OkStatus();
                                  },
                                  min_seconds));
    cases.push_back(c);
  }
  return cases;
}

// ---------------------------------------------------------------------------
// Export for torch_peers.py

absl::Status Export(const std::string& dir, const std::vector<Network>& nets) {
  std::map<std::string, std::string> metadata = {{"pool_rows", std::to_string(kPoolRows)}};
  std::vector<TensorToWrite> tensors;
  std::string names;
  for (const Network& net : nets) {
    const int64_t d = net.sparse->info().input_dim, o = net.sparse->info().output_dim;
    absl::StrAppend(&names, names.empty() ? "" : ",", net.name);
    metadata[net.name + ".checkpoint"] = net.checkpoint;
    tensors.push_back({net.name + ".x", DType::kF32, {kPoolRows, d}, net.pool.data()});
    tensors.push_back({net.name + ".sparse_y", DType::kF32, {kPoolRows, o}, net.sparse_y.data()});
    tensors.push_back({net.name + ".dense_y", DType::kF32, {kPoolRows, o}, net.dense_y.data()});
    if (!net.keys.empty()) {
      tensors.push_back(
          {net.name + ".keys", DType::kU64, {kPoolRows, net.route_width}, net.keys.data()});
    } else {
      tensors.push_back(
          {net.name + ".experts", DType::kI64, {kPoolRows, net.route_width}, net.experts.data()});
    }
  }
  metadata["networks"] = names;
  const std::string path = (fs::path(dir) / "peers_io.safetensors").string();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << SerializeSafetensors(metadata, tensors);
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Machine facts and output

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

// The BLAS library FAISS's sgemm_ resolves to (Debian's libblas.so.3
// alternative), and pins OpenBLAS's own thread pool to 1 thread when that is
// the one.
std::string PinBlasToOneThread() {
  using SetThreads = void (*)(int);
  if (auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    set(1);
  }
  Dl_info info;
  void* sgemm = dlsym(RTLD_DEFAULT, "sgemm_");
  if (sgemm == nullptr || dladdr(sgemm, &info) == 0 || info.dli_fname == nullptr) return "unknown";
  std::error_code ec;
  const fs::path real = fs::canonical(info.dli_fname, ec);
  return ec ? std::string(info.dli_fname) : real.string();
}

std::string UtcNow() {
  const std::time_t now = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return buf;
}

void PrintTables(const std::vector<ModelCase>& models, const std::vector<HashCase>& hashes) {
  std::printf("engine, in-process, 1 thread: microseconds per call (median [p10, p90])\n");
  std::printf("%-10s %-7s %5s %10s %10s %10s %14s\n", "network", "path", "batch", "median", "p10",
              "p90", "FLOPs/row");
  for (const ModelCase& c : models) {
    std::printf("%-10s %-7s %5lld %10.2f %10.2f %10.2f %14lld\n", c.network.c_str(), c.path.c_str(),
                static_cast<long long>(c.batch), c.timing.median_us, c.timing.p10_us,
                c.timing.p90_us, static_cast<long long>(c.flops_per_row));
  }
  std::printf("\nLSH hashing (projection + sign bits), 1 thread: median microseconds per call\n");
  std::printf("%-6s %5s %9s %6s %11s %11s %13s\n", "shape", "d", "bits", "batch", "engine", "FAISS",
              "FAISS/engine");
  for (const HashCase& c : hashes) {
    std::printf("%-6s %5lld %4lldx%-4lld %6lld %11.3f %11.3f %12.2fx\n", c.shape.c_str(),
                static_cast<long long>(c.d), static_cast<long long>(c.tables),
                static_cast<long long>(c.bits), static_cast<long long>(c.batch), c.engine.median_us,
                c.faiss.median_us, c.faiss.median_us / c.engine.median_us);
  }
}

absl::Status Run() {
  const double min_seconds = absl::GetFlag(FLAGS_min_time);
  const std::string models = absl::GetFlag(FLAGS_models);
  const std::string export_dir = absl::GetFlag(FLAGS_export_dir);
  SetKernelThreads(1);
  const std::string blas = PinBlasToOneThread();

  // The networks. Input pool seeds: 3 for bench_dsm as in engine_bench.
  std::vector<Network> nets;
  std::fprintf(stderr,
               "peers_bench: loading poly_lsh, poly_dsm; building bench_dsm (d=1024, t=16384)\n");
  ASSIGN_OR_RETURN(const std::string poly_lsh_dir, LatestVersion(models, "poly_lsh"));
  ASSIGN_OR_RETURN(const std::string poly_dsm_dir, LatestVersion(models, "poly_dsm"));
  ASSIGN_OR_RETURN(Network poly_lsh, LoadNetwork("poly_lsh", poly_lsh_dir, 5));
  nets.push_back(std::move(poly_lsh));
  ASSIGN_OR_RETURN(Network poly_dsm, LoadNetwork("poly_dsm", poly_dsm_dir, 6));
  nets.push_back(std::move(poly_dsm));
  {
    // engine_bench's DSM. Written as a checkpoint without a dense twin (so
    // the dense path is the DSM's own weights unmasked) for torch_peers.py;
    // without --export_dir it goes to a temporary directory.
    const DsmWeights dsm = testing::RandomDsm({.d = 1024,
                                               .o = 1,
                                               .blocks = 1,
                                               .experts = 64,
                                               .active_units = 256,
                                               .router = RouterKind::kLsh},
                                              1);
    const bool temporary = export_dir.empty();
    const fs::path root = temporary
                              ? fs::temp_directory_path() / absl::StrCat("peers_bench.", getpid())
                              : fs::path(export_dir);
    const fs::path model_dir = root / "bench_dsm";
    std::error_code ec;
    fs::remove_all(model_dir, ec);  // this program owns <export_dir>/bench_dsm
    Checkpoint checkpoint;
    checkpoint.sparse = dsm;
    checkpoint.info["dataset"] = "random weights, tests/testing/random_models.h RandomDsm seed 1";
    RETURN_IF_ERROR(WriteCheckpoint(model_dir.string(), 1, checkpoint));
    absl::StatusOr<Network> bench_dsm =
        LoadNetwork("bench_dsm", fs::absolute(model_dir / "1").string(), 3);
    if (temporary) fs::remove_all(root, ec);
    if (!bench_dsm.ok()) return bench_dsm.status();
    nets.push_back(*std::move(bench_dsm));
  }
  for (Network& net : nets) RETURN_IF_ERROR(ComputeAnswers(net));
  if (!export_dir.empty()) RETURN_IF_ERROR(Export(export_dir, nets));

  std::vector<ModelCase> model_cases;
  for (const Network& net : nets) {
    for (const bool sparse : {true, false}) {
      for (const int64_t batch : kModelBatches) {
        if (!Selected(absl::StrCat(net.name, "/", sparse ? "sparse" : "dense", "/", batch)))
          continue;
        std::fprintf(stderr, "peers_bench: %s %s batch %lld\n", net.name.c_str(),
                     sparse ? "sparse" : "dense", static_cast<long long>(batch));
        ASSIGN_OR_RETURN(ModelCase c, TimeModel(net, sparse, batch, min_seconds));
        model_cases.push_back(std::move(c));
      }
    }
  }

  std::vector<HashCase> hash_cases;
  for (const std::string shape : {"demo", "bench"}) {
    if (!Selected("hash/" + shape + "/1") && !Selected("hash/" + shape + "/256")) continue;
    std::fprintf(stderr, "peers_bench: hashing (%s shape), ours vs faiss::IndexLSH\n",
                 shape.c_str());
    LshTableWeights weights;
    std::vector<float> pool;
    if (shape == "demo") {
      ASSIGN_OR_RETURN(Checkpoint poly_lsh, ReadCheckpoint(poly_lsh_dir));
      weights = std::get<LshTableWeights>(std::move(poly_lsh.sparse));
      pool = nets[0].pool;
    } else {
      // engine_bench's table. Only its hyperplanes matter here, and
      // RandomLshTable draws them before it samples buckets, so one sample
      // row gives the same hyperplanes without 2^16 rows of bucket sampling.
      weights = testing::RandomLshTable(
          {.d = 64, .o = 1, .s = 8, .m = 16, .degree = 0, .sample_rows = 1, .keep_fraction = 1.0},
          2);
      pool = testing::RandomInputs(kPoolRows, 64, 4);
    }
    ASSIGN_OR_RETURN(std::vector<HashCase> cases, TimeHashing(shape, weights, pool, min_seconds));
    hash_cases.insert(hash_cases.end(), cases.begin(), cases.end());
  }

  if (!absl::GetFlag(FLAGS_json)) {
    std::printf("%s, %s, %d usable cores; FAISS %d.%d.%d on %s\n\n", UtcNow().c_str(),
                CpuModel().c_str(), UsableCores(), FAISS_VERSION_MAJOR, FAISS_VERSION_MINOR,
                FAISS_VERSION_PATCH, blas.c_str());
    PrintTables(model_cases, hash_cases);
    return absl::OkStatus();
  }
  json out = {{"date", UtcNow()},
              {"cpu", CpuModel()},
              {"cores", UsableCores()},
              {"threads", 1},
              {"pool_rows", kPoolRows},
              {"min_time_s", min_seconds},
              {"faiss", absl::StrCat(FAISS_VERSION_MAJOR, ".", FAISS_VERSION_MINOR, ".",
                                     FAISS_VERSION_PATCH)},
              {"blas", blas},
              {"models", json::array()},
              {"hashing", json::array()}};
  for (const Network& net : nets) {
    out["networks"][net.name] = {{"sparse", net.sparse->info().description},
                                 {"dense", net.dense->info().description},
                                 {"dense_cost_only", net.dense_cost_only}};
  }
  for (const ModelCase& c : model_cases) {
    json j = ToJson(c.timing);
    j.update({{"network", c.network},
              {"path", c.path},
              {"batch", c.batch},
              {"flops_per_row", c.flops_per_row}});
    out["models"].push_back(j);
  }
  for (const HashCase& c : hash_cases) {
    out["hashing"].push_back({{"shape", c.shape},
                              {"d", c.d},
                              {"tables", c.tables},
                              {"bits", c.bits},
                              {"batch", c.batch},
                              {"near_zero_mismatches", c.near_zero_mismatches},
                              {"engine", ToJson(c.engine)},
                              {"faiss", ToJson(c.faiss)}});
  }
  std::printf("%s\n", out.dump(2).c_str());
  return absl::OkStatus();
}

}  // namespace
}  // namespace sparse

int main(int argc, char** argv) {
  sparse::ParseCommandLine(
      argc, argv,
      "our engine in-process and FAISS's LSH encoder, timed the way "
      "bench/peers/torch_peers.py times PyTorch (bench/peers/run.sh runs both).",
      "bench/peers/peers_bench.", sparse::VersionText());
  const absl::Status status = sparse::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "peers_bench: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
