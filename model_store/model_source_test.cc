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

}  // namespace
}  // namespace sparse
