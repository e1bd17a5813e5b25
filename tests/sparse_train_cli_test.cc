// End-to-end tests of the sparse-train binary: publishing, --json, version
// numbering, the errors a user meets with bad files or a bad output
// directory (clear message, exit 1, no version left behind), where each flag
// applies (every flag tried in every kind of run), and the names refused.

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <set>
#include <string>

#include "gtest/gtest.h"
#include "model_store/checkpoint.h"
#include "tests/testing/command_runs.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace sparse {
namespace {

namespace fs = std::filesystem;

using Output = CommandOutput;

Output RunTrain(const std::string& args) {
  return RunCommand(std::string(SPARSE_TRAIN_BINARY) + " " + args + " 2>&1");
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
  Output second = RunTrain("--quiet --train_rows=4096 --test_rows=1024 --json --model=lsh_table --tables=2 "
                           "--hashes=6 --repository=" + repo + " --model_name=poly");
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
                           "--dense_width", "--repository", "--model_name", "--model_version", "--json"}) {
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
           {"--dataset=npy --train_file=" + good + publish, "names csv data, but this run reads --dataset=npy"},
           {"--dataset=npy --train_file=" + dir_.string() + "/x.npy" + publish, "'inputs.npy,targets.npy'"},
           {"--dataset=csv --train_file=" + dir_.string() + "/missing.csv" + publish, "cannot open"},
           {std::string(kSmall) + "--repository=" + file + "/repo --model_name=m", "cannot create"},
           {std::string(kSmall) + "--repository=" + repo + " --model_name=../escape", "plain directory name"},
           {std::string(kSmall) + "--router=lsh --experts=6" + publish, "power-of-two"},
           {std::string(kSmall) + "--model=mlp" + publish, "--model must be dsm or lsh_table"},
           {std::string(kSmall), "--repository and --model_name"},
           {std::string(kSmall) + "stray" + publish, "unexpected argument 'stray'"},
           {"--quiet --train_rows=512 --search --budget_flops=300 --search_validation=1.5" + publish,
            "--search_validation must be in (0, 1), got 1.5"},
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
  ASSERT_EQ(RunTrain(std::string(kSmall) + "--repository=" + repo + " --model_name=m --model_version=3").exit_code, 0);
  const std::string before = [&] {
    std::ifstream in(dir_ / "repo" / "m" / "3" / kManifestFile);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }();
  Output again = RunTrain(std::string(kSmall) + "--seed=9 --repository=" + repo + " --model_name=m --model_version=3");
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.out.find("version 3 already exists"), std::string::npos) << again.out;
  std::ifstream in(dir_ / "repo" / "m" / "3" / kManifestFile);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), before);
  EXPECT_EQ(Versions("m"), std::vector<std::string>{"3"});
}

// ---- Issue 31, trap 1: every flag either applies or is refused, naming why.

// The runs each flag is tried in; each run's own command line is valid.
enum TrainRun : uint32_t {
  kPolynomial = 1 << 0,    // the default DSM (lsh router) on the random polynomial
  kManifold = 1 << 1,
  kReluNet = 1 << 2,
  kCsv = 1 << 3,           // --train_file=train.csv, the format implied by its name
  kCsvTestFile = 1 << 4,   // ... and --test_file=test.csv
  kNpy = 1 << 5,           // --dataset=npy
  kTopk = 1 << 6,          // --router=topk
  kLshTable = 1 << 7,      // --model=lsh_table
  kEuclidean = 1 << 8,     // --model=lsh_table --family=euclidean
  kPublish = 1 << 9,       // the default DSM, published (every other run is --dry_run)
  kSearch = 1 << 10,       // --search --budget_flops=...
  kRunCount = 11,
};
constexpr uint32_t kEvery = (1u << kRunCount) - 1;
constexpr uint32_t kLshRuns = kLshTable | kEuclidean;
constexpr uint32_t kDsmRuns = kEvery & ~kLshRuns;
constexpr uint32_t kChosenDsmRuns = kDsmRuns & ~kSearch;  // router, E and k set by flags
constexpr uint32_t kCsvRuns = kCsv | kCsvTestFile;
constexpr uint32_t kSyntheticRuns = kEvery & ~(kCsvRuns | kNpy);
constexpr uint32_t kPolynomialRuns = kSyntheticRuns & ~(kManifold | kReluNet);

