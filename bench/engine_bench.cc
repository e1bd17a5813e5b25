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
//   build/bench/engine_bench [--benchmark_min_time=0.5]
#include <unistd.h>

#include <algorithm>
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

// Console output as usual, plus the per-run real times for the summary.
class SummaryReporter : public benchmark::ConsoleReporter {
 public:
  SummaryReporter() : ConsoleReporter(isatty(STDOUT_FILENO) ? OO_ColorTabular : OO_Tabular) {}
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      if (run.run_type == Run::RT_Iteration && !run.error_occurred) {
        times_us_[run.benchmark_name()] = run.GetAdjustedRealTime();
      }
    }
    ConsoleReporter::ReportRuns(runs);
  }
  double Us(const std::string& name) const {
    auto it = times_us_.find(name);
    return it == times_us_.end() ? 0.0 : it->second;
  }

 private:
  std::map<std::string, double> times_us_;
};

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
