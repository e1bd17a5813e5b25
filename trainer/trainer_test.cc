#include "trainer/trainer.h"

#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "model_store/checkpoint.h"
#include "tests/testing/matchers.h"
#include "tests/testing/temp_dir.h"

namespace sparse {
namespace {

namespace fs = std::filesystem;

// The paper's random polynomial (d=8, D=4), at a quarter of its data size.
struct PolyData {
  Dataset train, test;
};
const PolyData& Poly() {
  static const PolyData* data = [] {
    auto f = TargetFunction::Create({.kind = SyntheticKind::kPolynomial, .d = 8, .degree = 4, .seed = 1});
    auto* d = new PolyData{SampleDataset(**f, 8, 1 << 14, 11), SampleDataset(**f, 8, 1 << 12, 12)};
    return d;
  }();
  return *data;
}

TrainResult MustTrain(const TrainOptions& options, const PolyData& data = Poly()) {
  absl::StatusOr<TrainResult> r = Train(data.train, data.test, options);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *std::move(r) : TrainResult{};
}

// The paper's qualitative results (section 5), on a small seeded case.
TEST(TrainerTest, LshTableWith2048BucketsBeatsItsDenseTwin) {
  TrainResult r = MustTrain({.kind = ModelKind::kLshTable, .tables = 8, .hashes = 11});
  EXPECT_EQ(r.sparse.activated_units, 8);
  EXPECT_EQ(r.dense.activated_units, 8);  // same activated units
  EXPECT_LT(r.sparse.test_mse, r.dense.test_mse);
}

TEST(TrainerTest, LshRoutedDsmBeatsItsDenseTwinAndTheRandomHashDsm) {
  TrainResult lsh = MustTrain({.kind = ModelKind::kDsm, .router = RouterKind::kLsh, .experts = 16,
                               .active_units = 64});
  TrainResult hash = MustTrain({.kind = ModelKind::kDsm, .router = RouterKind::kHash, .experts = 16,
                                .active_units = 64});
  EXPECT_EQ(lsh.dense.activated_units, 64);
  EXPECT_LT(lsh.sparse.test_mse, lsh.dense.test_mse);
  EXPECT_GT(hash.sparse.test_mse, lsh.sparse.test_mse);
  // The sparse model does no more arithmetic per row than 2x its twin.
  EXPECT_LT(lsh.sparse.flops_per_row, 2 * lsh.dense.flops_per_row);
}

TEST(TrainerTest, EveryKindTrainsAndFitsBetterThanTheMean) {
  std::vector<TrainOptions> all = {
      {.kind = ModelKind::kLshTable, .tables = 4, .hashes = 8, .lsh_degree = 1},
      {.kind = ModelKind::kLshTable, .tables = 4, .hashes = 4, .family = HashFamily::kEuclidean},
      {.kind = ModelKind::kDsm, .router = RouterKind::kKmeans, .experts = 8, .active_units = 32},
      {.kind = ModelKind::kDsm, .router = RouterKind::kLsh, .experts = 8, .active_units = 16, .blocks = 2},
      {.kind = ModelKind::kDsm, .router = RouterKind::kTopk, .active_units = 32, .topk_width = 256},
      {.kind = ModelKind::kDsm, .router = RouterKind::kTopk, .active_units = 32, .topk_width = 256,
       .closed_form_limit = 128, .epochs = 3, .learning_rate = 1e-2},
  };
  double variance = 0, mean = 0;
  for (float v : Poly().test.y) mean += v;
  mean /= Poly().test.rows;
  for (float v : Poly().test.y) variance += (v - mean) * (v - mean);
  variance /= Poly().test.rows;
  for (const TrainOptions& o : all) {
    TrainResult r = MustTrain(o);
    SCOPED_TRACE(r.sparse.description + " / " + r.sparse.solver);
    EXPECT_LT(r.sparse.test_mse, 0.8 * variance);
    EXPECT_LT(r.dense.test_mse, variance);
    EXPECT_FALSE(r.sparse.solver.empty());
  }
  // Wider than closed_form_limit: Adam, and the summary says so.
  TrainResult adam = MustTrain(all.back());
  EXPECT_NE(adam.sparse.solver.find("Adam"), std::string::npos) << adam.sparse.solver;
}

// What the trainer evaluated is what a server loading the checkpoint computes.
TEST(TrainerTest, PublishedCheckpointReproducesTheReportedMse) {
  const testing::TempDir repo("trainer_test");
  int version = 0;
  for (const TrainOptions& o : std::vector<TrainOptions>{
           {.kind = ModelKind::kLshTable, .tables = 4, .hashes = 9},
           {.kind = ModelKind::kLshTable, .tables = 2, .hashes = 5, .lsh_degree = 1},
           {.kind = ModelKind::kDsm, .router = RouterKind::kKmeans, .experts = 8, .active_units = 16},
           {.kind = ModelKind::kDsm, .router = RouterKind::kHash, .experts = 4, .active_units = 16},
           {.kind = ModelKind::kDsm, .router = RouterKind::kTopk, .active_units = 16, .topk_width = 64}}) {
    TrainResult r = MustTrain(o);
    ++version;
    ASSERT_OK(WriteCheckpoint((repo / "m").string(), version, r.checkpoint));
    absl::StatusOr<LoadedModel> loaded = LoadCheckpoint((repo / "m" / std::to_string(version)).string());
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    absl::StatusOr<double> sparse = EvaluateMse(*loaded->sparse, Poly().test);
    absl::StatusOr<double> dense = EvaluateMse(*loaded->dense, Poly().test);
    ASSERT_TRUE(sparse.ok() && dense.ok());
    EXPECT_NEAR(*sparse, r.sparse.test_mse, 1e-6 * r.sparse.test_mse) << r.sparse.description;
    EXPECT_NEAR(*dense, r.dense.test_mse, 1e-6 * r.dense.test_mse);
    EXPECT_FALSE(loaded->dense_cost_only);
  }
}

// A checkpoint stored at BF16 or INT8, served at its precision, gives the
// test MSE the trainer recorded for that precision; routes never change
// (routers stay FP32), and the reduced MSE stays near the float32 one.
TEST(TrainerTest, ReducedPrecisionCheckpointsServeTheRecordedMse) {
  const testing::TempDir repo("trainer_precision_test");
  int version = 0;
  for (Precision storage : {Precision::kFp32, Precision::kBf16, Precision::kInt8}) {
    for (RouterKind router : {RouterKind::kLsh, RouterKind::kKmeans}) {
      TrainResult r = MustTrain({.kind = ModelKind::kDsm, .router = router, .experts = 8,
                                 .active_units = 64, .precision = storage});
      EXPECT_EQ(r.checkpoint.tensor_precision, storage);
      ++version;
      ASSERT_OK(WriteCheckpoint((repo / "m").string(), version, r.checkpoint));
      for (Precision served : {Precision::kBf16, Precision::kInt8}) {
        const std::string what = absl::StrCat(RouterKindName(router), " stored ",
                                              PrecisionName(storage), " served ",
                                              PrecisionName(served));
        ASSERT_EQ(r.sparse.at.count(served), 1u) << what;
        EXPECT_EQ(r.sparse.at[served].routes_changed, 0.0) << what;
        LoadOptions options;
        options.precision = served;
        ASSERT_OK_AND_ASSIGN(
            LoadedModel loaded,
            LoadCheckpoint((repo / "m" / std::to_string(version)).string(), options));
        ASSERT_OK_AND_ASSIGN(double sparse, EvaluateMse(*loaded.sparse, Poly().test));
        ASSERT_OK_AND_ASSIGN(double dense, EvaluateMse(*loaded.dense, Poly().test));
        EXPECT_NEAR(sparse, r.sparse.at[served].test_mse, 1e-6 * sparse) << what;
        EXPECT_NEAR(dense, r.dense.at[served].test_mse, 1e-6 * dense) << what;
        // Measured on this data: within 10% of the float32 MSE (BF16 and INT8
        // add about 1e-3 relative error per output here, well below the fit's).
        EXPECT_LT(std::fabs(sparse - r.sparse.test_mse), 0.1 * r.sparse.test_mse) << what;
      }
    }
  }
}

TEST(TrainerTest, SameSeedSameModel) {
  const TrainOptions o{.kind = ModelKind::kDsm, .router = RouterKind::kLsh, .experts = 8, .active_units = 16, .seed = 5};
  TrainResult a = MustTrain(o), b = MustTrain(o);
  EXPECT_EQ(a.sparse.test_mse, b.sparse.test_mse);
  EXPECT_EQ(std::get<DsmWeights>(a.checkpoint.sparse).network.top_weight,
            std::get<DsmWeights>(b.checkpoint.sparse).network.top_weight);
  TrainOptions other = o;
  other.seed = 6;
  EXPECT_NE(MustTrain(other).sparse.test_mse, a.sparse.test_mse);
}

TEST(TrainerTest, ClassificationTargetsReportAccuracy) {
  // Class = sign of the first input: any sensible model gets most right.
  PolyData data;
  for (Dataset* part : {&data.train, &data.test}) {
    *part = Poly().train;
    for (int64_t r = 0; r < part->rows; ++r) part->y[r] = part->x[r * 8] > 0 ? 1.0f : 0.0f;
  }
  TrainResult r = MustTrain({.kind = ModelKind::kDsm, .router = RouterKind::kKmeans, .experts = 4,
                             .active_units = 16}, data);
  EXPECT_TRUE(r.sparse.classification);
  EXPECT_GT(r.sparse.test_accuracy, 0.9);
}

TEST(TrainerTest, RejectsOptionsThatDoNotFit) {
  EXPECT_EQ(Train(Poly().train, Poly().test, {.kind = ModelKind::kDsm, .router = RouterKind::kLsh, .experts = 6})
                .status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::Status huge = Train(Poly().train, Poly().test,
                            {.kind = ModelKind::kDsm, .experts = 1 << 20, .active_units = 4096}).status();
  EXPECT_EQ(huge.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(huge.message().find("above 2^31"), std::string::npos) << huge;
  Dataset other = Poly().test;
  other.d = 7;
  EXPECT_FALSE(Train(Poly().train, other, {}).ok());
}

}  // namespace
}  // namespace sparse