// Each row of Table() is a FlagCase (tests/testing/command_runs.h): its
// `applies` runs exit 0; every other run refuses it.

std::string Npy(const std::vector<int64_t>& shape, const std::vector<float>& values) {
  std::string dims;
  for (int64_t n : shape) dims += std::to_string(n) + ",";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  header.append(63 - (10 + header.size()) % 64, ' ').push_back('\n');
  std::string out = std::string("\x93NUMPY\x01\x00", 8);
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>(header.size() >> 8));
  out += header;
  out.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  return out;
}

// Rows of y = x1 * x2 + x3 (3 inputs, 1 target) as CSV text.
std::string CsvRows(int rows, int seed) {
  std::string out = "# x1, x2, x3 -> y\nx1,x2,x3,y\n";
  for (int r = 0; r < rows; ++r) {
    const float x1 = std::sin(r * 1.3f + seed), x2 = std::cos(r * 0.7f), x3 = std::sin(r * 0.1f);
    out += absl::StrFormat("%.5f,%.5f,%.5f,%.5f\n", x1, x2, x3, x1 * x2 + x3);
  }
  return out;
}

class FlagRulesCliTest : public SparseTrainCliTest {
 protected:
  void SetUp() override {
    SparseTrainCliTest::SetUp();
    train_csv_ = Write("train.csv", CsvRows(300, 0));
    test_csv_ = Write("test.csv", CsvRows(80, 1));
    std::vector<float> x(300 * 3), y(300);
    for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(static_cast<float>(i));
    for (size_t i = 0; i < y.size(); ++i) y[i] = x[3 * i] * x[3 * i + 1];
    npy_ = Write("x.npy", Npy({300, 3}, x)) + "," + Write("y.npy", Npy({300}, y));
  }

  // The command line of each run.
  std::string Base(TrainRun run) const {
    const std::string small = " --train_rows=256 --test_rows=64 --d=4";
    const std::string dsm = " --experts=4 --active_units=8";
    const std::string common = " --quiet --threads=1" + std::string(run == kPublish ? "" : " --dry_run");
    switch (run) {
      case kPolynomial: return "--dataset=polynomial" + small + dsm + common;
      case kManifold:
        return "--dataset=manifold --d=8 --manifold_dim=2 --poly_degree=2 --train_rows=256 "
               "--test_rows=64" + dsm + common;
      case kReluNet: return "--dataset=relu_net --relu_width=8" + small + dsm + common;
      case kCsv: return "--train_file=" + train_csv_ + dsm + common;
      case kCsvTestFile: return "--train_file=" + train_csv_ + " --test_file=" + test_csv_ + dsm + common;
      case kNpy: return "--dataset=npy --train_file=" + npy_ + dsm + common;
      case kTopk: return "--dataset=polynomial --router=topk --topk_width=32 --active_units=8" + small + common;
      case kLshTable: return "--dataset=polynomial --model=lsh_table --tables=2 --hashes=4" + small + common;
      case kEuclidean:
        return "--dataset=polynomial --model=lsh_table --family=euclidean --tables=2 --hashes=2" + small + common;
      case kPublish:
        return "--dataset=polynomial" + small + dsm + common + " --repository=" + (dir_ / "repo").string() +
               " --model_name=m";
      case kSearch: return "--dataset=polynomial --search --budget_flops=100" + small + common;
      case kRunCount: break;
    }
    return "";
  }

