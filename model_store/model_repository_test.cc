// The model life cycle on a real repository directory: version policies,
// rescans that pick up new and removed versions, corrupt versions that never
// replace a good one, config.pbtxt, explicit load / unload, polling, and
// what a request holding an old version keeps.
#include "model_store/model_repository.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <iterator>
#include <mutex>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/matchers.h"
#include "tests/testing/random_models.h"

namespace sparse {
namespace {

namespace fs = std::filesystem;
using ::sparse::testing::RandomDense;
using ::sparse::testing::RandomDsm;
using ::sparse::testing::RandomInputs;
using ::testing::HasSubstr;

class ModelRepositoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            absl::StrCat("sparse_repository_test_", ::getpid(), "_",
                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  void Publish(const std::string& model, int64_t version) {
    Checkpoint c;
    c.sparse = RandomDsm({.d = 8, .o = 1, .experts = 4, .active_units = 8}, 100 + version);
    c.dense = RandomDense(8, 32, 1, Activation::kRelu, 200 + version);
    ASSERT_OK(WriteCheckpoint((root_ / model).string(), version, c));
  }
  // A version directory whose model file is garbage.
  void PublishCorrupt(const std::string& model, int64_t version) {
    const fs::path dir = root_ / model / std::to_string(version);
    fs::create_directories(dir);
    std::ofstream(dir / kModelFile) << "not a checkpoint";
  }
  void WriteConfig(const std::string& model, const std::string& text) {
    std::ofstream(root_ / model / "config.pbtxt") << text;
  }

  std::unique_ptr<ModelRepository> Open(std::vector<std::string>* errors = nullptr) {
    return OpenWith([](ModelRepository::Options&) {}, errors);
  }
  std::unique_ptr<ModelRepository> OpenWith(
      const std::function<void(ModelRepository::Options&)>& adjust,
      std::vector<std::string>* errors = nullptr) {
    ModelRepository::Options options;
    options.max_batch_rows = 8;
    adjust(options);
    // Called from the polling thread too.
    options.log = [this](const std::string& line) {
      std::lock_guard<std::mutex> lock(log_mu_);
      log_.push_back(line);
    };
    options.on_publish = [this](const RepositorySnapshot&) { ++publishes_; };
    absl::StatusOr<std::unique_ptr<ModelRepository>> repo =
        ModelRepository::Open(root_.string(), options, errors);
    EXPECT_TRUE(repo.ok()) << repo.status();
    return repo.ok() ? *std::move(repo) : nullptr;
  }

  static std::vector<int64_t> Versions(const ModelRepository& repo, const std::string& model) {
    std::vector<int64_t> out;
    const auto snapshot = repo.snapshot();
    auto it = snapshot->find(model);
    if (it == snapshot->end()) return out;
    for (const auto& [v, unused] : it->second.versions) out.push_back(v);
    return out;
  }

  int LogLinesWith(const std::string& text) const {
    std::lock_guard<std::mutex> lock(log_mu_);
    int n = 0;
    for (const std::string& line : log_) n += line.find(text) != std::string::npos;
    return n;
  }

  fs::path root_;
  // A std::mutex: an absl::Mutex taken on the polling thread gives that
  // thread an Abseil identity, whose reuse after the thread ends TSan
  // reports inside Abseil's own wake-up.
  mutable std::mutex log_mu_;
  std::vector<std::string> log_;  // guarded by log_mu_
  int publishes_ = 0;
};

TEST_F(ModelRepositoryTest, ByDefaultTheNewestVersionServesAndARescanSwapsInTheNextOne) {
  Publish("m", 1);
  Publish("m", 2);
  auto repo = Open();
  EXPECT_THAT(Versions(*repo, "m"), ::testing::ElementsAre(2));

  // A request that started on version 2 keeps it through the swap.
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Servable> held, repo->Find("m", 0));
  Publish("m", 3);
  repo->Rescan();
  EXPECT_THAT(Versions(*repo, "m"), ::testing::ElementsAre(3));
  EXPECT_EQ(LogLinesWith("m version 3 loaded"), 1);
  EXPECT_EQ(LogLinesWith("m version 2 unloaded"), 1);
  EXPECT_EQ(held->version, 2);
  const std::vector<float> x = RandomInputs(2, 8, 1);
  std::vector<float> y(2);
  PredictStats stats;
  EXPECT_OK(held->loaded.sparse->Predict(x, 2, absl::MakeSpan(y), &stats, nullptr));
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Servable> now, repo->Find("m", 0));
  EXPECT_EQ(now->version, 3);
  EXPECT_EQ(repo->Find("m", 2).status().code(), absl::StatusCode::kNotFound);

