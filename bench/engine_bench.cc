// Engine microbenchmark (issue 2): batch-1 and batch-32 latency of the sparse
// and dense paths, and a bare oneDNN GEMV of the dense shape as the floor.
//
//   (a) DSM d=1024, E=64 experts x k=256 units (t=16384), o=1, lsh router;
//       its dense twin at full width t=16384
//   (b) LSH table d=64, s=8 tables, m=16 bits, o=1, delta=0
//   (c) floor: one oneDNN matmul [M,1024] x [1024,16384], primitive and
//       memory objects created once, weights in oneDNN's preferred layout
//       for that M, same thread count
//
// Inputs cycle through a pool of 512 random rows so the DSM visits every
// expert and the dense weights (64 MiB) are streamed from memory as in
// serving, not replayed from cache. Everything runs with 1 OpenMP thread
// (the server's one-request-per-core setting). After the runs a summary
// prints the ratios the issue asks for, measured in this same run.
//
// Precision (issue 18), at batch 1:
//   (d) the DSM of (a) at BF16 and INT8 (its 64 MiB of experts fit the
//       32 MiB L3 at INT8, so this one partly measures the cache)
//   (e) a DSM whose experts exceed the L3 at every precision: d=1024,
//       E=512 x k=256 (t=131072, 512 MiB of B at FP32, 128 MiB at INT8),
//       o=1, lsh router, and its dense twin, at FP32, BF16 and INT8
//   (f) this core's read bandwidth: a 1 GiB buffer summed with AVX2 loads
//       on 1, 2 and 4 streams; the fastest is the limit (e) is held to.
//   (f') the same read in pieces of one expert slice (256 KiB, 512 KiB,
//       1 MiB), each somewhere else in the 1 GiB buffer
//   (g) one expert slice's kernel alone at one row (the bottom matrix of
//       (e), K=1024 N=256, 512 slices beyond the L3), at each precision
// For each of (e) the summary prints the weight bytes a row reads (as the
// engine counts them), the achieved GB/s and its fraction of (f). (e) and
// its twins take about 3 GiB; --benchmark_filter='-Large' skips them.
//
//   build/bench/engine_bench [--benchmark_min_time=0.5]
#include <immintrin.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "engine/dense_model.h"
#include "engine/dsm_model.h"
#include "engine/lsh_table_model.h"
#include "engine/matmul_kernel.h"
#include "engine/workspace.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "tests/testing/random_models.h"

