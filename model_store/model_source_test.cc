// The source of the model life cycle: what the repository on disk asks to
// serve, read without loading anything.
#include "model_store/model_source.h"

#include <sys/stat.h>

#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/matchers.h"
#include "tests/testing/temp_dir.h"

namespace sparse {
namespace {

namespace fs = std::filesystem;
using ::sparse::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

sparse::v1::VersionPolicy Policy(const std::string& text) {
  absl::StatusOr<sparse::v1::ModelConfig> config =
      ParseModelConfig(text.empty() ? "" : "version_policy { " + text + " }");
  EXPECT_TRUE(config.ok()) << config.status();
  return config->version_policy();
}

TEST(SelectVersionsTest, EachPolicyAspiresToItsVersionsNewestFirst) {
  const std::vector<int64_t> on_disk = {5, 3, 2, 1};
  AspiredVersions latest1 = SelectVersions(Policy(""), on_disk);  // the default
  EXPECT_THAT(latest1.candidates, ElementsAre(5, 3, 2, 1));
  EXPECT_EQ(latest1.count, 1u);  // the newest that loads; older ones stand by
  EXPECT_EQ(SelectVersions(Policy("latest { num_versions: 2 }"), on_disk).count, 2u);
  AspiredVersions all = SelectVersions(Policy("all {}"), on_disk);
  EXPECT_EQ(all.count, 4u);
  AspiredVersions specific = SelectVersions(Policy("specific { versions: [1, 3, 9] }"), on_disk);
  EXPECT_THAT(specific.candidates, ElementsAre(3, 1));  // 9 is not on disk
  EXPECT_EQ(specific.count, 2u);
  EXPECT_THAT(SelectVersions(Policy(""), {}).candidates, IsEmpty());
}

TEST(ParseModelConfigTest, ErrorsNameTheLineAndColumnAndTheBadValue) {
  EXPECT_THAT(std::string(ParseModelConfig("version_policy {\n  latest { num_versions: x }\n}")
                              .status()
                              .message()),
              HasSubstr("line 2 column"));
  EXPECT_THAT(std::string(ParseModelConfig("version_policy { latest { num_versions: 0 } }")
                              .status()
                              .message()),
              HasSubstr("num_versions must be >= 1, got 0"));
  EXPECT_THAT(std::string(ParseModelConfig("dynamic_batching { max_queue_delay_us: -1 }")
                              .status()
                              .message()),
              HasSubstr("max_queue_delay_us"));
}

TEST(RepositorySourceTest, ListsModelsAndCanonicalVersionDirectoriesOnly) {
  TempDir root("model_source_test");
  for (const char* dir : {"m/1", "m/7", "m/007", "m/+2", "m/x", "n/1", ".tmp-m/1"}) {
    fs::create_directories(root / dir);
  }
  std::ofstream(root / "m" / "8") << "a file, not a version";
  std::ofstream(root / "file") << "not a model";
  const RepositorySource source(root.string());
  std::error_code ec;
  std::vector<std::string> models = source.ListModels(&ec);
  std::sort(models.begin(), models.end());
  EXPECT_THAT(models, ElementsAre("m", "n"));
  EXPECT_THAT(source.ListVersions("m", &ec), ElementsAre(7, 1));
  EXPECT_FALSE(ec);
  EXPECT_TRUE(source.HasModel("m"));
  EXPECT_FALSE(source.HasModel("file"));
  EXPECT_FALSE(source.HasModel("../m"));
  source.ListVersions("gone", &ec);
  EXPECT_TRUE(ec);
}

TEST(RepositorySourceTest, AVersionLeadingOutsideTheRootIsNotInside) {
  TempDir root("model_source_test");
  TempDir elsewhere("model_source_elsewhere");
  fs::create_directories(root / "m" / "1");
  fs::create_directories(root / "m" / "2");
  fs::create_directories(elsewhere / "3");
  fs::create_directory_symlink(elsewhere / "3", root / "m" / "3");
  fs::create_symlink(elsewhere / "3", root / "m" / "2" / "model.safetensors");
  const RepositorySource source(root.string());
  EXPECT_TRUE(source.InsideRoot(source.VersionDir("m", 1)));
  EXPECT_FALSE(source.InsideRoot(source.VersionDir("m", 2)));  // a file links out
  EXPECT_FALSE(source.InsideRoot(source.VersionDir("m", 3)));  // the directory does
}

TEST(RepositorySourceTest, ABadConfigKeepsThePreviousOneAndIsLoggedOnce) {
  TempDir root("model_source_test");
  fs::create_directories(root / "m" / "1");
  const RepositorySource source(root.string());
  std::vector<std::string> log;

  ModelState first;  // no config.pbtxt: the defaults
  source.ReadModelConfig("m", nullptr, &first, &log);
  EXPECT_THAT(first.config_error, IsEmpty());
  EXPECT_FALSE(first.config.has_dynamic_batching());

  std::ofstream(root / "m" / "config.pbtxt") << "dynamic_batching { max_batch_rows: 8 }\n";
  ModelState second;
  source.ReadModelConfig("m", &first, &second, &log);
  EXPECT_EQ(second.config.dynamic_batching().max_batch_rows(), 8);
  ASSERT_EQ(log.size(), 1u);
  EXPECT_THAT(log.back(), HasSubstr("new config.pbtxt applied"));

  std::ofstream(root / "m" / "config.pbtxt") << "dynamic_batching { max_batch_rows: \n";
  ModelState third;
  source.ReadModelConfig("m", &second, &third, &log);
  EXPECT_THAT(third.config_error, HasSubstr("line"));
  EXPECT_EQ(third.config.dynamic_batching().max_batch_rows(), 8);  // the previous one stays
  ASSERT_EQ(log.size(), 2u);
  EXPECT_THAT(log.back(), HasSubstr("the previous config stays"));
  ModelState fourth;
  source.ReadModelConfig("m", &third, &fourth, &log);
  EXPECT_EQ(log.size(), 2u) << "the same error is logged once";
  EXPECT_EQ(fourth.config.dynamic_batching().max_batch_rows(), 8);
}

TEST(RepositorySourceTest, AFifoAsConfigIsRefusedWithoutBlocking) {
  TempDir root("model_source_test");
  fs::create_directories(root / "m" / "1");
  ASSERT_EQ(::mkfifo((root / "m" / "config.pbtxt").c_str(), 0600), 0);
  const RepositorySource source(root.string());
  std::vector<std::string> log;
  ModelState state;
  source.ReadModelConfig("m", nullptr, &state, &log);  // returns: no writer is waited for
  EXPECT_THAT(state.config_error, HasSubstr("config.pbtxt"));
  EXPECT_THAT(state.config_error, ::testing::Not(HasSubstr(root.string())));  // no paths
}

// The issue's example, as Seldon Core 2 would leave it in <repo>/mymodel/.
constexpr char kTritonExample[] = R"(name: "mymodel"
max_batch_size: 64
input [ { name: "input" data_type: TYPE_FP32 dims: [ 96 ] } ]
output [ { name: "output" data_type: TYPE_FP32 dims: [ 1 ] } ]
dynamic_batching { max_queue_delay_microseconds: 200 }
instance_group [ { count: 1 kind: KIND_CPU } ]
version_policy: { latest: { num_versions: 1 } }
)";

std::string TritonError(const std::string& text, const std::string& model = "mymodel") {
  absl::StatusOr<sparse::v1::ModelConfig> config = ParseModelConfig(text, model);
  EXPECT_FALSE(config.ok()) << text;
  return config.ok() ? "" : std::string(config.status().message());
}

TEST(ParseModelConfigTest, TritonsSchemaMapsToTodaysForm) {
  absl::StatusOr<sparse::v1::ModelConfig> config = ParseModelConfig(kTritonExample, "mymodel");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->dynamic_batching().max_batch_rows(), 64);
  EXPECT_EQ(config->dynamic_batching().max_queue_delay_us(), 200);
  EXPECT_EQ(config->dynamic_batching().max_queue_size(), 0);  // the default, 1024
  EXPECT_EQ(config->dynamic_batching().paths(), sparse::v1::DynamicBatching::BOTH);
  EXPECT_EQ(config->version_policy().latest().num_versions(), 1u);
  EXPECT_EQ(config->precision(), sparse::v1::FP32);
  EXPECT_EQ(config->declared_input_dim(), 96);
  EXPECT_EQ(config->declared_output_dim(), 1);
  EXPECT_EQ(config->instance_count(), 1);
  EXPECT_EQ(config->priority_levels(), 0u);
  EXPECT_TRUE(CheckDeclaredDims(*config, 96, 1).ok());
  EXPECT_EQ(CheckDeclaredDims(*config, 97, 1).message(),
            "config.pbtxt declares input dims [96], but this version's model takes d = 97 inputs");
  EXPECT_THAT(std::string(CheckDeclaredDims(*config, 96, 2).message()), HasSubstr("o = 2"));