  // Nothing changed: no new snapshot.
  const int publishes = publishes_;
  repo->Rescan();
  EXPECT_EQ(publishes_, publishes);
}

TEST_F(ModelRepositoryTest, ACorruptVersionNeverReplacesTheServingOneAndIsReportedOnce) {
  Publish("m", 1);
  auto repo = Open();
  PublishCorrupt("m", 2);
  repo->Rescan();
  repo->Rescan();  // unchanged files: not read again, not logged again
  EXPECT_THAT(Versions(*repo, "m"), ::testing::ElementsAre(1));
  EXPECT_EQ(LogLinesWith("m version 2 not loaded"), 1);
  const ModelState& state = repo->snapshot()->at("m");
  ASSERT_EQ(state.failures.count(2), 1u);
  EXPECT_THAT(state.failures.at(2).error, HasSubstr(kManifestFile));
  EXPECT_THAT(state.failures.at(2).error, ::testing::Not(HasSubstr(root_.string())));

  // The version is replaced by a good one: tried again, and it serves.
  fs::remove_all(root_ / "m" / "2");
  Publish("m", 2);
  repo->Rescan();
  EXPECT_THAT(Versions(*repo, "m"), ::testing::ElementsAre(2));
  EXPECT_TRUE(repo->snapshot()->at("m").failures.empty());
}

TEST_F(ModelRepositoryTest, OnlyCanonicalVersionNamesAreVersions) {
  Publish("m", 1);
  Publish("m", 2);
  // "007" and "+5" parse as numbers but are not the names of 7 and 5.
  fs::rename(root_ / "m" / "2", root_ / "m" / "007");
  Publish("m", 3);
  fs::rename(root_ / "m" / "3", root_ / "m" / "+5");
  auto repo = Open();
  EXPECT_THAT(Versions(*repo, "m"), ::testing::ElementsAre(1));
  EXPECT_TRUE(repo->snapshot()->at("m").failures.empty());
}

TEST_F(ModelRepositoryTest, VersionPoliciesLatestAllAndSpecific) {
  for (int v = 1; v <= 4; ++v) Publish("m", v);
  WriteConfig("m", "version_policy { latest { num_versions: 2 } }");
  auto repo = Open();
  EXPECT_THAT(Versions(*repo, "m"), ::testing::ElementsAre(3, 4));

  WriteConfig("m", "version_policy { all {} }");
  repo->Rescan();
  EXPECT_THAT(Versions(*repo, "m"), ::testing::ElementsAre(1, 2, 3, 4));

  WriteConfig("m", "version_policy { specific { versions: [1, 3, 9] } }");
  repo->Rescan();
  EXPECT_THAT(Versions(*repo, "m"), ::testing::ElementsAre(1, 3));

  // Latest 2 with the newest corrupt: the two newest that load.
  WriteConfig("m", "version_policy { latest { num_versions: 2 } }");
  PublishCorrupt("m", 5);
  repo->Rescan();
  EXPECT_THAT(Versions(*repo, "m"), ::testing::ElementsAre(3, 4));
  EXPECT_EQ(repo->snapshot()->at("m").failures.count(5), 1u);
}

TEST_F(ModelRepositoryTest, ABadConfigKeepsThePreviousOneAndSaysWhere) {
  Publish("m", 1);
  Publish("m", 2);
  WriteConfig("m", "version_policy { all {} }");
  auto repo = Open();
  WriteConfig("m", "version_policy { all {} }\ndynamic_batching { max_batch_rows: \"many\" }");
  repo->Rescan();
  const ModelState& state = repo->snapshot()->at("m");
  EXPECT_THAT(state.config_error, HasSubstr("config.pbtxt line 2"));
  EXPECT_THAT(Versions(*repo, "m"), ::testing::ElementsAre(1, 2));  // still "all"
  EXPECT_EQ(LogLinesWith("the previous config stays"), 1);

  EXPECT_THAT(ParseModelConfig("version_policy { latest { num_versions: 0 } }").status().message(),
              HasSubstr("num_versions must be >= 1"));
  EXPECT_THAT(ParseModelConfig("dynamic_batching { max_queue_delay_us: -5 }").status().message(),
              HasSubstr("max_queue_delay_us"));
  EXPECT_THAT(ParseModelConfig("no_such_field: 1").status().message(), HasSubstr("line 1"));
}

