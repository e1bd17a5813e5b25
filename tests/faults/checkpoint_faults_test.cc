// Faults on the checkpoint files while they load (issue 8): files
// rewritten in place or vanishing during a load, files that cannot be read,
// and a version directory that appears while it is still being copied.
// Each must end in a clear error that names the file and no path, or in a
// model that predicts what the checkpoint holds; never in a crash, and
// never in a half-read version that serves.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model_store/checkpoint.h"
#include "server/model_repository.h"
#include "tests/testing/matchers.h"
#include "tests/testing/random_models.h"

namespace sparse {
namespace {

namespace fs = std::filesystem;
using ::sparse::testing::RandomDense;
using ::sparse::testing::RandomDsm;
using ::sparse::testing::RandomInputs;
using ::testing::AnyOf;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr auto kRaceTime = std::chrono::milliseconds(1500);

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Rewrites `path` in place, keeping its inode: truncate, then write, as
// `cp new old` or `rsync --inplace` do.
void RewriteInPlace(const fs::path& path, const std::string& contents, size_t upto) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_TRUNC);
  ASSERT_GE(fd, 0);
  size_t done = 0;
  while (done < upto) {
    const ssize_t n = ::write(fd, contents.data() + done, upto - done);
    ASSERT_GT(n, 0);
    done += static_cast<size_t>(n);
  }
  ::close(fd);
}

class CheckpointFaultsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            absl::StrCat("sparse_checkpoint_faults_", ::getpid(), "_",
                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  // A DSM with its dense twin, large enough (about 4 MiB) that reading it
  // takes long enough for the racing thread to hit it mid-read.
  fs::path Publish(const std::string& model, int64_t version, uint64_t seed = 1) {
    Checkpoint c;
    c.sparse = RandomDsm({.d = 256, .o = 4, .experts = 16, .active_units = 64}, seed);
    c.dense = RandomDense(256, 1024, 4, Activation::kRelu, seed + 1);
    EXPECT_OK(WriteCheckpoint((root_ / model).string(), version, c));
    return root_ / model / std::to_string(version);
  }

  static std::vector<float> Outputs(const LoadedModel& loaded, const std::vector<float>& x) {
    const int64_t rows = static_cast<int64_t>(x.size()) / loaded.sparse->info().input_dim;
    std::vector<float> y(rows * loaded.sparse->info().output_dim);
    PredictStats stats;
    EXPECT_OK(loaded.sparse->Predict(x, rows, absl::MakeSpan(y), &stats, nullptr));
    return y;
  }

  // Loads `dir` over and over while `fault` runs on another thread, for
  // kRaceTime. Every load must fail with an error naming a checkpoint file
  // (and no path) or give the original model's outputs.
  void LoadWhile(const fs::path& dir, const std::function<void(const std::atomic<bool>&)>& fault) {
    ASSERT_OK_AND_ASSIGN(LoadedModel original, LoadCheckpoint(dir.string()));
    const std::vector<float> x = RandomInputs(8, 256, 7);
    const std::vector<float> expected = Outputs(original, x);
    std::atomic<bool> stop{false};
    std::thread faulty([&] { fault(stop); });
    int loaded = 0, failed = 0;
    const auto end = std::chrono::steady_clock::now() + kRaceTime;
    while (std::chrono::steady_clock::now() < end) {
      absl::StatusOr<LoadedModel> model = LoadCheckpoint(dir.string());
      if (model.ok()) {
        ++loaded;
        EXPECT_EQ(Outputs(*model, x), expected) << "a load that succeeded gives other outputs";
      } else {
        ++failed;
        EXPECT_THAT(model.status().message(),
                    AnyOf(HasSubstr(kModelFile), HasSubstr(kDenseFile), HasSubstr(kManifestFile)));
        EXPECT_THAT(model.status().message(), Not(HasSubstr(root_.string())));
      }
    }
    stop = true;
    faulty.join();
    std::printf("  %d loads succeeded, %d failed cleanly\n", loaded, failed);
    EXPECT_GT(loaded + failed, 2);
    EXPECT_GT(failed, 0) << "the fault never hit a load: the test checks nothing";
  }

  fs::path root_;
};

