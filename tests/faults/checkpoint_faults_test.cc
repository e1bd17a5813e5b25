// Faults on the checkpoint files while they load (issue 8): files
// rewritten in place or vanishing during a load, files that cannot be read,
// and a version directory that appears while it is still being copied.
// Each must end in a clear error that names the file and no path, or in a
// model that predicts what the checkpoint holds; never in a crash, and
// never in a half-read version that serves.
//
// Hostile checkpoints (issue 15): JSON nested hundreds of thousands deep,
// metadata declaring sizes no file holds, versions over the memory budget
// (--max_model_bytes), and special files (FIFOs, devices, directories,
// symlinks out of the repository) in place of every file the server reads.
// Each is an error for that version (or config) alone: the process neither
// crashes nor hangs, and every other model keeps serving.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model_store/checkpoint.h"
#include "model_store/json_util.h"
#include "nlohmann/json.hpp"
#include "model_store/model_repository.h"
#include "tests/testing/matchers.h"
#include "tests/testing/random_models.h"

namespace sparse {
namespace {

namespace fs = std::filesystem;
using ::sparse::testing::RandomDense;
using ::sparse::testing::RandomDsm;
using ::sparse::testing::RandomInputs;
using ::sparse::testing::RandomLshTable;
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


// ---- Hostile checkpoints (issue 15) -----------------------------------------

using Json = nlohmann::json;

void WriteBytes(const fs::path& path, const std::string& contents) {
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(contents.data(), static_cast<std::streamsize>(contents.size()));
}

// A safetensors file as header text and data section.
struct Tensors {
  std::string header;
  std::string data;
};
Tensors SplitTensors(const std::string& file) {
  uint64_t n = 0;
  std::memcpy(&n, file.data(), 8);
  return {file.substr(8, n), file.substr(8 + n)};
}
std::string JoinTensors(const std::string& header, const std::string& data) {
  const uint64_t n = header.size();
  return std::string(reinterpret_cast<const char*>(&n), 8) + header + data;
}

// `depth` nested arrays: [[[...]]].
std::string Nested(size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

// The files of a valid version of each kind: model.safetensors and, for
// some, dense.safetensors.
enum class Kind { kLsh, kDsmLsh, kDsmHash, kDsmKmeans, kDsmTopk };
const char* KindName(Kind kind) {
  switch (kind) {
    case Kind::kLsh: return "lsh_table";
    case Kind::kDsmLsh: return "dsm/lsh";
    case Kind::kDsmHash: return "dsm/hash";
    case Kind::kDsmKmeans: return "dsm/kmeans";
    case Kind::kDsmTopk: return "dsm/topk";
  }
  return "?";
}
std::map<std::string, std::string> ValidFiles(Kind kind) {
  Checkpoint c;
  switch (kind) {
    case Kind::kLsh: c.sparse = RandomLshTable({}, 5); break;
    case Kind::kDsmLsh: c.sparse = RandomDsm({.router = RouterKind::kLsh}, 6); break;
    case Kind::kDsmHash: c.sparse = RandomDsm({.router = RouterKind::kHash}, 7); break;
    case Kind::kDsmKmeans: c.sparse = RandomDsm({.router = RouterKind::kKmeans}, 8); break;
    case Kind::kDsmTopk:
      c.sparse = RandomDsm({.blocks = 2, .active_units = 4, .router = RouterKind::kTopk,
                            .topk_block_units = 16},
                           9);
      break;
  }
  c.dense = RandomDense(8, 32, 1, Activation::kRelu, 10);
  return {{kModelFile, SerializeSparse(c)}, {kDenseFile, SerializeDense(*c.dense)}};
}

// Writes `files` and a manifest that matches them (resealed) into `dir`.
void WriteVersion(const fs::path& dir, const std::map<std::string, std::string>& files) {
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const auto& [name, contents] : files) WriteBytes(dir / name, contents);
  WriteBytes(dir / kManifestFile, ManifestJson(files));
}

class HostileCheckpointTest : public CheckpointFaultsTest {
 protected:
  // Loads `files` (resealed) and expects a clean error naming a file and no
  // path; returns the status.
  absl::Status LoadExpectingError(const std::map<std::string, std::string>& files,
                                  const LoadOptions& options = {}) {
    const fs::path dir = root_ / "m" / "1";
    WriteVersion(dir, files);
    const absl::Status status = LoadCheckpoint(dir.string(), options).status();
    EXPECT_FALSE(status.ok()) << "a hostile checkpoint loaded";
    EXPECT_THAT(status.message(), Not(HasSubstr(root_.string())));
    return status;
  }
};

// The loader crashed with SIGSEGV on a header nested 300000 deep: the
// error path serialised the value recursively (and nlohmann's recursive
// members would overflow the stack on it anywhere). Nesting is capped
// while parsing, for every JSON file the server reads.
TEST_F(HostileCheckpointTest, JsonNestedHundredsOfThousandsDeepIsAnErrorNeverACrash) {
  constexpr size_t kDeep = 300000;
  const std::map<std::string, std::string> valid = ValidFiles(Kind::kDsmLsh);
  const Tensors model = SplitTensors(valid.at(kModelFile));
  Json header = Json::parse(model.header);
  struct Case {
    const char* what;
    std::map<std::string, std::string> files;
    bool raw_manifest = false;
    std::string manifest;
    const char* says;
  };
  auto with_model_header = [&](const std::string& header_text) {
    std::map<std::string, std::string> files = valid;
    files[kModelFile] = JoinTensors(header_text, model.data);
    return files;
  };
  // A tensor's shape: the value ReadIndexArray used to dump().
  std::string shape_deep = header.dump();
  const std::string shape_key = "\"shape\":";
  shape_deep.replace(shape_deep.find(shape_key) + shape_key.size(),
                     shape_deep.find(']', shape_deep.find(shape_key)) -
                         (shape_deep.find(shape_key) + shape_key.size()) + 1,
                     Nested(kDeep));
  std::string metadata_deep = header.dump();
  metadata_deep.insert(metadata_deep.find("\"__metadata__\":{") + 16,
                       absl::StrCat("\"info.deep\":", Nested(kDeep), ","));
  std::map<std::string, std::string> dense_deep = valid;
  dense_deep[kDenseFile] = JoinTensors(Nested(kDeep), SplitTensors(valid.at(kDenseFile)).data);
  const std::vector<Case> cases = {
      {"a tensor shape nested 300000 deep", with_model_header(shape_deep), false, "",
       "model.safetensors: header nests arrays or objects deeper than 64 levels"},
      {"the whole header an array nested 300000 deep", with_model_header(Nested(kDeep)), false,
       "", "model.safetensors: header nests"},
      {"a metadata value nested 300000 deep", with_model_header(metadata_deep), false, "",
       "model.safetensors: header nests"},
      {"the dense header nested 300000 deep", dense_deep, false, "",
       "dense.safetensors: header nests"},
      {"a manifest entry nested 30000 deep (inside the cap)", valid, true,
       absl::StrCat("{\"format_version\": 1, \"files\": {\"model.safetensors\": ",
                    Nested(30000), "}}"),
       "manifest.json: not a JSON object (it nests arrays or objects deeper than 64 levels)"},
      {"a manifest of 300000 '[' (inside the 16 MiB cap: parsed to 64 levels)", valid, true,
       Nested(kDeep), "deeper than 64 levels"},
      {"a manifest of 17 MiB of '[' (over the 16 MiB cap, refused unread)", valid, true,
       std::string(17 << 20, '['), "a manifest can need"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const fs::path dir = root_ / "m" / "1";
    WriteVersion(dir, c.files);
    if (c.raw_manifest) WriteBytes(dir / kManifestFile, c.manifest);
    const absl::Status status = LoadCheckpoint(dir.string()).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_THAT(status.message(), HasSubstr(c.says));
    EXPECT_LT(status.message().size(), 400u) << "the error echoes the input";
  }
  // The cap itself: 64 levels parse, 65 do not.
  EXPECT_OK(ParseJsonBounded(Nested(64)).status());
  EXPECT_THAT(ParseJsonBounded(Nested(65)).status().message(), HasSubstr("deeper than 64"));
}

// Metadata that declares sizes no file holds. A top-k DSM with experts =
// 2^40 aborted the process with std::bad_alloc (L*E routing counters)
// before any check; every dimension of every kind must be matched against
// the tensors the file holds before anything is sized by it.
TEST_F(HostileCheckpointTest, HugeDeclaredSizesOfEveryKindAreErrorsNeverAnAbort) {
  const std::vector<std::string> huge = {"1099511627776", "9223372036854775807", "2147483649"};
  struct Target {
    Kind kind;
    const char* file;
    std::vector<std::string> keys;
  };
  const std::vector<std::string> dsm_keys = {"input_dim", "output_dim", "width",
                                             "blocks",    "experts",    "active_units"};
  const std::vector<Target> targets = {
      {Kind::kLsh, kModelFile, {"input_dim", "output_dim", "tables", "hashes", "degree"}},
      {Kind::kDsmLsh, kModelFile, dsm_keys},
      {Kind::kDsmHash, kModelFile, dsm_keys},
      {Kind::kDsmKmeans, kModelFile, dsm_keys},
      {Kind::kDsmTopk, kModelFile, dsm_keys},
      {Kind::kDsmLsh, kDenseFile, {"input_dim", "output_dim", "width"}},
  };
  int cases = 0;
  for (const Target& t : targets) {
    const std::map<std::string, std::string> valid = ValidFiles(t.kind);
    const Tensors tensors = SplitTensors(valid.at(t.file));
    for (const std::string& key : t.keys) {
      for (const std::string& value : huge) {
        SCOPED_TRACE(absl::StrCat(KindName(t.kind), " ", t.file, " ", key, "=", value));
        Json header = Json::parse(tensors.header);
        header["__metadata__"][key] = value;
        std::map<std::string, std::string> files = valid;
        files[t.file] = JoinTensors(header.dump(), tensors.data);
        const absl::Status status = LoadExpectingError(files);
        EXPECT_THAT(status.message(), AnyOf(HasSubstr(kModelFile), HasSubstr(kDenseFile)));
        ++cases;
      }
    }
  }
  // Tensor tables that declare more data than there is.
  const std::vector<std::pair<Kind, std::pair<const char*, std::string>>> shapes = {
      {Kind::kLsh, {kModelFile, "table.0.keys"}},
      {Kind::kLsh, {kModelFile, "hash.projection"}},
      {Kind::kDsmTopk, {kModelFile, "bottom.weight"}},
      {Kind::kDsmKmeans, {kDenseFile, "top.weight"}},
  };
  for (const auto& [kind, target] : shapes) {
    const auto& [file, tensor] = target;
    SCOPED_TRACE(absl::StrCat(KindName(kind), " ", file, " ", tensor, " declared 2^40 long"));
    const std::map<std::string, std::string> valid = ValidFiles(kind);
    const Tensors tensors = SplitTensors(valid.at(file));
    Json header = Json::parse(tensors.header);
    const uint64_t begin = header[tensor]["data_offsets"][0].get<uint64_t>();
    header[tensor]["shape"] = {uint64_t{1} << 40};
    header[tensor]["data_offsets"] = {begin, begin + (uint64_t{8} << 40)};
    std::map<std::string, std::string> files = valid;
    files[file] = JoinTensors(header.dump(), tensors.data);
    EXPECT_THAT(LoadExpectingError(files).message(), HasSubstr(file));
    ++cases;
  }
  // The case that aborted: named as the format says.
  {
    const std::map<std::string, std::string> valid = ValidFiles(Kind::kDsmTopk);
    const Tensors tensors = SplitTensors(valid.at(kModelFile));
    Json header = Json::parse(tensors.header);
    header["__metadata__"]["experts"] = "1099511627776";
    std::map<std::string, std::string> files = valid;
    files[kModelFile] = JoinTensors(header.dump(), tensors.data);
    EXPECT_THAT(LoadExpectingError(files).message(),
                HasSubstr("the topk router has no experts: experts must be 0"));
  }
  std::printf("  %d huge declared sizes, each an error\n", cases);
  EXPECT_EQ(cases, 5 * 3 + 4 * 6 * 3 + 3 * 3 + 4);
}

// --max_model_bytes: a version's estimated cost is held against the budget
// before its tensor files are read, and again (with the activation
// workspace its shapes imply) before the engine allocates anything.
TEST_F(HostileCheckpointTest, AVersionOverTheMemoryBudgetIsRefusedBeforeItIsRead) {
  const std::map<std::string, std::string> valid = ValidFiles(Kind::kDsmLsh);
  const uint64_t file_bytes = valid.at(kModelFile).size() + valid.at(kDenseFile).size();
  const fs::path dir = root_ / "m" / "1";
  WriteVersion(dir, valid);
  // Before the files are read, at least two copies of them (kMinFileCopies).
  LoadOptions options{.max_bytes = 2 * file_bytes - 1, .budget_name = "--max_model_bytes"};
  // The model file is a FIFO: were it opened before the budget check, the
  // error would say so.
  fs::remove(dir / kModelFile);
  ASSERT_EQ(::mkfifo((dir / kModelFile).c_str(), 0644), 0);
  absl::Status status = LoadCheckpoint(dir.string(), options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_THAT(status.message(), HasSubstr(absl::StrCat("budget of ", 2 * file_bytes - 1,
                                                       " bytes (--max_model_bytes)")));
  EXPECT_THAT(status.message(), HasSubstr(absl::StrCat("estimated ", 2 * file_bytes)));

  // Within the budget it loads.
  WriteVersion(dir, valid);
  options.max_bytes = 64 << 20;
  EXPECT_OK(LoadCheckpoint(dir.string(), options).status());

  // An LSH table model holds its files three times, and its manifest
  // (format_version 2) says it is one by naming hash.projection: three
  // copies are held against the budget before it is read.
  const std::map<std::string, std::string> lsh = ValidFiles(Kind::kLsh);
  const uint64_t lsh_bytes = lsh.at(kModelFile).size() + lsh.at(kDenseFile).size();
  WriteVersion(dir, lsh);
  fs::remove(dir / kModelFile);
  ASSERT_EQ(::mkfifo((dir / kModelFile).c_str(), 0644), 0);
  options.max_bytes = 3 * lsh_bytes - 1;
  status = LoadCheckpoint(dir.string(), options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_THAT(status.message(), HasSubstr(absl::StrCat("estimated ", 3 * lsh_bytes, " bytes")));
  EXPECT_THAT(status.message(), HasSubstr(absl::StrCat("3 x ", lsh_bytes, " bytes of tensor files")));
}

// A wide network with a tiny input and output: small files, but each
// thread's activation workspace is rows x width floats.
TEST_F(HostileCheckpointTest, AWorkspaceOverTheBudgetIsRefusedThoughTheFilesFit) {
  constexpr int64_t kWidth = 1 << 16;
  Checkpoint c;
  c.sparse = RandomDsm({.d = 1, .o = 1, .blocks = 1, .active_units = 1,
                        .router = RouterKind::kTopk, .topk_block_units = kWidth},
                       3);
  c.dense = RandomDense(1, kWidth, 1, Activation::kRelu, 4);
  const std::map<std::string, std::string> files = {{kModelFile, SerializeSparse(c)},
                                                    {kDenseFile, SerializeDense(*c.dense)}};
  const uint64_t file_bytes = files.at(kModelFile).size() + files.at(kDenseFile).size();
  const LoadOptions options{.max_bytes = 16 << 20, .batch_rows = 128, .threads = 4,
                            .budget_name = "--max_model_bytes"};
  ASSERT_LT(3 * file_bytes, options.max_bytes);
  // 4 threads x 128 rows x 2^16 units x 4 bytes x 2 paths, at least.
  EXPECT_GE(EstimateLoadBytes(c, file_bytes, options), uint64_t{4} * 128 * kWidth * 4 * 2);
  const absl::Status status = LoadExpectingError(files, options);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_THAT(status.message(), HasSubstr("of activation workspace for 4 thread(s) at 128 rows"));
  EXPECT_THAT(status.message(), HasSubstr("(--max_model_bytes)"));
  // One thread at one row fits.
  EXPECT_OK(LoadCheckpoint((root_ / "m" / "1").string(),
                           LoadOptions{.max_bytes = 16 << 20, .batch_rows = 1, .threads = 1})
                .status());
}

TEST(DefaultModelBudgetTest, IsHalfTheMemoryAvailableAtMost) {
  const uint64_t budget = DefaultModelBudgetBytes();
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  meminfo >> key >> kib;
  ASSERT_EQ(key, "MemTotal:");
  EXPECT_GT(budget, 0u);
  EXPECT_LE(budget, kib * 1024 / 2);
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

// Bytes of address space the process uses now (VmSize).
uint64_t AddressSpaceBytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmSize:", 0) == 0) return std::stoull(line.substr(7)) * 1024;
  }
  return 0;
}

// The budget is the first line of defence; this is the net under it. With
// the budget out of the way and the address space capped, a model whose
// warm-up needs more memory than there is (a 2^20-unit network on one
// input: 128 rows x 2^20 floats of activations) fails that version with
// RESOURCE_EXHAUSTED, and the process and its other models go on.
TEST_F(CheckpointFaultsTest, RunningOutOfMemoryWhileLoadingFailsTheVersionNotTheProcess) {
  if (kSanitized) GTEST_SKIP() << "sanitizers reserve address space an rlimit would cut";
  constexpr int64_t kWidth = 1 << 20;
  Checkpoint wide;
  wide.sparse = RandomDsm({.d = 1, .o = 1, .blocks = 1, .active_units = 1,
                           .router = RouterKind::kTopk, .topk_block_units = kWidth},
                          5);
  ASSERT_OK(WriteCheckpoint((root_ / "wide").string(), 1, wide));
  Checkpoint small;
  small.sparse = RandomDsm({.d = 8, .o = 1, .experts = 4, .active_units = 8}, 6);
  ASSERT_OK(WriteCheckpoint((root_ / "small").string(), 1, small));
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  // In a child process: the address-space cap must not outlive the test.
  auto child = [this] {
    ModelRepository::Options options;
    options.max_batch_rows = 128;
    options.max_model_bytes = uint64_t{1} << 60;  // no budget: only the net
    options.log = [](const std::string&) {};
    const uint64_t cap = AddressSpaceBytes() + (uint64_t{384} << 20);
    rlimit limit;
    limit.rlim_cur = cap;
    limit.rlim_max = cap;
    if (::setrlimit(RLIMIT_AS, &limit) != 0) std::_Exit(3);
    std::vector<std::string> errors;
    absl::StatusOr<std::unique_ptr<ModelRepository>> repo =
        ModelRepository::Open(root_.string(), options, &errors);
    if (!repo.ok()) std::_Exit(4);
    const auto snapshot = (*repo)->snapshot();
    const bool small_serves =
        snapshot->count("small") > 0 && !snapshot->at("small").versions.empty();
    const bool wide_failed =
        snapshot->count("wide") > 0 && snapshot->at("wide").failures.count(1) > 0 &&
        absl::StrContains(snapshot->at("wide").failures.at(1).error, "RESOURCE_EXHAUSTED");
    for (const std::string& e : errors) std::fprintf(stderr, "%s\n", e.c_str());
    std::_Exit(small_serves && wide_failed ? 0 : 5);
  };
  EXPECT_EXIT(child(), ::testing::ExitedWithCode(0), "RESOURCE_EXHAUSTED");
}

// Runs `f` on another thread; fails (and ends the process, which a hang
// would otherwise keep for ever) if it takes longer than `limit`.
void WithinTime(std::chrono::seconds limit, const char* what, std::function<void()> f) {
  std::packaged_task<void()> task(std::move(f));
  std::future<void> done = task.get_future();
  std::thread thread(std::move(task));
  if (done.wait_for(limit) != std::future_status::ready) {
    std::fprintf(stderr, "HANG: %s took more than %lld s\n", what,
                 static_cast<long long>(limit.count()));
    std::_Exit(1);
  }
  thread.join();
  done.get();
}

// Every file the server reads (manifest.json, model.safetensors,
// dense.safetensors, config.pbtxt) replaced by a FIFO with no writer, a
// symlink to /dev/zero, a character device, a directory, or a symlink to a
// valid copy outside the repository. Opening a FIFO blocked for ever and
// /dev/zero grew without bound (config.pbtxt was read with an ifstream
// under the repository lock, hanging start-up). Each is an error for that
// version or config alone, at start-up, on a rescan and through LoadModel;
// the version before it and every other model keep serving.
TEST_F(CheckpointFaultsTest, SpecialFilesInPlaceOfAnyFileAreErrorsNeverAHang) {
  const fs::path outside = fs::path(root_.string() + "_outside");
  fs::remove_all(outside);
  fs::create_directories(outside);
  struct Special {
    const char* name;
    std::function<void(const fs::path& at, const fs::path& valid_copy)> make;
  };
  const std::vector<Special> specials = {
      {"fifo", [](const fs::path& at, const fs::path&) { ASSERT_EQ(::mkfifo(at.c_str(), 0644), 0); }},
      {"devzero_link", [](const fs::path& at, const fs::path&) { fs::create_symlink("/dev/zero", at); }},
      {"chardev",
       [](const fs::path& at, const fs::path&) {
         ASSERT_EQ(::mknod(at.c_str(), S_IFCHR | 0644, makedev(1, 5)), 0) << std::strerror(errno);
       }},
      {"directory", [](const fs::path& at, const fs::path&) { fs::create_directory(at); }},
      {"link_outside", [](const fs::path& at, const fs::path& copy) { fs::create_symlink(copy, at); }},
  };
  const bool can_mknod = [&] {
    const fs::path probe = outside / "probe";
    const bool ok = ::mknod(probe.c_str(), S_IFCHR | 0644, makedev(1, 5)) == 0;
    fs::remove(probe);
    return ok;
  }();
  const std::vector<std::string> files = {kManifestFile, kModelFile, kDenseFile, "config.pbtxt"};
  const std::string config = "version_policy { all {} }\n";
  std::vector<std::string> models;
  for (const std::string& file : files) {
    for (const Special& special : specials) {
      if (std::string(special.name) == "chardev" && !can_mknod) continue;
      const std::string model = absl::StrCat(special.name, "_", fs::path(file).stem().string());
      models.push_back(model);
      Checkpoint c;
      c.sparse = RandomDsm({.d = 8, .o = 1, .experts = 4, .active_units = 8}, 31);
      c.dense = RandomDense(8, 32, 1, Activation::kRelu, 32);
      ASSERT_OK(WriteCheckpoint((root_ / model).string(), 1, c));
      const fs::path copy = outside / model;
      fs::create_directories(copy);
      if (file == "config.pbtxt") {
        WriteBytes(copy / file, config);
        special.make(root_ / model / file, copy / file);
      } else {
        ASSERT_OK(WriteCheckpoint((root_ / model).string(), 2, c));
        const fs::path at = root_ / model / "2" / file;
        fs::copy_file(at, copy / file);
        fs::remove(at);
        special.make(at, copy / file);
      }
    }
  }
  Publish("good", 1);
  std::vector<std::string> log;
  ModelRepository::Options options;
  options.max_batch_rows = 4;
  options.log = [&log](const std::string& line) { log.push_back(line); };
  std::unique_ptr<ModelRepository> repo;
  WithinTime(std::chrono::seconds(60), "start-up", [&] {
    absl::StatusOr<std::unique_ptr<ModelRepository>> opened =
        ModelRepository::Open(root_.string(), options, nullptr);
    ASSERT_OK(opened.status());
    repo = *std::move(opened);
  });
  ASSERT_NE(repo, nullptr);
  auto check = [&](const char* when) {
    SCOPED_TRACE(when);
    const auto snapshot = repo->snapshot();
    ASSERT_EQ(snapshot->count("good"), 1u);
    EXPECT_THAT(snapshot->at("good").versions, ::testing::SizeIs(1));
    for (const std::string& model : models) {
      SCOPED_TRACE(model);
      ASSERT_EQ(snapshot->count(model), 1u);
      const ModelState& state = snapshot->at(model);
      ASSERT_EQ(state.versions.count(1), 1u) << "version 1 stopped serving";
      EXPECT_EQ(state.versions.count(2), 0u);
      std::string error;
      if (absl::EndsWith(model, "_config")) {
        error = state.config_error;
        EXPECT_FALSE(state.config.version_policy().has_all()) << "a special file was read";
      } else {
        ASSERT_EQ(state.failures.count(2), 1u);
        error = state.failures.at(2).error;
      }
      EXPECT_THAT(error, AnyOf(HasSubstr("is not a regular file"),
                               HasSubstr("leads outside the model repository")));
      EXPECT_THAT(error, Not(HasSubstr(root_.string())));
    }
  };
  check("at start-up");
  WithinTime(std::chrono::seconds(60), "a rescan", [&] { repo->Rescan(); });
  check("after a rescan");
  WithinTime(std::chrono::seconds(60), "LoadModel", [&] {
    for (const std::string& model : models) (void)repo->LoadModel(model);
  });
  check("after LoadModel");
  std::printf("  %zu special-file cases\n", models.size());
  EXPECT_EQ(models.size(), can_mknod ? 20u : 16u);
  repo.reset();
  fs::remove_all(outside);
}

}  // namespace
}  // namespace sparse