TEST_F(ModelRepositoryTest, ATritonSchemaConfigServesAndItsDimsAreCheckedAgainstEachVersion) {
  Publish("m", 1);  // d = 8, o = 1
  WriteConfig("m", R"(name: "m"
max_batch_size: 16
input [ { name: "input" data_type: TYPE_FP32 dims: [ 8 ] } ]
output [ { name: "output" data_type: TYPE_FP32 dims: [ 1 ] } ]
dynamic_batching { max_queue_delay_microseconds: 200 }
instance_group [ { count: 1 kind: KIND_CPU } ]
version_policy: { latest: { num_versions: 1 } }
)");
  auto repo = Open();
  Scheduling scheduling;
  const std::optional<sparse::v1::DynamicBatching>& batching = scheduling.batching;
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Servable> served, repo->Find("m", 0, &scheduling));
  EXPECT_EQ(served->version, 1);
  ASSERT_TRUE(batching.has_value());
  EXPECT_EQ(batching->max_batch_rows(), 16);
  EXPECT_EQ(batching->max_queue_delay_us(), 200);

  // Dims that disagree with the version that serves: a config error, the
  // previous config stays.
  WriteConfig("m", "name: \"m\" max_batch_size: 16\n"
                   "input [ { name: \"input\" data_type: TYPE_FP32 dims: [ 9 ] } ]");
  repo->Rescan();
  EXPECT_THAT(repo->snapshot()->at("m").config_error,
              HasSubstr("config.pbtxt declares input dims [9], but this version's model takes "
                        "d = 8 inputs (version 1, which serves)"));
  ASSERT_OK_AND_ASSIGN(served, repo->Find("m", 0, &scheduling));
  EXPECT_EQ(batching->max_batch_rows(), 16);  // the previous config

  // A new model under a config whose dims disagree: its version fails, naming both.
  Publish("n", 1);
  WriteConfig("n", "output [ { name: \"output\" data_type: TYPE_FP32 dims: [ 3 ] } ]");
  repo->Rescan();
  const ModelState& n = repo->snapshot()->at("n");
  EXPECT_TRUE(n.versions.empty());
  ASSERT_EQ(n.failures.count(1), 1u);
  EXPECT_THAT(n.failures.at(1).error,
              HasSubstr("declares output dims [3], but this version's model gives o = 1 outputs"));
  // Fixed: tried again at once (the dims are part of the failure's fingerprint).
  WriteConfig("n", "output [ { name: \"output\" data_type: TYPE_FP32 dims: [ 1 ] } ]");
  repo->Rescan();
  EXPECT_THAT(Versions(*repo, "n"), ::testing::ElementsAre(1));
}

TEST_F(ModelRepositoryTest, KServesLayoutServesOneModelUnderItsFlagName) {
  // One version's files directly in the root: version 1 of model "km".
  Publish("staging", 4);
  for (const auto& entry : fs::directory_iterator(root_ / "staging" / "4")) {
    fs::rename(entry.path(), root_ / entry.path().filename());
  }
  fs::remove_all(root_ / "staging");
  auto repo = OpenWith([](ModelRepository::Options& o) { o.single_model = "km"; });
  EXPECT_THAT(Versions(*repo, "km"), ::testing::ElementsAre(1));
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Servable> served, repo->Find("km", 0));
  EXPECT_EQ(served->model, "km");
  EXPECT_EQ(repo->snapshot()->size(), 1u);
  ASSERT_OK(repo->LoadModel("km").status());
  EXPECT_FALSE(repo->LoadModel("other").ok());
}

