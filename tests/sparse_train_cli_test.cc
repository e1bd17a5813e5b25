// End-to-end tests of the sparse-train binary: publishing, --json, version
// numbering, and the errors a user meets with bad files or a bad output
// directory (clear message, exit 1, no version left behind).
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "model_store/checkpoint.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace sparse {
namespace {

namespace fs = std::filesystem;

struct Output {
  int exit_code = -1;
  std::string out;  // stdout and stderr together
};

Output RunTrain(const std::string& args) {
  const std::string command = std::string(SPARSE_TRAIN_BINARY) + " " + args + " 2>&1";
  Output result;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) result.out.append(buf, n);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

class SparseTrainCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("sparse_train_cli_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& contents) {
    std::ofstream(dir_ / name) << contents;
    return (dir_ / name).string();
  }
  // Entries of <repo>/<model>, hidden ones included.
  std::vector<std::string> Versions(const std::string& model) {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir_ / "repo" / model, ec)) out.push_back(e.path().filename());
    std::sort(out.begin(), out.end());
    return out;
  }
  fs::path dir_;
};

constexpr char kSmall[] = "--quiet --train_rows=4096 --test_rows=1024 --experts=4 --active_units=16 ";

TEST_F(SparseTrainCliTest, PublishesNumberedVersionsThatLoad) {
  const std::string repo = (dir_ / "repo").string();
  Output first = RunTrain(std::string(kSmall) + "--repository=" + repo + " --model_name=poly");
  ASSERT_EQ(first.exit_code, 0) << first.out;
  EXPECT_NE(first.out.find("test MSE"), std::string::npos) << first.out;
  EXPECT_NE(first.out.find("published"), std::string::npos) << first.out;
  Output second = RunTrain(std::string(kSmall) + "--json --model=lsh_table --tables=2 --hashes=6 --repository=" +
                      repo + " --model_name=poly");
  ASSERT_EQ(second.exit_code, 0) << second.out;
  const nlohmann::json j = nlohmann::json::parse(second.out);
  EXPECT_EQ(j["published"], (dir_ / "repo" / "poly" / "2").string());
  EXPECT_GT(j["sparse"]["test_mse"].get<double>(), 0.0);
  EXPECT_EQ(j["dense"]["activated_units"], 2);
  EXPECT_EQ(Versions("poly"), (std::vector<std::string>{"1", "2"}));
  absl::StatusOr<LoadedModel> loaded = LoadCheckpoint((dir_ / "repo" / "poly" / "2").string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->sparse->info().kind, ModelKind::kLshTable);
  EXPECT_EQ(loaded->info.at("test_mse").substr(0, 4),
            absl::StrFormat("%.9g", j["sparse"]["test_mse"].get<double>()).substr(0, 4));
}

TEST_F(SparseTrainCliTest, HelpDocumentsTheFlags) {
  Output help = RunTrain("--help");
  for (const char* flag : {"--dataset", "--train_file", "--model", "--router", "--tables",
                           "--dense_width", "--repository", "--model_name", "--version", "--json"}) {
    EXPECT_NE(help.out.find(flag), std::string::npos) << flag;
  }
}

TEST_F(SparseTrainCliTest, BadInputsFailClearlyAndPublishNothing) {
  const std::string repo = (dir_ / "repo").string();
  const std::string publish = " --repository=" + repo + " --model_name=m";
  struct Case {
    std::string args, expected;
  };
  static constexpr char kBinary[] = "\x7f" "ELF\x01\x02\x03 binary junk\n\x00\x01,\x02\n";
  const std::string garbage = Write("garbage.csv", std::string(kBinary, sizeof(kBinary) - 1));
  const std::string ragged = Write("ragged.csv", "a,b,y\n1,2,3\n4,5\n");
  const std::string nan = Write("nan.csv", "1,2,3\n4,NaN,6\n");
  const std::string good = Write("good.csv", "1,2,3\n4,5,6\n7,8,9\n1,1,1\n2,2,2\n");
  const std::string file = Write("not_a_dir", "x");
  for (const Case& c : std::vector<Case>{
           {"--dataset=csv --train_file=" + garbage + publish, "garbage.csv:2: expected"},
           {"--dataset=csv --train_file=" + ragged + publish, "ragged.csv:3: expected 3 columns, got 2"},
           {"--dataset=csv --train_file=" + nan + publish, "nan.csv:2: column 2 is not a finite number"},
           {"--dataset=csv --train_file=" + good + " --test_file=" + ragged + publish,
            "ragged.csv:3: expected 3 columns"},
           {"--dataset=npy --train_file=" + good + publish, "'inputs.npy,targets.npy'"},
           {"--dataset=csv --train_file=" + dir_.string() + "/missing.csv" + publish, "cannot open"},
           {std::string(kSmall) + "--repository=" + file + "/repo --model_name=m", "cannot create"},
           {std::string(kSmall) + "--repository=" + repo + " --model_name=../escape", "plain directory name"},
           {std::string(kSmall) + "--router=lsh --experts=6" + publish, "power-of-two"},
           {std::string(kSmall) + "--model=mlp" + publish, "--model must be dsm or lsh_table"},
           {std::string(kSmall), "--repository and --model_name"},
           {std::string(kSmall) + "stray" + publish, "unexpected argument 'stray'"},
       }) {
    Output r = RunTrain(c.args);
    EXPECT_EQ(r.exit_code, 1) << c.args << "\n" << r.out;
    EXPECT_NE(r.out.find(c.expected), std::string::npos) << c.args << "\n" << r.out;
    EXPECT_NE(r.out.find("sparse-train: "), std::string::npos);
    std::vector<std::string> left = Versions("m");
    EXPECT_TRUE(left.empty()) << c.args << ": left " << left.front();
  }
}

TEST_F(SparseTrainCliTest, ExistingVersionIsNeverOverwritten) {
  const std::string repo = (dir_ / "repo").string();
  ASSERT_EQ(RunTrain(std::string(kSmall) + "--repository=" + repo + " --model_name=m --version=3").exit_code, 0);
  const std::string before = [&] {
    std::ifstream in(dir_ / "repo" / "m" / "3" / kManifestFile);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }();
  Output again = RunTrain(std::string(kSmall) + "--seed=9 --repository=" + repo + " --model_name=m --version=3");
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.out.find("version 3 already exists"), std::string::npos) << again.out;
  std::ifstream in(dir_ / "repo" / "m" / "3" / kManifestFile);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), before);
  EXPECT_EQ(Versions("m"), std::vector<std::string>{"3"});
}

}  // namespace
}  // namespace sparse
