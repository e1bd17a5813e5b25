#include "client/cli_flag_rules.h"

#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace sparse {
namespace {

absl::Status Check(const CliChoice& choice, const std::set<std::string>& set) {
  absl::StatusOr<CliRun> run = CliRunOf(choice);
  if (!run.ok()) return run.status();
  return CheckCliFlagsApply(*run, [&set](absl::string_view f) { return set.count(std::string(f)) > 0; });
}

TEST(CliFlagRulesTest, RefusesAFlagOfAnotherCommandNamingWhereItAppliesAndThisRun) {
  const absl::Status batch = Check({.command = "models"}, {"target", "batch"});
  EXPECT_EQ(batch.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(batch.message(),
            "--batch applies only to bench; this run is 'models', where it would be ignored: drop "
            "it or change the run");
  const absl::Status concurrency = Check({.command = "predict"}, {"concurrency"});
  EXPECT_NE(concurrency.message().find("--concurrency applies only to bench --mode=closed"),
            std::string::npos)
      << concurrency;
  const absl::Status output = Check({.command = "health"}, {"output"});
  EXPECT_NE(output.message().find("--output applies only to predict; this run is 'health'"),
            std::string::npos)
      << output;
  const absl::Status model = Check({.command = "models"}, {"model"});
  EXPECT_NE(model.message().find("this run is 'models'"), std::string::npos) << model;
}

TEST(CliFlagRulesTest, BenchModesTakeTheirOwnFlags) {
  EXPECT_TRUE(Check({.command = "bench"}, {"concurrency", "batch", "paths", "plot"}).ok());
  const absl::Status rate = Check({.command = "bench"}, {"rate"});
  EXPECT_NE(rate.message().find("--rate applies only to bench --mode=open; this run is 'bench "
                                "--mode=closed'"),
            std::string::npos)
      << rate;
  EXPECT_TRUE(Check({.command = "bench", .mode = "open"}, {"rate", "arrival", "max_outstanding"}).ok());
  const absl::Status closed = Check({.command = "bench", .mode = "open"}, {"concurrency"});
  EXPECT_NE(closed.message().find("this run is 'bench --mode=open'"), std::string::npos) << closed;
  const absl::Status http = Check({.command = "bench"}, {"http_target"});
  EXPECT_NE(http.message().find("--http_target applies only to bench with --protocols naming rest"),
            std::string::npos)
      << http;
  EXPECT_TRUE(Check({.command = "bench", .protocols = "native, rest_binary"}, {"http_target"}).ok());
  const absl::Status mode = Check({.command = "bench", .mode = "opened"}, {});
  EXPECT_EQ(mode.message(), "--mode: expected closed or open, got 'opened'");
}

TEST(CliFlagRulesTest, GlobalFlagsApplyEverywhereAndPredictPathsDecideDenseAndRoute) {
  const std::set<std::string> global = {"target", "timeout_ms", "json", "tls", "tls_ca",
                                        "tls_cert", "tls_key", "tls_server_name"};
  for (const char* command : {"predict", "models", "health", "bench"}) {
    EXPECT_TRUE(Check({.command = command}, global).ok()) << command;
  }
  const absl::Status route = Check({.command = "predict", .dense = true}, {"route"});
  EXPECT_NE(route.message().find("this run is 'predict --dense'"), std::string::npos) << route;
  EXPECT_TRUE(Check({.command = "predict", .dense = true, .both = true}, {"route"}).ok());
  const absl::Status dense = Check({.command = "predict", .dense = true, .both = true}, {"dense", "both"});
  EXPECT_NE(dense.message().find("--dense applies only to predict without --both"), std::string::npos)
      << dense;
}

TEST(CliFlagRulesTest, CoverageNamesAFlagWithoutARule) {
  std::vector<std::string> flags;
  for (const auto& rule : SparseCliFlagRules()) flags.emplace_back(rule.flag);
  EXPECT_TRUE(CheckCliRulesCover(flags).ok());
  flags.push_back("new_flag");
  EXPECT_EQ(CheckCliRulesCover(flags).message(),
            "flag --new_flag has no rule in client/cli_flag_rules.cc saying where it applies");
}

}  // namespace
}  // namespace sparse