  // What Seldon Core 2 writes when the model has no config.pbtxt, and Go's
  // prototext spacing.
  absl::StatusOr<sparse::v1::ModelConfig> bare = ParseModelConfig("name:\"mymodel\"", "mymodel");
  ASSERT_TRUE(bare.ok()) << bare.status();
  EXPECT_FALSE(bare->has_dynamic_batching());
  EXPECT_EQ(bare->declared_input_dim(), 0);

  // Every accepted field: options under parameters, priorities, the other
  // policies, a preferred batch size, max_batch_size 0's [-1, d] dims.
  absl::StatusOr<sparse::v1::ModelConfig> full = ParseModelConfig(R"(
    name: "m" backend: "sparse-serve" platform: "sparse-serve_dsm" max_batch_size: 32
    input { name: "input" data_type: TYPE_FP32 dims: 4 }
    dynamic_batching { preferred_batch_size: [ 8 ] max_queue_delay_microseconds: 5000
                       priority_levels: 3 default_priority_level: 2 }
    instance_group { name: "g" count: 2 }
    version_policy { specific { versions: [1, 3] } }
    parameters { key: "precision" value { string_value: "INT8" } }
    parameters { key: "max_queue_size" value { string_value: "64" } }
    parameters { key: "paths" value { string_value: "DENSE_ONLY" } }
  )", "m");
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->dynamic_batching().max_batch_rows(), 8);
  EXPECT_EQ(full->dynamic_batching().max_queue_delay_us(), 5000);
  EXPECT_EQ(full->dynamic_batching().max_queue_size(), 64);
  EXPECT_EQ(full->dynamic_batching().paths(), sparse::v1::DynamicBatching::DENSE_ONLY);
  EXPECT_EQ(full->priority_levels(), 3u);
  EXPECT_EQ(full->default_priority_level(), 2u);
  EXPECT_EQ(full->precision(), sparse::v1::INT8);
  EXPECT_THAT(full->version_policy().specific().versions(), ElementsAre(1, 3));
  EXPECT_EQ(full->instance_count(), 2);
  EXPECT_EQ(full->declared_input_dim(), 4);
  absl::StatusOr<sparse::v1::ModelConfig> unbatched = ParseModelConfig(
      R"(input [ { name: "input" data_type: TYPE_FP32 dims: [ -1, 4 ] } ]
         version_policy { all { } })");
  ASSERT_TRUE(unbatched.ok()) << unbatched.status();
  EXPECT_EQ(unbatched->declared_input_dim(), 4);
  EXPECT_TRUE(unbatched->version_policy().has_all());
}

