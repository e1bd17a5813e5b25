// Many threads predicting on one model get exactly the single-threaded
// results: per-thread streams and scratch keep calls independent.
#include <memory>
#include <thread>
#include <vector>

#include "engine/dense_model.h"
#include "engine/dsm_model.h"
#include "engine/lsh_table_model.h"
#include "gtest/gtest.h"
#include "tests/testing/matchers.h"
#include "tests/testing/random_models.h"

namespace sparse {
namespace {

using ::sparse::testing::RandomInputs;

void ExpectIdenticalUnderEightThreads(const Model& model) {
  const int64_t d = model.info().input_dim, o = model.info().output_dim;
  constexpr int kThreads = 8, kIterations = 40;
  // Each thread uses several batch sizes so scratch buffers grow mid-run.
  const std::vector<int64_t> batch_sizes = {1, 3, 32, 77};
  std::vector<std::vector<float>> inputs, expected;
  for (size_t b = 0; b < batch_sizes.size(); ++b) {
    inputs.push_back(RandomInputs(batch_sizes[b], d, 900 + b));
    std::vector<float> y(batch_sizes[b] * o);
    PredictStats stats;
    ASSERT_OK(model.Predict(inputs[b], batch_sizes[b], absl::MakeSpan(y), &stats, nullptr));
    expected.push_back(y);
  }
  std::vector<int> mismatches(kThreads, 0), failures(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kIterations; ++i) {
        const size_t b = (t + i) % batch_sizes.size();
        std::vector<float> y(batch_sizes[b] * o);
        PredictStats stats;
        if (!model.Predict(inputs[b], batch_sizes[b], absl::MakeSpan(y), &stats, nullptr).ok()) {
          ++failures[t];
        } else if (y != expected[b]) {  // bitwise identical, not merely close
          ++mismatches[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(failures[t], 0) << "thread " << t;
    EXPECT_EQ(mismatches[t], 0) << "thread " << t;
  }
}

TEST(ConcurrencyTest, LshTableGivesSingleThreadedResultsFromEightThreads) {
  for (int64_t degree : {0, 1}) {
    auto model = LshTableModel::Create(
        testing::RandomLshTable({.d = 16, .o = 2, .s = 8, .m = 8, .degree = degree}, 1));
    ASSERT_TRUE(model.ok()) << model.status();
    ExpectIdenticalUnderEightThreads(**model);
  }
}

TEST(ConcurrencyTest, DsmGivesSingleThreadedResultsFromEightThreads) {
  for (RouterKind router : {RouterKind::kLsh, RouterKind::kHash, RouterKind::kKmeans, RouterKind::kTopk}) {
    auto model = DsmModel::Create(testing::RandomDsm(
        {.d = 32, .o = 2, .blocks = 2, .experts = 16, .active_units = 32, .router = router}, 2));
    ASSERT_TRUE(model.ok()) << model.status();
    ExpectIdenticalUnderEightThreads(**model);
  }
}

TEST(ConcurrencyTest, DenseGivesSingleThreadedResultsFromEightThreads) {
  auto model = DenseModel::Create(testing::RandomDense(32, 512, 2, Activation::kRelu, 3));
  ASSERT_TRUE(model.ok()) << model.status();
  ExpectIdenticalUnderEightThreads(**model);
}

}  // namespace
}  // namespace sparse