TEST_F(ModelRepositoryTest, DynamicBatchingFollowsTheConfigWithoutReloading) {
  Publish("m", 1);
  auto repo = Open();
  Scheduling scheduling;
  const std::optional<sparse::v1::DynamicBatching>& batching = scheduling.batching;
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Servable> before, repo->Find("m", 0, &scheduling));
  EXPECT_FALSE(batching.has_value());
  WriteConfig("m", "dynamic_batching { max_batch_rows: 32 }");
  repo->Rescan();
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Servable> after, repo->Find("m", 0, &scheduling));
  EXPECT_EQ(after.get(), before.get());  // the same loaded version
  ASSERT_TRUE(batching.has_value());
  EXPECT_EQ(batching->max_batch_rows(), 32);
  WriteConfig("m", "dynamic_batching { max_batch_rows: 32 paths: DENSE_ONLY }");
  repo->Rescan();
  ASSERT_OK_AND_ASSIGN(after, repo->Find("m", 0, &scheduling));
  EXPECT_EQ(after.get(), before.get());
  ASSERT_TRUE(batching.has_value());
  EXPECT_EQ(batching->paths(), sparse::v1::DynamicBatching::DENSE_ONLY);
}

TEST_F(ModelRepositoryTest, APrecisionChangeLoadsTheVersionAgainAndAFailedOneKeepsTheOld) {
  Checkpoint c;
  c.sparse = RandomDsm({.d = 64, .o = 1, .experts = 4, .active_units = 64}, 3);
  c.dense = RandomDense(64, 256, 1, Activation::kRelu, 4);
  ASSERT_OK(WriteCheckpoint((root_ / "m").string(), 1, c));
  // Finite in float32, beyond bfloat16: this one loads at FP32 only.
  std::get<DsmWeights>(c.sparse).network.bottom_weight[5] = 3.4e38f;
  ASSERT_OK(WriteCheckpoint((root_ / "huge").string(), 1, c));
  auto repo = Open();
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Servable> fp32, repo->Find("m", 0));
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Servable> huge_fp32, repo->Find("huge", 0));
  EXPECT_EQ(fp32->precision, Precision::kFp32);
  const int64_t fp32_bytes = ResidentBytes(*fp32);

  WriteConfig("m", "precision: BF16");
  WriteConfig("huge", "precision: BF16");
  repo->Rescan();
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Servable> bf16, repo->Find("m", 0));
  EXPECT_NE(bf16.get(), fp32.get());  // loaded again
  EXPECT_EQ(bf16->precision, Precision::kBf16);
  EXPECT_EQ(bf16->loaded.sparse->info().precision, Precision::kBf16);
  EXPECT_EQ(bf16->loaded.dense->info().precision, Precision::kBf16);
  EXPECT_LT(ResidentBytes(*bf16), fp32_bytes * 6 / 10);
  // The version that cannot be rounded keeps serving at FP32, and says why.
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Servable> huge, repo->Find("huge", 0));
  EXPECT_EQ(huge.get(), huge_fp32.get());
  const ModelState& state = repo->snapshot()->at("huge");
  ASSERT_EQ(state.failures.count(1), 1u);
  EXPECT_THAT(state.failures.at(1).error, HasSubstr("overflows bfloat16"));
  EXPECT_EQ(LogLinesWith("(at BF16; it keeps serving at FP32)"), 1);
  repo->Rescan();  // not tried again before its back-off, and still serving
  ASSERT_OK_AND_ASSIGN(huge, repo->Find("huge", 0));
  EXPECT_EQ(huge.get(), huge_fp32.get());

  WriteConfig("m", "precision: INT8");
  WriteConfig("huge", "precision: FP32");
  repo->Rescan();
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Servable> int8, repo->Find("m", 0));
  EXPECT_EQ(int8->precision, Precision::kInt8);
  EXPECT_LT(ResidentBytes(*int8), ResidentBytes(*bf16));
  ASSERT_OK_AND_ASSIGN(huge, repo->Find("huge", 0));
  EXPECT_EQ(huge.get(), huge_fp32.get());  // back to what it serves: nothing to load
  EXPECT_EQ(repo->snapshot()->at("huge").failures.count(1), 0u);

  // A precision that does not exist is a config error; INT8 stays.
  WriteConfig("m", "precision: FP16");
  repo->Rescan();
  EXPECT_THAT(repo->snapshot()->at("m").config_error, HasSubstr("FP16"));
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Servable> still, repo->Find("m", 0));
  EXPECT_EQ(still.get(), int8.get());
}