TEST(ParseModelConfigTest, TritonFieldsTheServerCannotHonourAreRefusedByName) {
  EXPECT_EQ(TritonError("name: \"other\""),
            "config.pbtxt (Triton's schema): name is \"other\" but the model directory is "
            "\"mymodel\"; they must be the same (Triton's rule)");
  EXPECT_THAT(TritonError("name: \"mymodel\"\ninstance_group [ { kind: KIND_GPU } ]"),
              HasSubstr("instance_group.kind must be KIND_CPU (the server runs on CPUs only), "
                        "got KIND_GPU"));
  EXPECT_THAT(TritonError("max_batch_size: 8\nsequence_batching { max_sequence_idle_microseconds: 5 }"),
              HasSubstr("line 2: sequence_batching is refused: sequence batching is not "
                        "supported: the models are stateless"));
  EXPECT_THAT(TritonError("name: \"mymodel\"\nensemble_scheduling { step [ { model_name: \"a\" "
                          "model_version: -1 } ] }"),
              HasSubstr("ensemble_scheduling is refused"));
  EXPECT_THAT(TritonError("name: \"mymodel\" optimization { execution_accelerators { "
                          "cpu_execution_accelerator: [ { name: \"openvino\" } ] } }"),
              HasSubstr("optimization is refused"));
  EXPECT_THAT(TritonError("max_batch_size: 4 input [ { name: \"input\" data_type: TYPE_FP16 "
                          "dims: [ 4 ] } ]"),
              HasSubstr("input.data_type must be TYPE_FP32, got TYPE_FP16"));
  EXPECT_THAT(TritonError("max_batch_size: 4 input [ { name: \"INPUT0\" data_type: TYPE_FP32 "
                          "dims: [ 4 ] } ]"),
              HasSubstr("input.name must be \"input\""));
  EXPECT_THAT(TritonError("max_batch_size: 4 input [ { name: \"input\" data_type: TYPE_FP32 "
                          "dims: [ -1, 4 ] } ]"),
              HasSubstr("input.dims must be [w] (the batch dimension is implicit with "
                        "max_batch_size > 0) with w the model's width, got [-1, 4]"));
  EXPECT_THAT(TritonError("max_batch_size: 4 input [ { name: \"input\" data_type: TYPE_FP32 "
                          "dims: [ 4 ] reshape { shape: [ 2, 2 ] } } ]"),
              HasSubstr("input.reshape is refused: sparse-serve does not support it"));
  EXPECT_THAT(TritonError("platform: \"onnxruntime_onnx\""), HasSubstr("platform is \"onnxruntime_onnx\""));
  EXPECT_THAT(TritonError("backend: \"python\""), HasSubstr("backend is \"python\""));
  EXPECT_THAT(TritonError("name: \"mymodel\" dynamic_batching { }"),
              HasSubstr("dynamic_batching needs max_batch_size > 0"));
  EXPECT_THAT(TritonError("max_batch_size: 8 dynamic_batching { preferred_batch_size: [ 4, 8 ] }"),
              HasSubstr("preferred_batch_size takes at most one size"));
  EXPECT_THAT(TritonError("max_batch_size: 8 dynamic_batching { preferred_batch_size: [ 16 ] }"),
              HasSubstr("preferred_batch_size must be in [1, 8]"));
  EXPECT_THAT(TritonError("max_batch_size: 8 dynamic_batching { preserve_ordering: true }"),
              HasSubstr("preserve_ordering is refused"));
  EXPECT_THAT(TritonError("max_batch_size: 8 dynamic_batching { default_queue_policy { "
                          "max_queue_size: 4 } }"),
              HasSubstr("dynamic_batching.default_queue_policy is refused"));
  EXPECT_THAT(TritonError("max_batch_size: 8 dynamic_batching { priority_levels: 2 "
                          "default_priority_level: 3 }"),
              HasSubstr("default_priority_level must be in [1, priority_levels]"));
  EXPECT_THAT(TritonError("name: \"mymodel\" instance_group [ { count: 1 gpus: [ 0 ] } ]"),
              HasSubstr("instance_group.gpus is refused"));
  EXPECT_THAT(TritonError("name: \"mymodel\" instance_group [ { count: 1 }, { count: 2 } ]"),
              HasSubstr("instance_group takes one group"));
  EXPECT_THAT(TritonError("name: \"mymodel\" precision: INT8"),
              HasSubstr("precision is refused: in Triton's schema it is a model option"));
  EXPECT_THAT(TritonError("name: \"mymodel\" parameters { key: \"precision\" value { "
                          "string_value: \"FP16\" } }"),
              HasSubstr("parameters[\"precision\"] must be FP32, BF16 or INT8, got \"FP16\""));
  EXPECT_THAT(TritonError("name: \"mymodel\" parameters { key: \"threads\" value { "
                          "string_value: \"4\" } }"),
              HasSubstr("parameters[\"threads\"] is refused: not a model option"));
  EXPECT_THAT(TritonError("name: \"mymodel\" parameters { key: \"max_queue_size\" value { "
                          "string_value: \"4\" } }"),
              HasSubstr("is a dynamic batching option"));
  EXPECT_THAT(TritonError("name: \"mymodel\" parameters { key: \"flops_per_row\" value { "
                          "string_value: \"4\" } }"),
              HasSubstr("the server reports it"));
  EXPECT_THAT(TritonError("name: \"mymodel\" max_batch_size: -1"),
              HasSubstr("max_batch_size must be in [0, 1048576], got -1"));
  EXPECT_THAT(TritonError("name: \"mymodel\" version_policy { latest { num_versions: 0 } }"),
              HasSubstr("num_versions must be >= 1"));
  EXPECT_THAT(TritonError("name: \"mymodel\" model_warmup [ { name: \"w\" batch_size: 1 } ]"),
              HasSubstr("model_warmup is refused"));
  EXPECT_THAT(TritonError("name: \"mymodel\" max_batch_size: {"), HasSubstr("Triton's schema): line 1"));
  // Today's form keeps its own errors: a field neither form has.
  EXPECT_THAT(TritonError("dynamic_batching { max_batch_row: 8 }"),
              HasSubstr("config.pbtxt line 1 column 33: Message type \"sparse.v1.DynamicBatching\" "
                        "has no field named \"max_batch_row\"."));
}