namespace sparse {
namespace {

constexpr int64_t kPoolRows = 512;

struct Fixture {
  std::unique_ptr<DsmModel> dsm;
  std::unique_ptr<DenseModel> dense;
  std::unique_ptr<LshTableModel> lsh;
  std::vector<float> dsm_inputs;  // kPoolRows x 1024
  std::vector<float> lsh_inputs;  // kPoolRows x 64
  std::vector<float> floor_weights;  // [16384, 1024]
};

// Facts the report cites: stored buckets per LSH table, and how many distinct
// experts a batch of 32 pool rows touches.
void PrintShapeFacts(const Fixture& f, const LshTableWeights& lsh) {
  int64_t buckets = 0;
  for (const auto& t : lsh.tables) buckets += static_cast<int64_t>(t.keys.size());
  std::fprintf(stderr, "LSH table: %.0f stored buckets per table on average\n",
               static_cast<double>(buckets) / lsh.num_tables);
  double distinct = 0;
  int batches = 0;
  for (int64_t off = 0; off + 32 <= kPoolRows; off += 32, ++batches) {
    std::vector<float> y(32);
    PredictStats stats;
    Route route;
    absl::Span<const float> x(f.dsm_inputs.data() + off * 1024, 32 * 1024);
    if (!f.dsm->Predict(x, 32, absl::MakeSpan(y), &stats, &route).ok()) return;
    std::vector<int32_t> ids = route.expert_ids;
    std::sort(ids.begin(), ids.end());
    distinct += static_cast<double>(std::unique(ids.begin(), ids.end()) - ids.begin());
  }
  std::fprintf(stderr, "DSM: a batch of 32 rows touches %.1f of 64 experts on average\n",
               distinct / batches);
}

Fixture& GetFixture() {
  static Fixture* f = [] {
    auto* f = new Fixture;
    std::fprintf(stderr, "building models (DSM t=16384 d=1024, LSH s=8 m=16 d=64)...\n");
    const DsmWeights dsm = testing::RandomDsm(
        {.d = 1024, .o = 1, .blocks = 1, .experts = 64, .active_units = 256,
         .router = RouterKind::kLsh},
        1);
    f->dsm = DsmModel::Create(dsm).value();
    f->dense = DenseModel::Create(dsm.network).value();
    f->floor_weights = dsm.network.bottom_weight;
    const LshTableWeights lsh = testing::RandomLshTable(
        {.d = 64, .o = 1, .s = 8, .m = 16, .degree = 0, .sample_rows = 1 << 16,
         .keep_fraction = 1.0},
        2);
    f->lsh = LshTableModel::Create(lsh).value();
    f->dsm_inputs = testing::RandomInputs(kPoolRows, 1024, 3);
    f->lsh_inputs = testing::RandomInputs(kPoolRows, 64, 4);
    PrintShapeFacts(*f, lsh);
    return f;
  }();
  return *f;
}

void RunModel(benchmark::State& state, const Model& model, const std::vector<float>& pool) {
  SetKernelThreads(1);
  const int64_t rows = state.range(0);
  const int64_t d = model.info().input_dim;
  std::vector<float> y(rows * model.info().output_dim);
  int64_t offset = 0, flops = 0;
  for (auto _ : state) {
    if (offset + rows > kPoolRows) offset = 0;
    PredictStats stats;
    absl::Span<const float> x(pool.data() + offset * d, rows * d);
    if (!model.Predict(x, rows, absl::MakeSpan(y), &stats, nullptr).ok()) {
      state.SkipWithError("predict failed");
      break;
    }
    benchmark::DoNotOptimize(y.data());
    flops = stats.flops;
    offset += rows;
  }
  state.counters["flops_per_row"] = static_cast<double>(flops) / rows;
  state.counters["rows_per_s"] = benchmark::Counter(static_cast<double>(rows),
                                                    benchmark::Counter::kIsIterationInvariantRate);
}

// Like RunModel at batch 1, also reporting the weight bytes one row reads
// and the rate they were read at.
void RunModelRow(benchmark::State& state, const Model& model, const std::vector<float>& pool) {
  SetKernelThreads(1);
  const int64_t d = model.info().input_dim;
  std::vector<float> y(model.info().output_dim);
  int64_t offset = 0, bytes = 0;
  for (auto _ : state) {
    if (offset + 1 > kPoolRows) offset = 0;
    PredictStats stats;
    if (!model.Predict(absl::Span<const float>(pool.data() + offset * d, d), 1,
                       absl::MakeSpan(y), &stats, nullptr)
             .ok()) {
      state.SkipWithError("predict failed");
      break;
    }
    benchmark::DoNotOptimize(y.data());
    bytes = stats.weight_bytes;
    ++offset;
  }
  state.counters["weight_bytes"] = static_cast<double>(bytes);
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(bytes) / 1e9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

constexpr Precision kPrecisions[] = {Precision::kFp32, Precision::kBf16, Precision::kInt8};

// (d): the DSM of (a) at a reduced precision.
void BM_DsmSparsePrecision(benchmark::State& state) {
  static std::unique_ptr<DsmModel> models[3];
  const int p = static_cast<int>(state.range(0));
  if (models[p] == nullptr) {
    models[p] = DsmModel::Create(testing::RandomDsm({.d = 1024, .o = 1, .blocks = 1,
                                                      .experts = 64, .active_units = 256,
                                                      .router = RouterKind::kLsh},
                                                     1),
                                 kPrecisions[p])
                    .value();
  }
  RunModelRow(state, *models[p], GetFixture().dsm_inputs);
}

// (e): the larger-than-cache DSM and its dense twin at each precision.
struct LargeFixture {
  std::unique_ptr<DsmModel> sparse[3];
  std::unique_ptr<DenseModel> dense[3];
};
LargeFixture& GetLarge() {
  static LargeFixture* f = [] {
    auto* f = new LargeFixture;
    std::fprintf(stderr, "building the larger-than-cache DSM (d=1024 E=512 k=256, 512 MiB) "
                         "and its dense twin at FP32, BF16 and INT8...\n");
    const DsmWeights w = testing::RandomDsm(
        {.d = 1024, .o = 1, .blocks = 1, .experts = 512, .active_units = 256,
         .router = RouterKind::kLsh},
        5);
    for (int p = 0; p < 3; ++p) {
      f->sparse[p] = DsmModel::Create(w, kPrecisions[p]).value();
      f->dense[p] = DenseModel::Create(w.network, kPrecisions[p]).value();
      std::fprintf(stderr, "  %s: sparse resident %.0f MiB, dense resident %.0f MiB\n",
                   std::string(PrecisionName(kPrecisions[p])).c_str(),
                   f->sparse[p]->info().resident_bytes / 1048576.0,
                   f->dense[p]->info().resident_bytes / 1048576.0);
    }
    return f;
  }();
  return *f;
}
void BM_LargeDsmSparse(benchmark::State& state) {
  RunModelRow(state, *GetLarge().sparse[state.range(0)], GetFixture().dsm_inputs);
}
void BM_LargeDsmDense(benchmark::State& state) {
  RunModelRow(state, *GetLarge().dense[state.range(0)], GetFixture().dsm_inputs);
}

// (f): sums a buffer far larger than the last-level cache with 32-byte
// loads, split into `streams` parts read side by side (one core keeps more
// misses in flight on two streams than on one; 2026-12-03: 1 stream 36,
// 2 streams 43, 4 streams 40 GB/s). The summary takes the fastest as the
// limit.
template <int kStreams>
__attribute__((target("avx2"))) uint64_t SumAvx2(const uint64_t* p, size_t words) {
  __m256i acc[kStreams];
  for (__m256i& a : acc) a = _mm256_setzero_si256();
  const size_t part = words / kStreams;
  for (size_t i = 0; i + 8 <= part; i += 8) {
    for (int j = 0; j < kStreams; ++j) {
      const auto* q = reinterpret_cast<const __m256i*>(p + j * part + i);
      acc[j] = _mm256_add_epi64(acc[j], _mm256_add_epi64(_mm256_load_si256(q),
                                                         _mm256_load_si256(q + 1)));
    }
  }
  alignas(32) uint64_t lanes[4];
  __m256i total = acc[0];
  for (int j = 1; j < kStreams; ++j) total = _mm256_add_epi64(total, acc[j]);
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), total);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}
uint64_t* BandwidthBuffer(size_t bytes) {
  static uint64_t* buffer = [bytes] {
    auto* p = static_cast<uint64_t*>(std::aligned_alloc(64, bytes));
    for (size_t i = 0; i < bytes / 8; ++i) p[i] = i;  // touch every page
    return p;
  }();
  return buffer;
}
void BM_ReadBandwidth(benchmark::State& state) {
  constexpr size_t kBytes = size_t{1} << 30;
  uint64_t* buffer = BandwidthBuffer(kBytes);
  if (!__builtin_cpu_supports("avx2")) {
    state.SkipWithError("this CPU has no AVX2");
    return;
  }
  const int64_t streams = state.range(0);
  for (auto _ : state) {
    benchmark::DoNotOptimize(streams == 1   ? SumAvx2<1>(buffer, kBytes / 8)
                             : streams == 2 ? SumAvx2<2>(buffer, kBytes / 8)
                                            : SumAvx2<4>(buffer, kBytes / 8));
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(kBytes) / 1e9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

// (g): one expert slice's kernel alone, at one row: the bottom matrix of
// (e) (K=1024, N=256, bias, ReLU) over 512 slices beyond the L3, each call
// on another slice (a fixed pseudo-random walk), at FP32 (input-major, as
// the DSM keeps it), BF16 and INT8. Against BM_ReadBandwidth this says how
// much of (e)'s loss is the kernel's (conversion, scales, primitive call)
// rather than the model's (validation, routing, the top layer).
void BM_KernelRow(benchmark::State& state) {
  constexpr int64_t kK = 1024, kN = 256, kSlices = 512;
  struct Slices {
    std::unique_ptr<MatmulKernel> kernel;
    PackedWeights weights;
    std::vector<float> bias;
  };
  static Slices slices[3];
  const int p = static_cast<int>(state.range(0));
  Slices& s = slices[p];
  if (s.kernel == nullptr) {
    const bool fp32 = kPrecisions[p] == Precision::kFp32;
    s.kernel = std::make_unique<MatmulKernel>(
        MatmulKernel::Create({.k = kK, .n = kN,
                              .layout = fp32 ? MatmulSpec::WeightLayout::kInputMajor
                                             : MatmulSpec::WeightLayout::kOutputMajor,
                              .bias = true, .relu = true, .allow_packing = !fp32,
                              .precision = kPrecisions[p]})
            .value());
    uint64_t seed = 7;
    s.weights = s.kernel
                    ->PackAll(kSlices,
                              [&seed](int64_t, float* out) -> const float* {
                                for (int64_t i = 0; i < kK * kN; ++i) {
                                  seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                                  out[i] = static_cast<float>(static_cast<int32_t>(seed >> 40)) /
                                           (1 << 24) * 0.06f;
                                }
                                return out;
                              })
                    .value();
    s.bias.assign(kSlices * kN, 0.01f);
  }
  SetKernelThreads(1);
  const std::vector<float>& pool = GetFixture().dsm_inputs;
  std::vector<float> y(kN);
  int64_t offset = 0, slice = 0, flops = 0, bytes = 0;
  for (auto _ : state) {
    if (offset + 1 > kPoolRows) offset = 0;
    slice = (slice * 5 + 17) % kSlices;
    bytes = 0;
    if (!s.kernel
             ->Run(pool.data() + offset * kK, 1,
                   s.weights.data() + slice * s.kernel->packed_floats(),
                   s.bias.data() + slice * kN, y.data(), &flops, &bytes)
             .ok()) {
      state.SkipWithError("run failed");
      break;
    }
    benchmark::DoNotOptimize(y.data());
    ++offset;
  }
  state.counters["weight_bytes"] = static_cast<double>(bytes);
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(bytes) / 1e9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

// (f'): the same read in pieces the size of one expert slice (the
// argument, in KiB), each at another place in the 1 GiB buffer (a fixed
// pseudo-random walk), on 2 streams: what one row's read of one slice can
// reach, its start-up (first misses, 4 KiB pages) included.
void BM_ReadSlices(benchmark::State& state) {
  constexpr size_t kBytes = size_t{1} << 30;
  uint64_t* buffer = BandwidthBuffer(kBytes);
  if (!__builtin_cpu_supports("avx2")) {
    state.SkipWithError("this CPU has no AVX2");
    return;
  }
  const size_t slice = static_cast<size_t>(state.range(0)) << 10;
  const size_t slices = kBytes / slice;
  size_t i = 0;
  for (auto _ : state) {
    i = (i * 5 + 17) % slices;
    benchmark::DoNotOptimize(SumAvx2<2>(buffer + i * slice / 8, slice / 8));
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(slice) / 1e9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

void BM_DsmSparse(benchmark::State& state) {
  RunModel(state, *GetFixture().dsm, GetFixture().dsm_inputs);
}
void BM_DsmDense(benchmark::State& state) {
  RunModel(state, *GetFixture().dense, GetFixture().dsm_inputs);
}
void BM_LshTable(benchmark::State& state) {
  RunModel(state, *GetFixture().lsh, GetFixture().lsh_inputs);
}

// The floor: a bare oneDNN matmul of the dense bottom layer's shape, with
// weights reordered once into the layout oneDNN prefers for this M.
void BM_OneDnnGemvFloor(benchmark::State& state) {
  SetKernelThreads(1);
  Fixture& f = GetFixture();
  using dnnl::memory;
  const int64_t m = state.range(0), k = 1024, n = 16384;
  const dnnl::engine& engine = CpuEngine();
  dnnl::stream stream(engine);
  memory::desc src({m, k}, memory::data_type::f32, memory::format_tag::ab);
  memory::desc plain({k, n}, memory::data_type::f32, memory::format_tag::ba);
  memory::desc any({k, n}, memory::data_type::f32, memory::format_tag::any);
  memory::desc dst({m, n}, memory::data_type::f32, memory::format_tag::ab);
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, any, dst), engine);
  dnnl::matmul prim(pd);
  std::vector<float> out(m * n);
  memory plain_mem(plain, engine, f.floor_weights.data());
  memory wmem(pd.weights_desc(), engine);
  dnnl::reorder(plain_mem, wmem).execute(stream, plain_mem, wmem);
  stream.wait();
  memory dmem(dst, engine, out.data());
  std::vector<memory> srcs;
  for (int64_t off = 0; off + m <= kPoolRows; off += m) {
    srcs.emplace_back(src, engine, f.dsm_inputs.data() + off * k);
  }
  size_t i = 0;
  for (auto _ : state) {
    prim.execute(stream, {{DNNL_ARG_SRC, srcs[i]}, {DNNL_ARG_WEIGHTS, wmem}, {DNNL_ARG_DST, dmem}});
    stream.wait();
    i = (i + 1) % srcs.size();
  }
  state.counters["flops_per_row"] = 2.0 * k * n;
}

// The other floor: oneDNN's sgemm on plain input-major weights [K, N], the
// route our kernels take at 1-2 rows for matrices beyond the cache (see
// engine/matmul_kernel.h). The summary compares against the faster floor.
void BM_SgemmGemvFloor(benchmark::State& state) {
  SetKernelThreads(1);
  Fixture& f = GetFixture();
  const int64_t m = state.range(0), k = 1024, n = 16384;
  std::vector<float> w(k * n);  // input-major copy of the [N, K] floor weights
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t i = 0; i < k; ++i) w[i * n + j] = f.floor_weights[j * k + i];
  }
  std::vector<float> out(m * n);
  int64_t off = 0;
  for (auto _ : state) {
    dnnl_sgemm('N', 'N', m, n, k, 1.0f, f.dsm_inputs.data() + off * k, k, w.data(), n, 0.0f,
               out.data(), n);
    off = off + 2 * m <= kPoolRows ? off + m : 0;
  }
  state.counters["flops_per_row"] = 2.0 * k * n;
}

BENCHMARK(BM_DsmSparse)->Arg(1)->Arg(32)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DsmDense)->Arg(1)->Arg(32)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_OneDnnGemvFloor)->Arg(1)->Arg(32)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_SgemmGemvFloor)->Arg(1)->Arg(32)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_LshTable)->Arg(1)->Arg(32)->Unit(benchmark::kMicrosecond);
// Precision: the argument indexes kPrecisions (0 FP32, 1 BF16, 2 INT8).
BENCHMARK(BM_DsmSparsePrecision)->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ReadBandwidth)->Arg(1)->Arg(2)->Arg(4)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ReadSlices)->Arg(256)->Arg(512)->Arg(1024)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_KernelRow)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_LargeDsmSparse)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_LargeDsmDense)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond);