TEST_F(ModelRepositoryTest, RemovedModelsUnloadButAnEmptyRepositoryKeepsEverything) {
  Publish("a", 1);
  Publish("b", 1);
  auto repo = Open();
  fs::remove_all(root_ / "b");
  repo->Rescan();
  EXPECT_EQ(repo->snapshot()->count("b"), 0u);
  EXPECT_EQ(LogLinesWith("model b unloaded"), 1);

  // Unmounted or emptied: what serves stays.
  fs::remove_all(root_ / "a");
  repo->Rescan();
  EXPECT_THAT(Versions(*repo, "a"), ::testing::ElementsAre(1));
  EXPECT_EQ(LogLinesWith("holds nothing that loads"), 1);
  fs::remove_all(root_);
  repo->Rescan();
  EXPECT_THAT(Versions(*repo, "a"), ::testing::ElementsAre(1));
}

TEST_F(ModelRepositoryTest, ExplicitLoadAndUnload) {
  Publish("a", 1);
  auto repo = Open();
  Publish("b", 1);
  EXPECT_EQ(repo->Find("b", 0).status().code(), absl::StatusCode::kNotFound);
  ASSERT_OK_AND_ASSIGN(ModelState b, repo->LoadModel("b"));
  EXPECT_EQ(b.versions.size(), 1u);
  EXPECT_OK(repo->Find("b", 0).status());

  EXPECT_OK(repo->UnloadModel("a"));
  EXPECT_EQ(repo->Find("a", 0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(repo->UnloadModel("a").code(), absl::StatusCode::kNotFound);

  for (const char* bad : {"..", "../a", "/etc", ".hidden", ""}) {
    EXPECT_EQ(repo->LoadModel(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(repo->LoadModel(std::string("a\0b", 3)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(repo->LoadModel("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(repo->LoadModel("nope").status().message(),
              ::testing::Not(HasSubstr(root_.string())));

  PublishCorrupt("c", 1);
  absl::StatusOr<ModelState> c = repo->LoadModel("c");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(c.status().message(), HasSubstr("version 1"));
  EXPECT_EQ(repo->Find("c", 0).status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(ModelRepositoryTest, AVersionThatLeadsOutOfTheRepositoryIsRefused) {
  Publish("m", 1);
  auto repo = Open();
  // A good checkpoint, outside the root, linked in as version 2.
  const fs::path outside = root_.string() + "-outside";
  fs::remove_all(outside);
  Checkpoint c;
  c.sparse = RandomDsm({.d = 8, .o = 1, .experts = 4, .active_units = 8}, 7);
  ASSERT_OK(WriteCheckpoint((outside / "m").string(), 2, c));
  fs::create_directory_symlink(outside / "m" / "2", root_ / "m" / "2");
  // A link that stays inside the repository is fine.
  Publish("store", 3);
  fs::create_directory_symlink(root_ / "store" / "3", root_ / "m" / "3");
  repo->Rescan();
  repo->Rescan();
  EXPECT_THAT(Versions(*repo, "m"), ::testing::ElementsAre(3));
  WriteConfig("m", "version_policy { all {} }");
  repo->Rescan();
  EXPECT_THAT(Versions(*repo, "m"), ::testing::ElementsAre(1, 3));
  const ModelState& state = repo->snapshot()->at("m");
  ASSERT_EQ(state.failures.count(2), 1u);
  EXPECT_THAT(state.failures.at(2).error, HasSubstr("outside the model repository"));
  EXPECT_THAT(state.failures.at(2).error, ::testing::Not(HasSubstr(outside.string())));
  EXPECT_EQ(LogLinesWith("m version 2 not loaded"), 1);

  // A version directory inside whose model file links out.
  ASSERT_OK(WriteCheckpoint((outside / "m").string(), 4, c));
  fs::create_directories(root_ / "m" / "4");
  for (const char* file : {kModelFile, kManifestFile}) {
    fs::create_symlink(outside / "m" / "4" / file, root_ / "m" / "4" / file);
  }
  repo->Rescan();
  EXPECT_THAT(Versions(*repo, "m"), ::testing::ElementsAre(1, 3));
  EXPECT_EQ(repo->snapshot()->at("m").failures.count(4), 1u);
  fs::remove_all(outside);
}

TEST_F(ModelRepositoryTest, PollingPicksUpANewVersion) {
  Publish("m", 1);
  auto repo = Open();
  repo->StartPolling(std::chrono::milliseconds(20));
  Publish("m", 2);
  for (int i = 0; i < 500 && Versions(*repo, "m") != std::vector<int64_t>{2}; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_THAT(Versions(*repo, "m"), ::testing::ElementsAre(2));
  repo->StopPolling();
  repo->StopPolling();  // idempotent
}

// --max_model_bytes: a version whose estimate is over the budget is a
// failed version (RESOURCE_EXHAUSTED, naming the flag) and the one before
// it keeps serving, as do other models.
TEST_F(ModelRepositoryTest, ANewerVersionOverTheMemoryBudgetFailsWhileTheOlderOneServes) {
  Publish("m", 1);
  Publish("other", 1);
  auto repo = OpenWith([](ModelRepository::Options& o) { o.max_model_bytes = 4 << 20; });
  EXPECT_EQ(repo->max_model_bytes(), uint64_t{4} << 20);
  Checkpoint big;
  big.sparse = RandomDsm({.d = 256, .o = 4, .experts = 16, .active_units = 64}, 9);
  big.dense = RandomDense(256, 1024, 4, Activation::kRelu, 10);
  ASSERT_OK(WriteCheckpoint((root_ / "m").string(), 2, big));
  repo->Rescan();
  EXPECT_THAT(Versions(*repo, "m"), ::testing::ElementsAre(1));
  EXPECT_THAT(Versions(*repo, "other"), ::testing::ElementsAre(1));
  const ModelState& state = repo->snapshot()->at("m");
  ASSERT_EQ(state.failures.count(2), 1u);
  EXPECT_THAT(state.failures.at(2).error, HasSubstr("RESOURCE_EXHAUSTED"));
  EXPECT_THAT(state.failures.at(2).error, HasSubstr("bytes (--max_model_bytes)"));
  EXPECT_THAT(state.failures.at(2).error, ::testing::Not(HasSubstr(root_.string())));
  EXPECT_OK(repo->Find("m", 0).status());
  // The default budget is half the memory: the same version loads there.
  auto unbounded = Open();
  EXPECT_GT(unbounded->max_model_bytes(), uint64_t{4} << 20);
  EXPECT_THAT(Versions(*unbounded, "m"), ::testing::ElementsAre(2));
}

// Overwrites `path` with `contents` of the same size and gives it back its
// modification time: the version's fingerprint (names, sizes, times) does
// not change, as with a transient read error or a permission fixed in place.
void ReplaceUnseen(const fs::path& path, const std::string& contents) {
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  ASSERT_EQ(static_cast<size_t>(st.st_size), contents.size());
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(contents.data(), static_cast<std::streamsize>(contents.size()));
  const struct timespec times[2] = {st.st_atim, st.st_mtim};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0);
}

std::string Contents(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A version failed, then was fixed without its files changing name, size
// or time (chmod, a transient I/O error): it stayed failed until its files
// changed, even through LoadModel. LoadModel now always tries it again.
TEST_F(ModelRepositoryTest, LoadModelRetriesAFailedVersionWhoseFilesLookUnchanged) {
  Publish("m", 1);
  Publish("m", 2);
  const fs::path file = root_ / "m" / "2" / kModelFile;
  const std::string good = Contents(file);
  ReplaceUnseen(file, std::string(good.size(), 'x'));
  auto repo = OpenWith([](ModelRepository::Options& o) {
    o.failed_retry_initial = std::chrono::hours(1);  // rescans never retry it here
  });
  EXPECT_THAT(Versions(*repo, "m"), ::testing::ElementsAre(1));
  ASSERT_EQ(repo->snapshot()->at("m").failures.count(2), 1u);
  ReplaceUnseen(file, good);  // fixed in place
  repo->Rescan();
  EXPECT_THAT(Versions(*repo, "m"), ::testing::ElementsAre(1)) << "retried before its back-off";
  ASSERT_OK_AND_ASSIGN(ModelState state, repo->LoadModel("m"));
  EXPECT_THAT(Versions(*repo, "m"), ::testing::ElementsAre(2));
  EXPECT_TRUE(state.failures.empty());
  if (::geteuid() != 0) {  // permissions do not stop root
    Publish("m", 3);
    fs::permissions(root_ / "m" / "3" / kModelFile, fs::perms::none);
    EXPECT_FALSE(repo->LoadModel("m").ok() && Versions(*repo, "m") == std::vector<int64_t>{3});
    fs::permissions(root_ / "m" / "3" / kModelFile, fs::perms::owner_read);
    EXPECT_OK(repo->LoadModel("m").status());
    EXPECT_THAT(Versions(*repo, "m"), ::testing::ElementsAre(3));
  }
}

// A failed version whose directory was deleted stayed listed (a rescan
// published only when it logged something).
TEST_F(ModelRepositoryTest, AFailedVersionWhoseDirectoryIsRemovedIsNoLongerListed) {
  Publish("m", 1);
  PublishCorrupt("m", 2);
  auto repo = Open();
  ASSERT_EQ(repo->snapshot()->at("m").failures.count(2), 1u);
  const int publishes = publishes_;
  fs::remove_all(root_ / "m" / "2");
  repo->Rescan();
  EXPECT_TRUE(repo->snapshot()->at("m").failures.empty());
  EXPECT_EQ(publishes_, publishes + 1);
  EXPECT_THAT(Versions(*repo, "m"), ::testing::ElementsAre(1));
  // A model with nothing but that failed version goes from the listing.
  PublishCorrupt("only_bad", 1);
  repo->Rescan();
  ASSERT_EQ(repo->snapshot()->count("only_bad"), 1u);
  fs::remove_all(root_ / "only_bad" / "1");
  repo->Rescan();
  EXPECT_EQ(repo->snapshot()->count("only_bad"), 0u);
}

// Under polling a failed version with unchanged files is tried again after
// a back-off that doubles, not on every poll, and logged once per error.
TEST_F(ModelRepositoryTest, UnderPollingAFailedVersionIsRetriedWithBackOffAndLoggedOnce) {
  Publish("m", 1);
  Publish("m", 2);
  const fs::path file = root_ / "m" / "2" / kModelFile;
  const std::string good = Contents(file);
  ReplaceUnseen(file, std::string(good.size(), 'x'));
  std::vector<std::string> errors;
  auto repo = OpenWith(
      [](ModelRepository::Options& o) {
        o.failed_retry_initial = std::chrono::milliseconds(100);
        o.failed_retry_max = std::chrono::milliseconds(400);
      },
      &errors);
  ASSERT_THAT(errors, ::testing::ElementsAre(HasSubstr("m version 2: model.safetensors")));
  repo->StartPolling(std::chrono::milliseconds(10));
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  // 100 + 200 + 400 + 400 ms: about 4 retries in a second, not 100.
  const int attempts = repo->snapshot()->at("m").failures.at(2).attempts;
  EXPECT_GE(attempts, 3);
  EXPECT_LE(attempts, 6);
  // Reported at start-up; the retries, failing the same way, say nothing.
  EXPECT_EQ(LogLinesWith("m version 2 not loaded"), 0);
  ReplaceUnseen(file, good);
  for (int i = 0; i < 200 && Versions(*repo, "m") != std::vector<int64_t>{2}; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  repo->StopPolling();
  EXPECT_THAT(Versions(*repo, "m"), ::testing::ElementsAre(2));
  EXPECT_TRUE(repo->snapshot()->at("m").failures.empty());
}

// Issue 31, trap 4: version folders that are not integers and empty model
// folders were skipped without a word and indexed as "unloaded".
TEST_F(ModelRepositoryTest, ModelDirectoriesWithoutAVersionAreListedWithWhyAndLoggedOnce) {
  Publish("m", 1);
  fs::create_directories(root_ / "named" / "v1");
  fs::create_directories(root_ / "named" / "latest");
  fs::create_directories(root_ / "named" / ".tmp-publishing");  // a publisher's: not named
  fs::create_directories(root_ / "empty");
  std::vector<std::string> errors;
  auto repo = Open(&errors);
  const std::map<std::string, std::string> why = repo->NotServed();
  ASSERT_EQ(why.size(), 2u);
  EXPECT_EQ(why.at("named"),
            "no version directory to serve: latest/, v1/ are not versions (a version directory "
            "is named by an integer >= 1 without leading zeros, e.g. 1/)");
  EXPECT_THAT(why.at("empty"), HasSubstr("no version directory to serve (the model directory "
                                         "holds no directory"));
  EXPECT_THAT(errors, ::testing::Contains(absl::StrCat("named: ", why.at("named"))));
  EXPECT_THAT(errors, ::testing::Contains(absl::StrCat("empty: ", why.at("empty"))));
  const absl::Status find = repo->Find("named", 0).status();
  EXPECT_EQ(find.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(find.message(), HasSubstr("latest/, v1/ are not versions"));

  // Said once (at Open), not on every rescan; a new one is logged once.
  repo->Rescan();
  repo->Rescan();
  EXPECT_EQ(LogLinesWith("serves nothing"), 0);
  fs::create_directories(root_ / "other" / "007");
  repo->Rescan();
  repo->Rescan();
  EXPECT_EQ(LogLinesWith("model directory other serves nothing: no version directory to serve: "
                         "007/ is not a version"),
            1);
  EXPECT_EQ(LogLinesWith("serves nothing"), 1);

  // A version appears: it serves and the reason goes; a removed model folder goes too.
  Publish("named", 1);
  fs::remove_all(root_ / "empty");
  repo->Rescan();
  EXPECT_THAT(Versions(*repo, "named"), ::testing::ElementsAre(1));
  EXPECT_THAT(repo->NotServed(), ::testing::ElementsAre(::testing::Key("other")));
  // LoadModel says the same.
  const absl::Status load = repo->LoadModel("other").status();
  EXPECT_EQ(load.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(load.message(), HasSubstr("no version directory to serve: 007/ is not a version"));
}

// Issue 31, trap 6: over REST and OIP "mine.dense" is the twin of "mine", so
// a model directory of that name is refused, saying why.
TEST_F(ModelRepositoryTest, AModelDirectoryNamedLikeADenseTwinIsRefusedSayingWhy) {
  Publish("mine", 1);
  Publish("mine.dense", 1);
  std::vector<std::string> errors;
  auto repo = Open(&errors);
  EXPECT_EQ(repo->snapshot()->count("mine.dense"), 0u);
  EXPECT_THAT(Versions(*repo, "mine"), ::testing::ElementsAre(1));
  const std::string why = repo->NotServed().at("mine.dense");
  EXPECT_THAT(why, HasSubstr("a model name ending in '.dense' names the dense twin of model "
                             "'mine' over REST and OIP"));
  EXPECT_THAT(errors, ::testing::Contains(absl::StrCat("mine.dense: ", why)));
  EXPECT_THAT(repo->Find("mine.dense", 0).status().message(), HasSubstr(why));
  const absl::Status load = repo->LoadModel("mine.dense").status();
  EXPECT_EQ(load.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(load.message(), HasSubstr("names the dense twin"));
  repo->Rescan();
  EXPECT_EQ(repo->snapshot()->count("mine.dense"), 0u);
  EXPECT_EQ(LogLinesWith("mine.dense"), 0);  // said once, at Open
}

// Issue 31, trap 3: asking for a version that failed said only what loaded.
TEST_F(ModelRepositoryTest, AskingForAFailedVersionSaysWhyItFailed) {
  Publish("m", 1);
  PublishCorrupt("m", 2);
  PublishCorrupt("only_bad", 3);
  auto repo = Open();
  const std::string error = repo->snapshot()->at("m").failures.at(2).error;
  ASSERT_FALSE(error.empty());
  const absl::Status two = repo->Find("m", 2).status();
  EXPECT_EQ(two.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(two.message(), HasSubstr(absl::StrCat("has no version 2: it failed to load: ", error)));
  EXPECT_THAT(two.message(), HasSubstr("(loaded: 1)"));
  EXPECT_THAT(repo->Find("m", 5).status().message(), ::testing::Not(HasSubstr("failed")));
  const absl::Status bad = repo->Find("only_bad", 0).status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(bad.message(), HasSubstr("version 3 failed to load: "));
  EXPECT_THAT(repo->Find("only_bad", 2).status().message(), ::testing::Not(HasSubstr("failed")));
}

}  // namespace
}  // namespace sparse