TEST(ParseModelConfigTest, PriorityLevelsInTodaysForm) {
  absl::StatusOr<sparse::v1::ModelConfig> config =
      ParseModelConfig("priority_levels: 2 default_priority_level: 1");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->priority_levels(), 2u);
  EXPECT_THAT(std::string(ParseModelConfig("default_priority_level: 1").status().message()),
              HasSubstr("default_priority_level must be in [1, priority_levels]"));
  EXPECT_THAT(std::string(ParseModelConfig("priority_levels: 5000 default_priority_level: 1")
                              .status()
                              .message()),
              HasSubstr("priority_levels must be <= 1024"));
}

TEST(ParseModelConfigTest, LimitsInBothForms) {
  absl::StatusOr<sparse::v1::ModelConfig> today = ParseModelConfig(
      "instance_count: 1 limits { max_in_flight: 16 over_limit: DELAY max_delay_us: 5000 "
      "worker_weight: 3 }");
  ASSERT_TRUE(today.ok()) << today.status();
  EXPECT_EQ(today->limits().max_in_flight(), 16);
  EXPECT_EQ(today->limits().over_limit(), sparse::v1::Limits::DELAY);
  EXPECT_EQ(today->limits().max_delay_us(), 5000);
  EXPECT_EQ(today->limits().worker_weight(), 3u);
  absl::StatusOr<sparse::v1::ModelConfig> triton = ParseModelConfig(R"(
    name: "m" max_batch_size: 8
    instance_group [ { count: 1 kind: KIND_CPU } ]
    parameters { key: "max_in_flight" value { string_value: "16" } }
    parameters { key: "over_limit" value { string_value: "DELAY" } }
    parameters { key: "max_delay_us" value { string_value: "5000" } }
    parameters { key: "worker_weight" value { string_value: "3" } }
  )", "m");
  ASSERT_TRUE(triton.ok()) << triton.status();
  EXPECT_EQ(triton->limits().SerializeAsString(), today->limits().SerializeAsString());
  EXPECT_EQ(triton->instance_count(), 1);

  auto error = [](absl::string_view text) {
    return std::string(ParseModelConfig(text, "m").status().message());
  };
  EXPECT_THAT(error("limits { max_in_flight: -1 }"), HasSubstr("0 <= max_in_flight <= 16777216"));
  EXPECT_THAT(error("limits { worker_weight: 1001 }"), HasSubstr("0 <= worker_weight <= 1000"));
  EXPECT_THAT(error("limits { max_in_flight: 4 over_limit: DELAY }"),
              HasSubstr("limits.max_delay_us is how long a request over max_in_flight waits "
                        "with over_limit: DELAY, in [1, 60000000] (0 with REJECT); got 0"));
  EXPECT_THAT(error("limits { max_in_flight: 4 max_delay_us: 10 }"),
              HasSubstr("got 10 with over_limit: REJECT"));
  EXPECT_THAT(error("name: \"m\" parameters { key: \"over_limit\" value { string_value: \"WAIT\" } }"),
              HasSubstr("parameters[\"over_limit\"] must be REJECT or DELAY, got \"WAIT\""));
  EXPECT_THAT(
      error("name: \"m\" parameters { key: \"max_in_flight\" value { string_value: \"lots\" } }"),
      HasSubstr("parameters[\"max_in_flight\"] must be an integer in [0, 16777216], got \"lots\""));
}