// Console output as usual, plus the per-run real times for the summary.
class SummaryReporter : public benchmark::ConsoleReporter {
 public:
  SummaryReporter() : ConsoleReporter(isatty(STDOUT_FILENO) ? OO_ColorTabular : OO_Tabular) {}
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      if (run.run_type == Run::RT_Iteration && !run.error_occurred) {
        times_us_[run.benchmark_name()] = run.GetAdjustedRealTime();
        for (const auto& [name, counter] : run.counters) {
          counters_[run.benchmark_name() + ":" + name] = counter.value;
        }
      }
    }
    ConsoleReporter::ReportRuns(runs);
  }
  double Us(const std::string& name) const {
    auto it = times_us_.find(name);
    return it == times_us_.end() ? 0.0 : it->second;
  }
  // A counter's value as reported (rates already divided by the time).
  double Counter(const std::string& name, const std::string& counter) const {
    auto it = counters_.find(name + ":" + counter);
    return it == counters_.end() ? 0.0 : it->second;
  }

 private:
  std::map<std::string, double> times_us_;
  std::map<std::string, double> counters_;
};

const char* Verdict(bool met) { return met ? "met" : "NOT met"; }

// Issue 18's figures: time ratios to FP32, and the memory-bound cases' read
// rate against the measured limit.
void PrintPrecisionSummary(const SummaryReporter& r) {
  double limit = 0;
  for (const char* streams : {"1", "2", "4"}) {
    limit = std::max(limit, r.Counter(std::string("BM_ReadBandwidth/") + streams, "GB/s"));
  }
  if (limit > 0) {
    std::printf("\n  read bandwidth of this core (1 GiB, AVX2, best of 1/2/4 streams): %.1f GB/s\n",
                limit);
  }
  for (const char* path : {"BM_LargeDsmSparse", "BM_LargeDsmDense"}) {
    const std::string p = path;
    const double fp32 = r.Us(p + "/0");
    if (fp32 <= 0) continue;
    std::printf("  %s (d=1024 E=512 k=256, larger than L3), batch 1:\n",
                p == "BM_LargeDsmSparse" ? "sparse path" : "dense twin");
    const double targets[] = {1.0, 0.6, 0.35};
    for (int i = 0; i < 3; ++i) {
      const std::string name = p + "/" + std::to_string(i);
      const double us = r.Us(name);
      if (us <= 0) continue;
      const double bytes = r.Counter(name, "weight_bytes");
      const double gbs = bytes / (us * 1e3);
      std::printf("    %-4s %9.1f us  %5.2fx FP32", std::string(PrecisionName(kPrecisions[i])).c_str(),
                  us, us / fp32);
      if (i > 0 && p == "BM_LargeDsmSparse") {
        std::printf(" (target <= %.2fx: %s)", targets[i], Verdict(us / fp32 <= targets[i]));
      }
      std::printf("  %10.0f bytes/row  %5.1f GB/s", bytes, gbs);
      if (limit > 0) {
        // Issue 18 asked 70 % of every path; issue 32, 80 % of the sparse
        // path at every precision.
        const double target = p == "BM_LargeDsmSparse" ? 0.8 : 0.7;
        std::printf("  %3.0f%% of the limit (target >= %.0f%%: %s)", 100 * gbs / limit,
                    100 * target, Verdict(gbs >= target * limit));
      }
      std::printf("\n");
    }
  }
  const char* slices[] = {"1024", "512", "256"};  // KiB read per kernel call, as (g)
  for (int i = 0; i < 3; ++i) {
    const std::string name = "BM_KernelRow/" + std::to_string(i);
    const double us = r.Us(name), read = r.Us(std::string("BM_ReadSlices/") + slices[i]);
    if (us <= 0) continue;
    const double gbs = r.Counter(name, "weight_bytes") / (us * 1e3);
    std::printf("  one slice's kernel (K=1024 N=256) at %s, 1 row: %.1f us, %.1f GB/s",
                std::string(PrecisionName(kPrecisions[i])).c_str(), us, gbs);
    if (read > 0) std::printf(" (reading %s KiB alone: %.1f us)", slices[i], read);
    if (limit > 0) std::printf(", %.0f%% of the limit", 100 * gbs / limit);
    std::printf("\n");
  }
  const double small = r.Us("BM_DsmSparse/1");
  for (int i = 1; i < 3; ++i) {
    const double us = r.Us("BM_DsmSparsePrecision/" + std::to_string(i));
    if (small > 0 && us > 0) {
      std::printf("  DSM of (a) at %s, batch 1: %.1f us, %.2fx its FP32 (INT8 fits L3: cache)\n",
                  std::string(PrecisionName(kPrecisions[i])).c_str(), us, us / small);
    }
  }
}

