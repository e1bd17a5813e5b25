// Issue 31: every sparse-cli flag either applies or is refused, naming why.
// Every kind of run (predict on each path, models, health, bench in each
// mode) is tried with all the flags that apply to it together, and it goes
// past the check (to the network, where no server listens: nothing here
// needs one); each flag is tried where it does not apply, and it exits 2 with "sparse-cli: error: --flag applies only to ...;
// this run is '<command>'". A flag added to sparse-cli must join Table(),
// or EveryFlagInHelpIsInTheTable fails.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/command_runs.h"

namespace sparse {
namespace {

namespace fs = std::filesystem;

// The runs each flag is tried in; each run's own command line gets past the
// flag check. No server listens on the targets, so every run ends there.
enum CliRunKind : uint32_t {
  kPredict = 1 << 0,
  kPredictDense = 1 << 1,
  kPredictBoth = 1 << 2,
  kModels = 1 << 3,
  kHealth = 1 << 4,
  kBenchClosed = 1 << 5,
  kBenchOpen = 1 << 6,
  kBenchRest = 1 << 7,  // closed loop over --protocols=rest
};
constexpr uint32_t kRunCount = 8;
constexpr uint32_t kEvery = (1u << kRunCount) - 1;
constexpr uint32_t kPredictRuns = kPredict | kPredictDense | kPredictBoth;
constexpr uint32_t kBenchRuns = kBenchClosed | kBenchOpen | kBenchRest;

class SparseCliFlagsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("sparse_cli_flags_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    std::ofstream(dir_ / "rows.csv") << "1,2\n3,4\n";
  }
  void TearDown() override { fs::remove_all(dir_); }

  static std::string Command(const std::string& args) {
    return std::string(SPARSE_CLI_BINARY) + " " + args + " 2>&1";
  }

  static std::string Base(uint32_t run) {
    const std::string where = " --target=127.0.0.1:1 --timeout_ms=2000";
    switch (run) {
      case kPredict: return "predict --model=m --inputs=1,2" + where;
      case kPredictDense: return "predict --model=m --inputs=1,2 --dense" + where;
      case kPredictBoth: return "predict --model=m --inputs=1,2 --both" + where;
      case kModels: return "models" + where;
      case kHealth: return "health" + where;
      case kBenchClosed: return "bench --model=m --quiet" + where;
      case kBenchOpen: return "bench --model=m --quiet --mode=open --rate=10" + where;
      case kBenchRest:
        return "bench --model=m --quiet --protocols=rest --http_target=127.0.0.1:1" + where;
      }
    return "";
  }

  // Each flag of sparse-cli, a value valid wherever it applies, and the
  // runs it applies to.
  std::vector<FlagCase> Table() const {
    const std::string d = dir_.string();
    return {
        {"target", "127.0.0.1:1", kEvery},
        {"model", "m", kPredictRuns | kBenchRuns | kHealth},
        {"wait_seconds", "0.1", kHealth},
        {"model_version", "2", kPredictRuns | kBenchRuns},
        {"inputs", "1,2", kPredictRuns},
        {"csv", d + "/rows.csv", kPredictRuns | kBenchRuns},
        {"output", d + "/out.csv", kPredictRuns},
        {"max_rows", "1", kPredictRuns},
        // --dense turns predict into predict --dense (no route); --both turns
        // predict --dense into predict --both (where --dense is refused).
        {"dense", "true", kPredict | kPredictDense, kPredict},
        {"both", "true", kPredictRuns, kPredictDense},
        {"route", "false", kPredict | kPredictBoth},
        {"json", "true", kEvery},
        {"timeout_ms", "1000", kEvery},
        {"tls", "true", kEvery},
        {"tls_ca", d + "/ca.pem", kEvery},
        {"tls_cert", d + "/cert.pem", kEvery},
        {"tls_key", d + "/key.pem", kEvery},
        {"tls_server_name", "server.test", kEvery},
        {"paths", "sparse", kBenchRuns},
        {"protocols", "native", kBenchRuns, kBenchRest},
        {"http_target", "127.0.0.1:2", kBenchRest},
        {"echo_target", "127.0.0.1:3", kBenchRuns},
        {"batch", "2", kBenchRuns},
        {"rows", d + "/rows.csv", kBenchRuns},
        {"mode", "closed", kBenchClosed | kBenchRest, kBenchOpen},
        {"concurrency", "2", kBenchClosed | kBenchRest},
        {"rate", "5", kBenchOpen},
        {"arrival", "poisson", kBenchOpen},
        {"warmup_seconds", "0.1", kBenchRuns},
        {"window_seconds", "0.1", kBenchRuns},
        {"stable_windows", "2", kBenchRuns},
        {"max_windows", "3", kBenchRuns},
        {"stability", "0.2", kBenchRuns},
        {"max_requests", "10", kBenchRuns},
        {"max_outstanding", "8", kBenchOpen},
        {"priority", "1", kBenchRuns},
        {"plot", d + "/plot.svg", kBenchRuns},
        {"quiet", "true", kPredictRuns | kBenchRuns},
        {"allow_remote", "true", kBenchRuns},
    };
  }