TEST(RepositorySourceTest, KServesLayoutOfOneModel) {
  TempDir root("model_source_test");
  fs::create_directories(root / "1");
  fs::create_directories(root / "3");
  std::ofstream(root / "config.pbtxt") << "name: \"m\"\n";
  const RepositorySource source(root.string(), "m");
  std::error_code ec;
  EXPECT_THAT(source.ListModels(&ec), ElementsAre("m"));
  EXPECT_TRUE(source.HasModel("m"));
  EXPECT_FALSE(source.HasModel("1"));
  EXPECT_THAT(source.ListVersions("m", &ec), ElementsAre(3, 1));
  EXPECT_EQ(source.VersionDir("m", 3), (root / "3").string());
  std::vector<std::string> log;
  ModelState state;
  source.ReadModelConfig("m", nullptr, &state, &log);  // its config.pbtxt, in the root
  EXPECT_THAT(state.config_error, IsEmpty());
  EXPECT_TRUE(source.InsideRoot(source.VersionDir("m", 3)));

  // The name must be --model_name.
  std::ofstream(root / "config.pbtxt") << "name: \"n\"\n";
  ModelState renamed;
  source.ReadModelConfig("m", nullptr, &renamed, &log);
  EXPECT_THAT(renamed.config_error, HasSubstr("name is \"n\" but the model directory is \"m\""));
}

