#include "engine/dsm_model.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"

#include "engine/dense_model.h"
#include "gtest/gtest.h"
#include "tests/testing/matchers.h"
#include "tests/testing/random_models.h"
#include "tests/testing/reference_model.h"

namespace sparse {
namespace {

using ::sparse::testing::AllNear;
using ::sparse::testing::DsmShape;
using ::sparse::testing::RandomDense;
using ::sparse::testing::RandomDsm;
using ::sparse::testing::RandomInputs;
using ::sparse::testing::ReferencePredict;

struct Case {
  RouterKind router;
  int64_t blocks;
  Activation activation;
  int64_t o;
  int64_t d = 8;   // d = 64 and k = 64 make the kernels pack their weights
  int64_t k = 16;
};

// FLOPs per row written out from DESIGN.md §1, independently of weights.cc.
int64_t ExpectedFlops(const Case& c, int64_t d, int64_t E, int64_t k, int64_t t) {
  const int64_t L = c.blocks, o = c.o;
  int64_t r = 0;
  while ((int64_t{1} << r) < E) ++r;
  switch (c.router) {
    case RouterKind::kLsh: return L * (2 * r * d + 2 * k * d + 2 * k * o);
    case RouterKind::kHash: return L * (2 * k * d + 2 * k * o);
    case RouterKind::kKmeans: return L * (2 * E * d + 2 * k * d + 2 * k * o);
    case RouterKind::kTopk: return 2 * t * d + L * 2 * k * o;
  }
  return -1;
}

class DsmModelTest : public ::testing::TestWithParam<Case> {};

TEST_P(DsmModelTest, MatchesReferenceRouteAndFlopsAtEveryBatchSize) {
  const Case c = GetParam();
  const int64_t d = c.d, E = 8, k = c.k;
  DsmShape shape{.d = d, .o = c.o, .blocks = c.blocks, .experts = E, .active_units = k,
                 .router = c.router, .activation = c.activation, .topk_block_units = 4 * k};
  const DsmWeights w = RandomDsm(shape, 11);
  absl::StatusOr<std::unique_ptr<DsmModel>> model = DsmModel::Create(w);
  ASSERT_TRUE(model.ok()) << model.status();
  const int64_t per_row = ExpectedFlops(c, d, E, k, w.network.width);
  EXPECT_EQ((*model)->info().flops_per_row, per_row);

  for (int64_t rows : {1, 2, 5, 8, 32, 33, 128, 150}) {
    const std::vector<float> x = RandomInputs(rows, d, 500 + rows);
    std::vector<float> y(rows * c.o);
    PredictStats stats;
    Route route;
    ASSERT_OK((*model)->Predict(x, rows, absl::MakeSpan(y), &stats, &route));
    Route expected_route;
    EXPECT_TRUE(AllNear(y, ReferencePredict(w, x, rows, &expected_route))) << "rows=" << rows;
    EXPECT_EQ(route.expert_ids, expected_route.expert_ids) << "rows=" << rows;
    EXPECT_EQ(stats.flops, rows * per_row) << "rows=" << rows;
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllRouters, DsmModelTest,
    ::testing::Values(Case{RouterKind::kLsh, 1, Activation::kRelu, 1},
                      Case{RouterKind::kLsh, 3, Activation::kRelu, 2},
                      Case{RouterKind::kLsh, 1, Activation::kIdentity, 1},
                      Case{RouterKind::kHash, 1, Activation::kRelu, 1},
                      Case{RouterKind::kHash, 2, Activation::kRelu, 3},
                      Case{RouterKind::kKmeans, 1, Activation::kRelu, 1},
                      Case{RouterKind::kKmeans, 2, Activation::kIdentity, 2},
                      Case{RouterKind::kTopk, 1, Activation::kRelu, 1},
                      Case{RouterKind::kTopk, 2, Activation::kRelu, 2},
                      Case{RouterKind::kTopk, 1, Activation::kIdentity, 1},
                      Case{RouterKind::kLsh, 2, Activation::kRelu, 1, 64, 64},
                      Case{RouterKind::kKmeans, 1, Activation::kRelu, 1, 64, 64},
                      Case{RouterKind::kHash, 1, Activation::kRelu, 1, 64, 64},
                      Case{RouterKind::kTopk, 2, Activation::kRelu, 1, 64, 64}),
    [](const ::testing::TestParamInfo<Case>& info) {
      return std::string(RouterKindName(info.param.router)) + "_L" +
             std::to_string(info.param.blocks) + "_" +
             std::string(ActivationName(info.param.activation)) + "_o" +
             std::to_string(info.param.o) + "_d" + std::to_string(info.param.d);
    });

TEST(DsmModelTest, RoutedRowsUseEveryExpertAndSameInputSameExpert) {
  for (RouterKind router : {RouterKind::kLsh, RouterKind::kHash, RouterKind::kKmeans}) {
    const DsmWeights w = RandomDsm(DsmShape{.router = router}, 5);
    auto model = DsmModel::Create(w);
    ASSERT_TRUE(model.ok()) << model.status();
    const int64_t rows = 512;
    const std::vector<float> x = RandomInputs(rows, 8, 6);
    std::vector<float> y(rows);
    PredictStats stats;
    Route batch;
    ASSERT_OK((*model)->Predict(x, rows, absl::MakeSpan(y), &stats, &batch));
    std::vector<int> seen(8, 0);
    for (int32_t e : batch.expert_ids) ++seen.at(e);
    for (int e = 0; e < 8; ++e) EXPECT_GT(seen[e], 0) << RouterKindName(router) << " expert " << e;
    // The routing counters (for metrics) saw the same rows per expert.
    const RoutingCounts counts = (*model)->Routing();
    ASSERT_EQ(counts.blocks, 1);
    ASSERT_EQ(counts.experts, 8);
    EXPECT_EQ(counts.expert_rows, std::vector<int64_t>(seen.begin(), seen.end()));
    // A row routed alone goes where it went inside the batch.
    for (int64_t r : {0, 17, 511}) {
      std::vector<float> one(x.begin() + r * 8, x.begin() + (r + 1) * 8);
      std::vector<float> y1(1);
      Route single;
      ASSERT_OK((*model)->Predict(one, 1, absl::MakeSpan(y1), &stats, &single));
      EXPECT_EQ(single.expert_ids[0], batch.expert_ids[r]);
      EXPECT_NEAR(y1[0], y[r], 1e-5);
    }
  }
}

// Centroids far from the origin and close together: c·x - |c|²/2 in float
// would round both scores to the same value; the router must still pick
// the nearest centroid.
TEST(DsmModelTest, KmeansPicksNearestCentroidFarFromOrigin) {
  DsmWeights w = RandomDsm({.d = 1, .experts = 2, .active_units = 1, .router = RouterKind::kKmeans}, 3);
  w.router_weight = {1000.0f, 1000.5f};
  auto model = DsmModel::Create(w);
  ASSERT_TRUE(model.ok()) << model.status();
  for (auto [x, expert] : std::vector<std::pair<float, int32_t>>{{1000.3f, 1}, {1000.2f, 0}, {999.0f, 0}, {1e4f, 1}}) {
    std::vector<float> in = {x}, y(1);
    PredictStats stats;
    Route route;
    ASSERT_OK((*model)->Predict(in, 1, absl::MakeSpan(y), &stats, &route));
    EXPECT_EQ(route.expert_ids[0], expert) << "x=" << x;
  }
  w.router_weight = {1e30f, -1e30f};  // |c|² does not fit a float
  EXPECT_EQ(DsmModel::Create(w).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(DsmModelTest, OverflowingInputIsAnErrorAndTheModelKeepsServing) {
  for (RouterKind router : {RouterKind::kTopk, RouterKind::kLsh, RouterKind::kKmeans}) {
    auto model = DsmModel::Create(RandomDsm({.router = router}, 4));
    ASSERT_TRUE(model.ok()) << model.status();
    std::vector<float> huge(8, 3e38f), y(1);
    for (size_t i = 0; i < huge.size(); i += 2) huge[i] = -3e38f;
    PredictStats stats;
    absl::Status s = (*model)->Predict(huge, 1, absl::MakeSpan(y), &stats, nullptr);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << RouterKindName(router);
    EXPECT_NE(s.message().find("too large"), std::string::npos) << s;
    EXPECT_OK((*model)->Predict(RandomInputs(1, 8, 1), 1, absl::MakeSpan(y), &stats, nullptr));
  }
}

TEST(DsmModelTest, CreateRejectsInconsistentShapes) {
  DsmWeights w = RandomDsm(DsmShape{}, 1);
  DsmWeights bad_experts = w;
  bad_experts.num_experts = 6;  // 6 x 16 != 128 units
  absl::Status s = DsmModel::Create(bad_experts).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("experts x active_units"), std::string::npos) << s;
  DsmWeights bad_router = w;
  bad_router.router_bias.pop_back();
  EXPECT_NE(DsmModel::Create(bad_router).status().message().find("router.bias"), std::string::npos);
  DsmWeights not_power_of_two = RandomDsm(DsmShape{.experts = 6}, 1);
  EXPECT_FALSE(DsmModel::Create(not_power_of_two).ok());
}

TEST(DenseModelTest, MatchesReferenceAndCountsFullWidthFlops) {
  for (Activation act : {Activation::kRelu, Activation::kIdentity}) {
    const DenseWeights w = RandomDense(12, 300, 3, act, 9);
    auto model = DenseModel::Create(w);
    ASSERT_TRUE(model.ok()) << model.status();
    for (int64_t rows : {1, 9, 128, 131}) {
      const std::vector<float> x = RandomInputs(rows, 12, rows);
      std::vector<float> y(rows * 3);
      PredictStats stats;
      ASSERT_OK((*model)->Predict(x, rows, absl::MakeSpan(y), &stats, nullptr));
      EXPECT_TRUE(AllNear(y, ReferencePredict(w, x, rows))) << "rows=" << rows;
      EXPECT_EQ(stats.flops, rows * (2 * 300 * 12 + 2 * 300 * 3));
    }
  }
}

// Executions of a kernel over g rows (matmul_kernel.h): full 128-row chunks,
// then one per set bit of the rest; a kernel with one output (sgemm over
// every row) reads its weights once per call.
int64_t Reads(int64_t g, int64_t n_outputs) {
  if (n_outputs == 1) return 1;
  return g / 128 + __builtin_popcountll(static_cast<uint64_t>(g % 128));
}

// Weight bytes written out from docs/checkpoint-format.md ("Bytes read"),
// for the routed cases with o < 52 (top slices stay FP32 there) and k >= 52
// (bottom slices run at the precision): per call a0 (4o); per 128-row
// chunk the router, 4·(R·d + R) with R its outputs; per (block, expert)
// group of g rows, Reads(g) x (k·d·e + 4k [+ 4k scales at INT8]) and
// Reads(g, o) x 4·k·o.
int64_t ExpectedWeightBytes(const DsmWeights& w, Precision precision, const Route& route,
                            int64_t rows) {
  const int64_t d = w.network.input_dim, o = w.network.output_dim, k = w.active_units;
  const int64_t L = w.num_blocks, E = w.num_experts;
  const int64_t e = PrecisionBytes(precision);
  const int64_t bottom = k * d * e + 4 * k + (precision == Precision::kInt8 ? 4 * k : 0);
  const int64_t top = 4 * k * o;
  int64_t router_outputs = 0;
  if (w.router == RouterKind::kLsh) router_outputs = L * w.RouterBits();
  if (w.router == RouterKind::kKmeans) router_outputs = L * E;
  int64_t bytes = 4 * o;
  for (int64_t r0 = 0; r0 < rows; r0 += 128) {
    const int64_t n = std::min<int64_t>(128, rows - r0);
    if (router_outputs > 0) {
      bytes += Reads(n, router_outputs) * 4 * (router_outputs * d + router_outputs);
    }
    for (int64_t l = 0; l < L; ++l) {
      std::vector<int64_t> group(E, 0);
      for (int64_t r = r0; r < r0 + n; ++r) ++group[route.expert_ids[r * L + l]];
      for (int64_t g : group) {
        if (g > 0) bytes += Reads(g, k) * bottom + Reads(g, o) * top;
      }
    }
  }
  return bytes;
}

// BF16 and INT8 route every row as FP32 does (routers stay FP32), stay
// close to the float64 reference, and count the bytes the formula gives,
// at batch 1 and in batches. Tolerance: the kernels' own bounds are held in
// matmul_kernel_test; here |y - ref| <= tol · (1 + max |ref|) with tol 2^-6
// (BF16) and 2^-4 (INT8) catches a wrong slice or scale, which errs by the
// output's whole size.
TEST(DsmModelTest, ReducedPrecisionRoutesAsFp32AndCountsTheDocumentedBytes) {
  for (RouterKind router : {RouterKind::kLsh, RouterKind::kKmeans, RouterKind::kHash}) {
    const DsmWeights w = RandomDsm({.d = 64, .o = 2, .blocks = 2, .experts = 8,
                                    .active_units = 64, .router = router},
                                   31);
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<DsmModel> fp32, DsmModel::Create(w));
    for (Precision precision : {Precision::kFp32, Precision::kBf16, Precision::kInt8}) {
      ASSERT_OK_AND_ASSIGN(std::unique_ptr<DsmModel> model, DsmModel::Create(w, precision));
      EXPECT_EQ(model->info().precision, precision);
      const std::string what =
          absl::StrCat(RouterKindName(router), " ", PrecisionName(precision));
      for (int64_t rows : {1, 3, 32, 150}) {
        const std::vector<float> x = RandomInputs(rows, 64, 700 + rows);
        std::vector<float> y(rows * 2), y32(rows * 2);
        PredictStats stats, stats32;
        Route route, route32;
        ASSERT_OK(model->Predict(x, rows, absl::MakeSpan(y), &stats, &route));
        ASSERT_OK(fp32->Predict(x, rows, absl::MakeSpan(y32), &stats32, &route32));
        EXPECT_EQ(route.expert_ids, route32.expert_ids) << what << " rows " << rows;
        EXPECT_EQ(stats.flops, stats32.flops) << what;
        EXPECT_EQ(stats.weight_bytes, ExpectedWeightBytes(w, precision, route, rows))
            << what << " rows " << rows;
        if (rows == 1) {
          EXPECT_EQ(stats.weight_bytes, model->info().weight_bytes_per_row) << what;
        }
        const std::vector<float> ref = ReferencePredict(w, x, rows);
        float scale = 0;
        for (float v : ref) scale = std::max(scale, std::fabs(v));
        const double tol = precision == Precision::kInt8 ? 0x1p-4 : 0x1p-6;
        EXPECT_TRUE(AllNear(y, ref, precision == Precision::kFp32 ? 1e-4 : tol * (1 + scale), 0))
            << what << " rows " << rows;
      }
    }
  }
}

TEST(DenseModelTest, ReducedPrecisionIsCloseAndReadsHalfOrAQuarter) {
  const DenseWeights w = RandomDense(256, 512, 64, Activation::kRelu, 9);
  for (Precision precision : {Precision::kFp32, Precision::kBf16, Precision::kInt8}) {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<DenseModel> model, DenseModel::Create(w, precision));
    const int64_t e = PrecisionBytes(precision), scales = precision == Precision::kInt8 ? 4 : 0;
    // B [512, 256] and A [64, 512] (64 outputs: not padded, so reduced too),
    // each with its biases and, at INT8, one scale per output.
    const int64_t per_row = 512 * 256 * e + 512 * (4 + scales) + 64 * 512 * e + 64 * (4 + scales);
    EXPECT_EQ(model->info().weight_bytes_per_row, per_row) << PrecisionName(precision);
    for (int64_t rows : {1, 5}) {
      const std::vector<float> x = RandomInputs(rows, 256, 40 + rows);
      std::vector<float> y(rows * 64);
      PredictStats stats;
      ASSERT_OK(model->Predict(x, rows, absl::MakeSpan(y), &stats, nullptr));
      EXPECT_EQ(stats.weight_bytes, Reads(rows, 2) * per_row) << PrecisionName(precision);
      const std::vector<float> ref = ReferencePredict(w, x, rows);
      float scale = 0;
      for (float v : ref) scale = std::max(scale, std::fabs(v));
      const double tol = precision == Precision::kInt8 ? 0x1p-4 : 0x1p-6;
      EXPECT_TRUE(AllNear(y, ref, precision == Precision::kFp32 ? 1e-4 : tol * (1 + scale), 0))
          << PrecisionName(precision) << " rows " << rows;
    }
  }
}

}  // namespace
}  // namespace sparse