  fs::path dir_;
};

TEST_F(SparseCliFlagsTest, EveryFlagInHelpIsInTheTable) {
  const CommandOutput help = RunCommand(Command("--help"));
  ASSERT_GT(FlagsInHelp(help.out).size(), 30u) << help.out;
  EXPECT_EQ(FlagsInHelp(help.out), TableFlags(Table())) << "add the new flag to SparseCliFlagsTest::Table() with the runs it "
                              "applies to, and to client/cli_flag_rules.cc";
}

// Each run with every flag that applies to it gets past the flag check;
// each flag where it does not apply is refused, naming it and the run.
TEST_F(SparseCliFlagsTest, FlagsPassTogetherWhereTheyApplyAndEachIsRefusedNamingWhyElsewhere) {
  const std::vector<FlagJob> jobs = FlagJobs(Table(), kRunCount, Base);
  const std::vector<CommandOutput> outputs = RunFlagJobs(jobs, Command, 8);
  for (size_t i = 0; i < jobs.size(); ++i) {
    const FlagJob& job = jobs[i];
    const CommandOutput& r = outputs[i];
    if (job.applies) {
      // Past the flag check: the run fails later (no server), never for a flag rule.
      EXPECT_TRUE(r.exit_code == 1 || r.exit_code == 2) << job.args << "\n" << r.out;
      EXPECT_EQ(r.out.find("applies only to"), std::string::npos) << job.args << "\n" << r.out;
    } else {
      const std::string command = job.args.substr(0, job.args.find(' '));
      EXPECT_EQ(r.exit_code, 2) << job.args << "\n" << r.out;
      EXPECT_NE(r.out.find("sparse-cli: error: --" + job.flag + " applies only to "),
                std::string::npos)
          << job.args << "\n" << r.out;
      EXPECT_NE(r.out.find("; this run is '" + command), std::string::npos) << job.args << "\n"
                                                                            << r.out;
    }
  }
}

// The refusal's whole text, for the examples issue 31 gives.
TEST_F(SparseCliFlagsTest, TheIssuesExamplesAreRefusedWithTheirReason) {
  const CommandOutput batch = RunCommand(Command("models --batch=4"));
  EXPECT_EQ(batch.exit_code, 2);
  EXPECT_EQ(batch.out,
            "sparse-cli: error: --batch applies only to bench; this run is 'models', where it would "
            "be ignored: drop it or change the run\n");
  const CommandOutput rate = RunCommand(Command("bench --model=m --rate=100,200"));
  EXPECT_EQ(rate.exit_code, 2);
  EXPECT_NE(rate.out.find("--rate applies only to bench --mode=open; this run is 'bench "
                          "--mode=closed'"),
            std::string::npos)
      << rate.out;
  const CommandOutput mode = RunCommand(Command("bench --model=m --mode=burst"));
  EXPECT_EQ(mode.exit_code, 2);
  EXPECT_EQ(mode.out, "sparse-cli: error: --mode: expected closed or open, got 'burst'\n");
}

}  // namespace
}  // namespace sparse