void PrintSummary(const SummaryReporter& r) {
  std::printf("\nSummary (this run; targets from issue 2):\n");
  for (const char* batch : {"1", "32"}) {
    const std::string b = batch;
    const double sparse = r.Us("BM_DsmSparse/" + b), dense = r.Us("BM_DsmDense/" + b);
    const double primitive = r.Us("BM_OneDnnGemvFloor/" + b), sgemm = r.Us("BM_SgemmGemvFloor/" + b);
    const double floor = primitive > 0 && sgemm > 0 ? std::min(primitive, sgemm) : primitive + sgemm;
    if (sparse > 0 && dense > 0) {
      std::printf("  batch %-2s DSM dense/sparse latency: %7.1fx%s\n", batch, dense / sparse,
                  b == "1" ? (dense / sparse >= 30 ? "  (target >= 30x: met)" : "  (target >= 30x: NOT met)") : "");
    }
    if (dense > 0 && floor > 0) {
      std::printf("  batch %-2s dense / faster oneDNN floor: %4.2fx%s\n", batch, dense / floor,
                  b == "1" ? (dense / floor <= 1.25 ? "  (target <= 1.25x: met)" : "  (target <= 1.25x: NOT met)") : "");
    }
  }
  const double lsh = r.Us("BM_LshTable/1");
  if (lsh > 0) {
    std::printf("  batch 1  LSH table predict:         %6.2f us%s\n", lsh,
                lsh < 5 ? "  (target < 5 us: met)" : "  (target < 5 us: NOT met)");
  }
  PrintPrecisionSummary(r);
}

}  // namespace
}  // namespace sparse

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  sparse::SummaryReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  sparse::PrintSummary(reporter);
  benchmark::Shutdown();
  return 0;
}