  // Each flag of sparse-train, a value valid wherever the flag applies, and
  // the runs it applies to. A flag added to sparse-train must join this list.
  std::vector<FlagCase> Table() const {
    return {
        {"dataset", "polynomial", kEvery, kManifold | kReluNet | kCsvRuns | kNpy},
        {"d", "4", kSyntheticRuns},
        {"poly_degree", "2", kPolynomialRuns | kManifold},
        {"manifold_dim", "2", kManifold},
        {"relu_width", "8", kReluNet},
        {"function_seed", "2", kSyntheticRuns},
        {"train_rows", "200", kSyntheticRuns},
        {"test_rows", "50", kSyntheticRuns},
        {"train_file", train_csv_, kCsvRuns},  // npy: a .csv name under --dataset=npy
        {"test_file", test_csv_, kCsvRuns},
        {"outputs", "1", kCsvRuns},
        {"csv_separator", ",", kCsvRuns},
        {"holdout", "0.25", kCsv | kNpy},
        {"model", "dsm", kDsmRuns, kLshRuns},
        {"router", "lsh", kChosenDsmRuns & ~kTopk, kTopk},
        {"experts", "4", kChosenDsmRuns & ~kTopk},
        {"active_units", "8", kChosenDsmRuns},
        {"blocks", "1", kChosenDsmRuns},
        {"topk_width", "32", kTopk},
        {"activation", "relu", kEvery},
        {"tables", "2", kLshRuns},
        {"hashes", "2", kLshRuns},
        {"lsh_degree", "0", kLshRuns},
        {"family", "hyperplane", kLshTable, kEuclidean},
        {"bucket_width", "0.5", kEuclidean},
        {"min_bucket_rows", "1", kLshRuns},
        {"dense_width", "8", kEvery},
        // In the other DSM runs, --search would meet the flags that set E and k.
        {"search", "true", kSearch, kChosenDsmRuns},
        {"budget_flops", "120", kSearch},
        {"budget_bytes", "400", kSearch},
        {"search_validation", "0.3", kSearch},
        {"ridge", "1e-4", kEvery},
        {"closed_form_limit", "4096", kEvery},
        {"epochs", "2", kEvery},
        {"learning_rate", "0.002", kEvery},
        {"precision", "BF16", kEvery},
        {"seed", "2", kEvery},
        {"threads", "1", kEvery},
        {"repository", (dir_ / "repo").string(), kPublish},
        {"model_name", "m2", kPublish},
        {"model_version", "1000", kPublish},
        {"dry_run", "true", kEvery & ~kPublish, kPublish},
        {"json", "true", kEvery},
        {"quiet", "true", kEvery},
    };
  }

  std::string train_csv_, test_csv_, npy_;
};

