// The Python example in docs/ writes a checkpoint from the documented format
// alone; the engine must load it and reproduce the predictions the script
// computed in plain Python.
#include <cstdlib>
#include <filesystem>

#include "gtest/gtest.h"
#include "model_store/checkpoint.h"
#include "nlohmann/json.hpp"
#include "tests/testing/matchers.h"
#include "tests/testing/temp_dir.h"

namespace sparse {
namespace {

namespace fs = std::filesystem;

TEST(PythonWriterTest, DocumentedFormatWrittenFromPythonLoadsAndPredictsTheSame) {
  const testing::TempDir dir("python_writer_test");
  const std::string command = std::string("/usr/bin/python3 ") + SPARSE_SOURCE_DIR +
                              "/docs/examples/write_dsm_checkpoint.py " + dir.string() + " 3";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  absl::StatusOr<LoadedModel> loaded = LoadCheckpoint((dir / "3").string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->sparse->info().kind, ModelKind::kDsm);
  EXPECT_TRUE(loaded->dense_cost_only);

  const auto inputs = nlohmann::json::parse(loaded->info.at("example_inputs"));
  const auto outputs = nlohmann::json::parse(loaded->info.at("example_outputs"));
  ASSERT_EQ(inputs.size(), 16u);
  std::vector<float> x, expected;
  for (const auto& row : inputs) for (double v : row) x.push_back(static_cast<float>(v));
  for (const auto& row : outputs) for (double v : row) expected.push_back(static_cast<float>(v));
  std::vector<float> y(expected.size());
  PredictStats stats;
  ASSERT_OK(loaded->sparse->Predict(x, 16, absl::MakeSpan(y), &stats, nullptr));
  EXPECT_TRUE(testing::AllNear(y, expected, 1e-5, 1e-4));
}

}  // namespace
}  // namespace sparse
