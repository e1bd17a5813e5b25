// The Python example in docs/ writes a checkpoint from the documented format
// alone; the engine must load it and reproduce the predictions the script
// computed in plain Python.
#include <cstdlib>
#include <filesystem>
#include <fstream>

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

// sparse_serve.export writes format_version 2 manifests whose per-part sums
// a shard checks as it reads: shards of a Python-written DSM and LSH model
// load from their own ranges (that they add up to the whole model is
// shard_checkpoint_test's).
TEST(PythonWriterTest, ExportsAreReadByShardsAgainstTheirPartSums) {
  const testing::TempDir dir("python_writer_shards");
  const std::string script = std::string(R"PY(
import importlib.util, sys
import numpy as np
spec = importlib.util.spec_from_file_location("export", sys.argv[1])
export = importlib.util.module_from_spec(spec)
spec.loader.exec_module(export)
rng = np.random.default_rng(3)
d, o, L, E, k = 8, 2, 2, 8, 4
t, r = L * E * k, 3
f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)
meta = {"format_version": "1", "kind": "dsm", "input_dim": str(d), "output_dim": str(o), "width": str(t),
        "activation": "relu", "router": "lsh", "blocks": str(L), "experts": str(E), "active_units": str(k)}
model = export.safetensors(meta, [("bottom.weight", f32(t, d)), ("bottom.bias", f32(t)),
                                  ("top.weight", f32(o, t)), ("top.bias", f32(o)),
                                  ("router.weight", f32(L * r, d)), ("router.bias", f32(L * r) * 0.1)])
export.write_version(sys.argv[2] + "/dsm", model, version=1)
s, m = 6, 5
tables = [(np.arange(0, 32, 3), f32(11, o), f32(o)) for _ in range(s)]
export.export_lsh_table(sys.argv[2] + "/lsh", f32(s * m, d), f32(s * m) * 0.1, tables, version=1)
)PY");
  const std::string script_path = (dir / "write.py").string();
  {
    std::ofstream(script_path) << script;
  }
  const std::string command = std::string("/usr/bin/python3 ") + script_path + " " +
                              SPARSE_SOURCE_DIR + "/client/python/sparse_serve/export.py " +
                              dir.string();
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  for (const char* name : {"dsm", "lsh"}) {
    SCOPED_TRACE(name);
    const std::string version = (dir / name / "1").string();
    ASSERT_OK(LoadCheckpoint(version).status());
    for (int i = 0; i < 4; ++i) {
      LoadOptions options;
      options.part = {.role = ModelPart::Role::kShard, .shard = {.index = i, .count = 4}};
      absl::StatusOr<Checkpoint> shard = ReadCheckpoint(version, options);
      ASSERT_OK(shard.status());
      EXPECT_LT(shard->bytes_read, std::filesystem::file_size(std::filesystem::path(version) /
                                                              kModelFile))
          << "shard " << i << " reads its ranges only";
    }
    LoadOptions front;
    front.part = {.role = ModelPart::Role::kFront, .shard = {.index = 0, .count = 4}};
    EXPECT_OK(ReadCheckpoint(version, front).status());
  }
}

}  // namespace
}  // namespace sparse