// Issue 31, "a trainer that picks a good model": --search publishes the
// point it chose, within the budget, and says so in the checkpoint.
TEST_F(FlagRulesCliTest, SearchPrintsItsCandidatesAndPublishesTheChosenOneWithinBudget) {
  Output r = RunTrain("--quiet --dataset=polynomial --d=4 --train_rows=2048 --test_rows=256 --search "
                      "--budget_flops=300 --repository=" + (dir_ / "repo").string() + " --model_name=s");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("search: budget 300 FLOPs per row;"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  >*"), std::string::npos) << r.out;
  absl::StatusOr<LoadedModel> loaded = LoadCheckpoint((dir_ / "repo" / "s" / "1").string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_LE(loaded->sparse->info().flops_per_row, 300);
  EXPECT_NE(loaded->info.at("search").find("chosen of"), std::string::npos);
  Output none = RunTrain("--quiet --dry_run --search");
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(none.out.find("--search needs a budget"), std::string::npos) << none.out;
}

TEST_F(FlagRulesCliTest, EveryFlagInHelpIsInTheTable) {
  Output help = RunTrain("--help");
  ASSERT_GT(FlagsInHelp(help.out).size(), 30u) << help.out;
  EXPECT_EQ(FlagsInHelp(help.out), TableFlags(Table())) << "add the new flag to FlagRulesCliTest::Table() with the runs it "
                              "applies to, and to trainer/flag_rules.cc";
}

TEST_F(FlagRulesCliTest, EachFlagRunsWhereItAppliesAndIsRefusedNamingWhyElsewhere) {
  for (uint32_t bit = 0; bit < kRunCount; ++bit) {
    const TrainRun run = static_cast<TrainRun>(1u << bit);
    Output plain = RunTrain(Base(run));
    ASSERT_EQ(plain.exit_code, 0) << "run " << bit << ": " << Base(run) << "\n" << plain.out;
  }
  struct Job {
    std::string flag, args;
    bool applies;
    std::future<Output> output;
  };
  std::vector<Job> jobs;
  for (const FlagCase& c : Table()) {
    for (uint32_t bit = 0; bit < kRunCount; ++bit) {
      const TrainRun run = static_cast<TrainRun>(1u << bit);
      if (c.chooses & run) continue;
      jobs.push_back({c.flag, Base(run) + " --" + c.flag + "=" + c.value, (c.applies & run) != 0, {}});
    }
  }
  // Four runs at a time (a run mostly waits on start-up); the runs that
  // publish number versions in one repository, so they go one by one.
  for (size_t i = 0; i < jobs.size(); ++i) {
    const bool publishes = jobs[i].args.find("--dry_run") == std::string::npos;
    jobs[i].output = std::async(publishes ? std::launch::deferred : std::launch::async, RunTrain,
                                jobs[i].args);
    if (i % 4 == 3 || i + 1 == jobs.size()) {
      for (size_t j = i - i % 4; j <= i; ++j) jobs[j].output.wait();
    }
  }
  for (Job& job : jobs) {
    const Output r = job.output.get();
    if (job.applies) {
      EXPECT_EQ(r.exit_code, 0) << job.args << "\n" << r.out;
    } else {
      EXPECT_EQ(r.exit_code, 1) << job.args << "\n" << r.out;
      EXPECT_NE(r.out.find("sparse-train: error: --" + job.flag), std::string::npos)
          << job.args << "\n" << r.out;
    }
  }
}

// Issue 31, trap 1: a --train_file named .csv was ignored without
// --dataset=csv (a model of the synthetic polynomial was published under
// the user's name), and so were --outputs and --holdout.
TEST_F(FlagRulesCliTest, TrainFileImpliesCsvAndOutputsAndHoldoutApply) {
  std::string two_targets = "x1;x2;y1;y2\n";
  for (int r = 0; r < 300; ++r) {
    two_targets += absl::StrFormat("%.4f;%.4f;%.4f;%.4f\n", std::sin(r * 0.3), std::cos(r * 0.2),
                                   std::sin(r * 0.05), std::cos(r * 0.07));
  }
  const std::string file = Write("two.csv", two_targets);
  Output r = RunTrain("--quiet --dry_run --experts=2 --active_units=4 --train_file=" + file +
                      " --outputs=2 --holdout=0.5");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("data: csv two.csv (0.5 held out)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("150 train rows, 150 test rows, d=2, o=2"), std::string::npos) << r.out;

  const std::string txt = Write("data.txt", CsvRows(100, 0));
  Output unknown = RunTrain("--quiet --dry_run --train_file=" + txt);
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.out.find("cannot tell the format of --train_file=" + txt +
                             " from its name (expected a .csv or .tsv file, "
                             "'inputs.npy,targets.npy' or "
                             "'images-idx3-ubyte.gz,labels-idx1-ubyte.gz'): pass --dataset=csv, "
                             "npy or idx"),
            std::string::npos)
      << unknown.out;
  Output named = RunTrain("--quiet --dry_run --json --experts=2 --active_units=4 --dataset=csv "
                          "--csv_separator=, --train_file=" + txt);
  ASSERT_EQ(named.exit_code, 0) << named.out;
  EXPECT_EQ(nlohmann::json::parse(named.out)["data"], "csv data.txt (0.2 held out)");

  Output synthetic_flag = RunTrain("--quiet --dry_run --dataset=csv --train_file=" + train_csv_ + " --d=8");
  EXPECT_EQ(synthetic_flag.exit_code, 1);
  EXPECT_NE(synthetic_flag.out.find("--d applies only to synthetic data"), std::string::npos)
      << synthetic_flag.out;
  Output bad_dataset = RunTrain("--quiet --dry_run --dataset=CSV --train_file=" + train_csv_);
  EXPECT_NE(bad_dataset.out.find("--dataset must be csv, npy, idx, fashion_mnist or a synthetic "
                                 "function"),
            std::string::npos)
      << bad_dataset.out;
}

// Real data no one here made (issue 34): Fashion-MNIST from Debian's
// dataset-fashion-mnist, reduced to its first 3,000 training and 1,000 test
// images. A DSM and its dense twin both classify far above chance (0.1).
TEST_F(SparseTrainCliTest, TrainsOnFashionMnistFromDebiansPackage) {
  Output r = RunTrain("--quiet --dry_run --json --dataset=fashion_mnist --train_rows=3000 "
                      "--test_rows=1000 --experts=8 --active_units=64");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["data"], "Fashion-MNIST (3000 training and 1000 test images of 28 x 28 pixels, 10 classes)");
  EXPECT_EQ(j["train_rows"], 3000);
  EXPECT_EQ(j["test_rows"], 1000);
  EXPECT_GT(j["sparse"]["test_accuracy"].get<double>(), 0.6) << r.out;
  EXPECT_GT(j["dense"]["test_accuracy"].get<double>(), 0.6) << r.out;
  Output file_flag = RunTrain("--quiet --dry_run --dataset=fashion_mnist --holdout=0.5");
  EXPECT_EQ(file_flag.exit_code, 1);
  EXPECT_NE(file_flag.out.find("--holdout applies only to --dataset=csv, npy or idx"),
            std::string::npos)
      << file_flag.out;
}

// Issue 31, trap 6: "mine.dense" would be model mine.dense over the native
// API but the dense twin of "mine" over REST and OIP.
TEST_F(SparseTrainCliTest, DenseSuffixedModelNamesAreRefusedByTheTrainerAndTheExport) {
  const std::string repo = (dir_ / "repo").string();
  Output r = RunTrain(std::string(kSmall) + "--repository=" + repo + " --model_name=mine.dense");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("--model_name 'mine.dense' ends in '.dense', which names the dense twin of "
                       "model 'mine' over REST and OIP"),
            std::string::npos)
      << r.out;
  EXPECT_FALSE(fs::exists(dir_ / "repo" / "mine.dense"));

  const std::string script = Write("export_dense.py", R"PY(
import importlib.util, os, sys
spec = importlib.util.spec_from_file_location("export", sys.argv[1])
export = importlib.util.module_from_spec(spec)
spec.loader.exec_module(export)
for call in (lambda d: export.write_version(d, b"not read"),
             lambda d: export.export_lsh_table(d, [[1.0]], [0.0], [([0], [[1.0]], [0.0])]),
             lambda d: export.export_dsm(object(), d)):
    try:
        call(os.path.join(sys.argv[2], "mine.dense"))
        sys.exit("accepted a model directory named mine.dense")
    except ValueError as e:
        print(e)
print("exists" if os.path.exists(os.path.join(sys.argv[2], "mine.dense")) else "nothing written")
export.export_lsh_table(os.path.join(sys.argv[2], "mine"), [[1.0]], [0.0], [([0], [[1.0]], [0.0])])
print("mine published")
)PY");
  const Output python = RunCommand("/usr/bin/python3 " + script + " " + SPARSE_SOURCE_DIR +
                                   "/client/python/sparse_serve/export.py " + dir_.string() + " 2>&1");
  const std::string& out = python.out;
  EXPECT_EQ(python.exit_code, 0) << out;
  const std::string refusal =
      "model name 'mine.dense' ends in '.dense', which names the dense twin of model 'mine' over REST "
      "and OIP";
  size_t count = 0;
  for (size_t at = out.find(refusal); at != std::string::npos; at = out.find(refusal, at + 1)) ++count;
  EXPECT_EQ(count, 3u) << out;
  EXPECT_NE(out.find("nothing written\nmine published"), std::string::npos) << out;
}

}  // namespace
}  // namespace sparse
