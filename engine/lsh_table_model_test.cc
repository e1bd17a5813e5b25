#include "engine/lsh_table_model.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "gtest/gtest.h"
#include "tests/testing/matchers.h"
#include "tests/testing/random_models.h"
#include "tests/testing/reference_model.h"

namespace sparse {
namespace {

using ::sparse::testing::AllNear;
using ::sparse::testing::LshShape;
using ::sparse::testing::RandomInputs;
using ::sparse::testing::RandomLshTable;
using ::sparse::testing::ReferencePredict;

struct Case {
  HashFamily family;
  int64_t degree;
  int64_t o;
  int64_t d = 8;  // d = 64 with m = 16 makes the projection kernel pack
  int64_t m = 6;
};

class LshTableModelTest : public ::testing::TestWithParam<Case> {};

TEST_P(LshTableModelTest, MatchesReferenceRouteAndFlopsAtEveryBatchSize) {
  const Case c = GetParam();
  LshShape shape{.d = c.d, .o = c.o, .s = 4, .m = c.m, .degree = c.degree, .family = c.family};
  const LshTableWeights w = RandomLshTable(shape, 42);
  absl::StatusOr<std::unique_ptr<LshTableModel>> model = LshTableModel::Create(w);
  ASSERT_TRUE(model.ok()) << model.status();

  const int64_t s = 4, m = c.m, d = c.d, o = c.o;
  const int64_t per_row = c.degree == 0 ? 2 * s * m * d + s * o : 2 * s * m * d + s * 2 * o * (d + 1);
  EXPECT_EQ((*model)->info().flops_per_row, per_row);

  int64_t total_misses = 0;
  for (int64_t rows : {1, 2, 7, 8, 32, 33, 128, 200}) {
    const std::vector<float> x = RandomInputs(rows, d, 1000 + rows);
    std::vector<float> y(rows * o);
    PredictStats stats;
    Route route;
    ASSERT_OK((*model)->Predict(x, rows, absl::MakeSpan(y), &stats, &route));
    Route expected_route;
    const std::vector<float> expected = ReferencePredict(w, x, rows, &expected_route);
    EXPECT_TRUE(AllNear(y, expected)) << "rows=" << rows;
    EXPECT_EQ(route.keys_per_row, s);
    EXPECT_EQ(route.bucket_keys, expected_route.bucket_keys) << "rows=" << rows;
    EXPECT_EQ(route.bucket_missed, expected_route.bucket_missed) << "rows=" << rows;
    EXPECT_EQ(stats.flops, rows * per_row) << "rows=" << rows;
    for (uint8_t missed : route.bucket_missed) total_misses += missed;
  }
  // keep_fraction < 1 leaves some hit keys unstored: the fallback path ran.
  EXPECT_GT(total_misses, 0);
}

INSTANTIATE_TEST_SUITE_P(
    AllFamiliesAndDegrees, LshTableModelTest,
    ::testing::Values(Case{HashFamily::kHyperplane, 0, 1}, Case{HashFamily::kHyperplane, 0, 3},
                      Case{HashFamily::kHyperplane, 1, 1}, Case{HashFamily::kHyperplane, 1, 2},
                      Case{HashFamily::kEuclidean, 0, 1}, Case{HashFamily::kEuclidean, 0, 3},
                      Case{HashFamily::kEuclidean, 1, 1}, Case{HashFamily::kEuclidean, 1, 2},
                      Case{HashFamily::kHyperplane, 0, 1, 64, 16},
                      Case{HashFamily::kEuclidean, 1, 2, 64, 16}),
    [](const ::testing::TestParamInfo<Case>& info) {
      return std::string(HashFamilyName(info.param.family)) + "_delta" +
             std::to_string(info.param.degree) + "_o" + std::to_string(info.param.o) + "_d" +
             std::to_string(info.param.d);
    });

// BF16 and INT8 tables give the same keys (the projections stay FP32), stay
// within the rounding of their values of the reference, and read the bytes
// docs/checkpoint-format.md gives: 4·(s·m·d + s·m) for the projections, and
// per table the bucket's values at the precision's width (+ 4·o scales at
// INT8).
TEST(LshTableModelTest, ReducedPrecisionKeepsTheKeysAndReadsFewerBytes) {
  for (int64_t degree : {0, 1}) {
    const int64_t s = 4, m = 6, d = 8, o = 3;
    const LshTableWeights w =
        RandomLshTable({.d = d, .o = o, .s = s, .m = m, .degree = degree}, 43);
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<LshTableModel> fp32, LshTableModel::Create(w));
    const int64_t per_bucket = degree == 0 ? o : o * (d + 1);
    for (Precision p : {Precision::kFp32, Precision::kBf16, Precision::kInt8}) {
      ASSERT_OK_AND_ASSIGN(std::unique_ptr<LshTableModel> model, LshTableModel::Create(w, p));
      const int64_t bytes = 4 * (s * m * d + s * m) +
                            s * (per_bucket * PrecisionBytes(p) + (p == Precision::kInt8 ? 4 * o : 0));
      EXPECT_EQ(model->info().weight_bytes_per_row, bytes) << PrecisionName(p);
      for (int64_t rows : {1, 9}) {
        const std::vector<float> x = RandomInputs(rows, d, 60 + rows);
        std::vector<float> y(rows * o), y32(rows * o);
        PredictStats stats, stats32;
        Route route, route32;
        ASSERT_OK(model->Predict(x, rows, absl::MakeSpan(y), &stats, &route));
        ASSERT_OK(fp32->Predict(x, rows, absl::MakeSpan(y32), &stats32, &route32));
        EXPECT_EQ(route.bucket_keys, route32.bucket_keys);
        EXPECT_EQ(stats.flops, stats32.flops);
        // The projections: one read per kernel execution (9 rows = 8 + 1:
        // two); each row reads its s buckets.
        const int64_t projection = 4 * (s * m * d + s * m);
        const int64_t executions = rows == 1 ? 1 : 2;
        EXPECT_EQ(stats.weight_bytes,
                  executions * projection + rows * (bytes - projection))
            << PrecisionName(p) << " rows " << rows;
        const std::vector<float> ref = ReferencePredict(w, x, rows);
        float scale = 0;
        for (float v : ref) scale = std::max(scale, std::fabs(v));
        const double tol = p == Precision::kFp32 ? 1e-4 : p == Precision::kBf16 ? 0x1p-6 : 0x1p-4;
        EXPECT_TRUE(AllNear(y, ref, tol * (1 + scale), 0))
            << PrecisionName(p) << " degree " << degree << " rows " << rows;
      }
    }
  }
}

TEST(LshTableModelTest, EveryMissReturnsTheWeightedFallbacks) {
  LshShape shape{.d = 4, .o = 2, .s = 3, .m = 5, .keep_fraction = 0.0};
  const LshTableWeights w = RandomLshTable(shape, 7);
  auto model = LshTableModel::Create(w);
  ASSERT_TRUE(model.ok()) << model.status();
  const std::vector<float> x = RandomInputs(3, 4, 8);
  std::vector<float> y(3 * 2);
  PredictStats stats;
  Route route;
  ASSERT_OK((*model)->Predict(x, 3, absl::MakeSpan(y), &stats, &route));
  for (uint8_t missed : route.bucket_missed) EXPECT_EQ(missed, 1);
  // The routing counters (for metrics): 3 rows x 3 tables, all missed.
  EXPECT_EQ((*model)->Routing().lookups, 9);
  EXPECT_EQ((*model)->Routing().misses, 9);
  for (int64_t r = 0; r < 3; ++r) {
    for (int64_t j = 0; j < 2; ++j) {
      float expected = 0;
      for (int64_t i = 0; i < 3; ++i) expected += w.alpha[i] * w.tables[i].fallback[j];
      EXPECT_NEAR(y[r * 2 + j], expected, 1e-5);
    }
  }
}

TEST(LshTableModelTest, RejectsBadInputsAndKeepsServing) {
  const LshTableWeights w = RandomLshTable(LshShape{}, 3);
  auto model = LshTableModel::Create(w);
  ASSERT_TRUE(model.ok()) << model.status();
  std::vector<float> y(2);
  PredictStats stats;
  std::vector<float> x = RandomInputs(2, 8, 1);
  EXPECT_EQ((*model)->Predict(absl::MakeSpan(x).subspan(0, 15), 2, absl::MakeSpan(y), &stats, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*model)->Predict(x, 0, absl::MakeSpan(y).subspan(0, 0), &stats, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<float> bad = x;
  bad[5] = std::nanf("");
  absl::Status nan = (*model)->Predict(bad, 2, absl::MakeSpan(y), &stats, nullptr);
  EXPECT_EQ(nan.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(nan.message().find("row 0 column 5"), std::string::npos) << nan;
  bad[5] = INFINITY;
  EXPECT_EQ((*model)->Predict(bad, 2, absl::MakeSpan(y), &stats, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_OK((*model)->Predict(x, 2, absl::MakeSpan(y), &stats, nullptr));
}

TEST(LshTableModelTest, CreateRejectsInvalidWeights) {
  LshTableWeights w = RandomLshTable(LshShape{}, 3);
  LshTableWeights unsorted = w;
  ASSERT_GE(unsorted.tables[0].keys.size(), 2u);
  std::swap(unsorted.tables[0].keys[0], unsorted.tables[0].keys[1]);
  EXPECT_EQ(LshTableModel::Create(unsorted).status().code(), absl::StatusCode::kInvalidArgument);
  LshTableWeights too_many_bits = w;
  too_many_bits.num_hashes = 65;
  EXPECT_FALSE(LshTableModel::Create(too_many_bits).ok());
  LshTableWeights nan_value = w;
  nan_value.tables[1].values[0] = std::nanf("");
  absl::Status s = LshTableModel::Create(nan_value).status();
  EXPECT_NE(s.message().find("table.1.values"), std::string::npos) << s;
}

}  // namespace
}  // namespace sparse