// Before the loader read files into memory it mapped them: a truncation of
// a mapped file made the next read of a vanished page raise SIGBUS and
// kill the server.
TEST_F(CheckpointFaultsTest, AFileRewrittenInPlaceDuringLoadsIsAnErrorNeverACrash) {
  const fs::path dir = Publish("m", 1);
  const fs::path file = dir / kModelFile;
  const std::string contents = ReadAll(file);
  LoadWhile(dir, [&](const std::atomic<bool>& stop) {
    while (!stop) {
      RewriteInPlace(file, contents, contents.size() / 3);  // a copy caught part way
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      RewriteInPlace(file, contents, contents.size());
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
}

TEST_F(CheckpointFaultsTest, FilesVanishingDuringLoadsAreAnErrorNeverACrash) {
  const fs::path dir = Publish("m", 1);
  LoadWhile(dir, [&](const std::atomic<bool>& stop) {
    const char* files[] = {kManifestFile, kModelFile, kDenseFile};
    for (int i = 0; !stop; ++i) {
      const fs::path file = dir / files[i % 3];
      const fs::path away = root_ / "away";
      fs::rename(file, away);
      std::this_thread::sleep_for(std::chrono::microseconds(300));
      fs::rename(away, file);
      std::this_thread::sleep_for(std::chrono::microseconds(300));
    }
  });
}

TEST_F(CheckpointFaultsTest, UnreadableFilesAreClearErrorsThatNameTheFile) {
  const fs::path dir = Publish("m", 1);
  const fs::path file = dir / kModelFile;
  const std::string contents = ReadAll(file);
  struct Case {
    const char* what;
    std::function<void()> make;
    const char* says;
  };
  const std::vector<Case> cases = {
      {"a directory in its place", [&] { fs::remove(file); fs::create_directory(file); },
       "not a regular file"},
      {"a dangling symlink", [&] { fs::remove_all(file); fs::create_symlink(root_ / "gone", file); },
       "cannot open"},
      {"a FIFO with no writer (must not hang)",
       [&] { fs::remove_all(file); ASSERT_EQ(::mkfifo(file.c_str(), 0644), 0); },
       "not a regular file"},
      {"an empty file", [&] { fs::remove_all(file); std::ofstream(file).flush(); }, "size 0 bytes"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    c.make();
    absl::StatusOr<LoadedModel> model = LoadCheckpoint(dir.string());
    ASSERT_FALSE(model.ok());
    EXPECT_THAT(model.status().message(), HasSubstr(kModelFile));
    EXPECT_THAT(model.status().message(), HasSubstr(c.says));
    EXPECT_THAT(model.status().message(), Not(HasSubstr(root_.string())));
  }
  // Permissions do not stop root, so this case needs another user.
  if (::geteuid() != 0) {
    fs::remove_all(file);
    std::ofstream(file, std::ios::binary) << contents;
    fs::permissions(file, fs::perms::none);
    absl::StatusOr<LoadedModel> model = LoadCheckpoint(dir.string());
    EXPECT_EQ(model.status().code(), absl::StatusCode::kPermissionDenied) << model.status();
    EXPECT_THAT(model.status().message(), HasSubstr(kModelFile));
  }
}

// A version copied into place file by file (cp -r, not a rename), with the
// manifest landing first: every rescan while the copy runs keeps the old
// version serving; the first rescan after the copy finishes serves it.
TEST_F(CheckpointFaultsTest, AVersionAppearingMidCopyServesOnlyOnceComplete) {
  const fs::path source = Publish("staging", 2, 11);
  Publish("m", 1, 3);
  std::vector<std::string> log;
  ModelRepository::Options options;
  options.max_batch_rows = 4;
  options.log = [&log](const std::string& line) { log.push_back(line); };
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ModelRepository> repo,
                       ModelRepository::Open(root_.string(), options, nullptr));
  auto serving = [&] {
    std::vector<int64_t> versions;
    for (const auto& [v, unused] : repo->snapshot()->at("m").versions) versions.push_back(v);
    return versions;
  };
  const fs::path target = root_ / "m" / "2";
  fs::create_directory(target);
  repo->Rescan();  // an empty directory
  EXPECT_THAT(serving(), ::testing::ElementsAre(1));
  fs::copy_file(source / kManifestFile, target / kManifestFile);
  repo->Rescan();  // a manifest whose files are missing
  EXPECT_THAT(serving(), ::testing::ElementsAre(1));
  for (const char* name : {kModelFile, kDenseFile}) {
    const std::string contents = ReadAll(source / name);
    {
      std::ofstream out(target / name, std::ios::binary);
      out.write(contents.data(), static_cast<std::streamsize>(contents.size() / 2));
    }
    repo->Rescan();  // half a file
    EXPECT_THAT(serving(), ::testing::ElementsAre(1));
    std::ofstream(target / name, std::ios::binary)
        .write(contents.data(), static_cast<std::streamsize>(contents.size()));
    if (std::string(name) == kModelFile) {
      repo->Rescan();  // the model whole, the dense twin still missing
      EXPECT_THAT(serving(), ::testing::ElementsAre(1));
    }
  }
  repo->Rescan();
  EXPECT_THAT(serving(), ::testing::ElementsAre(2));
  EXPECT_TRUE(repo->snapshot()->at("m").failures.empty());
  // Each changed state of the directory was tried and logged; none of the
  // lines names a path.
  int not_loaded = 0;
  for (const std::string& line : log) {
    not_loaded += line.find("version 2 not loaded") != std::string::npos;
    EXPECT_THAT(line, Not(HasSubstr(root_.string())));
  }
  EXPECT_GE(not_loaded, 4);
}

}  // namespace
}  // namespace sparse