TEST(RepositorySourceTest, KServesLayoutOfOneVersionServesItAsVersion1) {
  TempDir root("model_source_test");
  std::ofstream(root / "manifest.json") << "{}";
  std::ofstream(root / "model.safetensors") << "x";
  fs::create_directories(root / "lost+found");
  const RepositorySource source(root.string(), "m");
  std::error_code ec;
  EXPECT_THAT(source.ListVersions("m", &ec), ElementsAre(1));
  EXPECT_EQ(source.VersionDir("m", 1), root.string());
  EXPECT_TRUE(source.InsideRoot(source.VersionDir("m", 1)));

  // Both a version's files and version directories: ambiguous, refused.
  fs::create_directories(root / "2");
  EXPECT_THAT(source.ListVersions("m", &ec), IsEmpty());
  EXPECT_THAT(source.NothingToServe("m"),
              HasSubstr("--model_name: the repository holds both version directories (2/) and a "
                        "version's own files (manifest.json, model.safetensors)"));
  // Neither (a repository of models given --model_name).
  TempDir repo("model_source_test");
  fs::create_directories(repo / "m" / "1");
  const RepositorySource models(repo.string(), "m");
  EXPECT_THAT(models.ListVersions("m", &ec), IsEmpty());
  EXPECT_THAT(models.NothingToServe("m"),
              HasSubstr("a repository of model directories is served without --model_name"));
}

}  // namespace
}  // namespace sparse
