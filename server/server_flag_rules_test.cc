#include "server/server_flag_rules.h"

#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace sparse {
namespace {

absl::Status Check(const ServerRun& run, const std::set<std::string>& set) {
  return CheckServerFlagsApply(run, [&set](absl::string_view f) { return set.count(std::string(f)) > 0; });
}

TEST(ServerFlagRulesTest, ShardAndFrontFlagsApplyOnlyToTheirRole) {
  const absl::Status retain = Check(ServerRun{}, {"model_repository", "shard_retain_seconds"});
  EXPECT_EQ(retain.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(retain.message(),
            "--shard_retain_seconds applies only to a shard (--shard=i/N): how long it keeps a "
            "version its fronts call; this run is a server that is neither shard nor front, "
            "plaintext (no --tls_cert), no --http_port, no --metrics_port, where it would be "
            "ignored: drop it or change the run");
  EXPECT_TRUE(Check(ServerRun{.shard = true}, {"shard", "shard_retain_seconds"}).ok());
  const absl::Status tls = Check(ServerRun{.shard = true}, {"shard_tls_ca"});
  EXPECT_NE(tls.message().find("--shard_tls_ca applies only to a front (--shard_targets)"),
            std::string::npos)
      << tls;
  EXPECT_NE(tls.message().find("a shard's own TLS is --tls_cert"), std::string::npos) << tls;
  EXPECT_TRUE(Check(ServerRun{.front = true},
                    {"shard_tls", "shard_tls_ca", "shard_keepalive_seconds", "shard_wait_seconds"})
                  .ok());
}

TEST(ServerFlagRulesTest, MutualTlsNeedsTlsAndHttpLimitsNeedAnHttpPort) {
  const absl::Status ca = Check(ServerRun{}, {"tls_client_ca"});
  EXPECT_NE(ca.message().find("--tls_client_ca applies only to servers with TLS (--tls_cert and "
                              "--tls_key)"),
            std::string::npos)
      << ca;
  EXPECT_TRUE(Check(ServerRun{.tls = true}, {"tls_cert", "tls_key", "tls_client_ca"}).ok());
  const absl::Status idle = Check(ServerRun{}, {"http_idle_seconds"});
  EXPECT_NE(idle.message().find("--http_idle_seconds applies only to servers with an HTTP port"),
            std::string::npos)
      << idle;
  EXPECT_TRUE(Check(ServerRun{.metrics = true}, {"http_idle_seconds"}).ok());
  const absl::Status threads = Check(ServerRun{.metrics = true}, {"http_threads"});
  EXPECT_NE(threads.message().find("this run is a server that is neither shard nor front, "
                                   "plaintext (no --tls_cert), no --http_port, with --metrics_port"),
            std::string::npos)
      << threads;
  EXPECT_TRUE(Check(ServerRun{.http = true}, {"http_threads", "http_max_connections"}).ok());
  EXPECT_TRUE(Check(ServerRun{}, {"drain_seconds", "port", "poll_seconds", "max_model_bytes"}).ok());
  // KServe's layout (--model_name) applies to every kind of run.
  EXPECT_TRUE(Check(ServerRun{}, {"model_repository", "model_name"}).ok());
  EXPECT_TRUE(Check(ServerRun{.shard = true}, {"model_name"}).ok());
}

TEST(ServerFlagRulesTest, RunFollowsTheOptions) {
  ServerOptions options;
  EXPECT_FALSE(ServerRun::Of(options).http);
  options.http_port = 0;
  options.tls_cert_file = "c.pem";
  options.shard_targets = {"a", "b"};
  const ServerRun run = ServerRun::Of(options);
  EXPECT_TRUE(run.http && run.tls && run.front);
  EXPECT_FALSE(run.shard || run.metrics);
}

TEST(ServerFlagRulesTest, CoverageNamesAFlagWithoutARule) {
  std::vector<std::string> flags;
  for (const auto& rule : SparseServerFlagRules()) flags.emplace_back(rule.flag);
  EXPECT_TRUE(CheckServerRulesCover(flags).ok());
  flags.push_back("new_flag");
  EXPECT_EQ(CheckServerRulesCover(flags).message(),
            "flag --new_flag has no rule in server/server_flag_rules.cc saying where it applies");
}

}  // namespace
}  // namespace sparse
