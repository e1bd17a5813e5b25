// The loader of the model life cycle: one version from its directory to a
// warmed-up Servable, or a clear error (never a crash, never a path).
#include "model_store/model_loader.h"

#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/matchers.h"
#include "tests/testing/random_models.h"
#include "tests/testing/temp_dir.h"

namespace sparse {
namespace {

using ::sparse::testing::TempDir;
using ::testing::HasSubstr;
using ::testing::Not;

TEST(LoadServableTest, LoadsAndWarmsUpBothPaths) {
  TempDir root("model_loader_test");
  Checkpoint checkpoint;
  checkpoint.sparse = testing::RandomDsm({.d = 8, .o = 2, .experts = 8, .active_units = 16}, 1);
  checkpoint.dense = testing::RandomDense(8, 32, 2, Activation::kRelu, 2);
  ASSERT_OK(WriteCheckpoint((root / "m").string(), 3, checkpoint));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Servable> servable,
                       LoadServable("m", 3, (root / "m" / "3").string(),
                                    LoaderOptions{.max_batch_rows = 16, .workers = 2}));
  EXPECT_EQ(servable->model, "m");
  EXPECT_EQ(servable->version, 3);
  ASSERT_NE(servable->loaded.sparse, nullptr);
  ASSERT_NE(servable->loaded.dense, nullptr);
  EXPECT_EQ(servable->loaded.sparse->info().input_dim, 8);
  // The warm-up ran rows through the router (1 + 2 + 4 + 8 + 16 of them).
  int64_t routed = 0;
  for (int64_t n : servable->warmup_routing.expert_rows) routed += n;
  EXPECT_EQ(routed, 31);
}

TEST(LoadServableTest, OverTheBudgetOrCorruptIsAnErrorWithoutAPath) {
  TempDir root("model_loader_test");
  Checkpoint checkpoint;
  checkpoint.sparse = testing::RandomLshTable({.d = 8}, 1);
  ASSERT_OK(WriteCheckpoint((root / "m").string(), 1, checkpoint));
  const std::string dir = (root / "m" / "1").string();
  const absl::Status over =
      LoadServable("m", 1, dir, LoaderOptions{.max_batch_rows = 16, .workers = 1, .max_model_bytes = 1024})
          .status();
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted) << over;
  EXPECT_THAT(std::string(over.message()), HasSubstr("--max_model_bytes"));

  std::ofstream(root / "m" / "1" / kModelFile, std::ios::binary | std::ios::trunc) << "junk";
  const absl::Status corrupt = LoadServable("m", 1, dir, LoaderOptions{}).status();
  EXPECT_FALSE(corrupt.ok());
  EXPECT_THAT(std::string(corrupt.message()), Not(HasSubstr(root.string())));
}

}  // namespace
}  // namespace sparse
