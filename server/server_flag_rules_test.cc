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

TEST(ServerFlagRulesTest, TheShardIndexFromTheEnvironmentNeedsTheCountAlone) {
  const absl::Status env = Check(ServerRun{.shard = true}, {"shard", "shard_index_env"});
  EXPECT_EQ(env.message(),
            "--shard_index_env applies only to a shard given its count alone (--shard=/N): the "
            "index comes from the environment; this run is a shard (--shard), plaintext (no "
            "--tls_cert), no --http_port, no --metrics_port, where it would be ignored: drop it "
            "or change the run");
  EXPECT_TRUE(Check(ServerRun{.shard = true, .shard_count_only = true},
                    {"shard", "shard_index_env", "shard_index_offset", "shard_retain_seconds"})
                  .ok());
  EXPECT_TRUE(Check(ServerRun{.shard = true}, {"shard", "shard_index_offset"}).ok());
  const absl::Status offset = Check(ServerRun{.front = true}, {"shard_index_offset"});
  EXPECT_NE(offset.message().find("--shard_index_offset applies only to a shard"), std::string::npos)
      << offset;
  ServerOptions options;
  options.shard = "/4";
  EXPECT_TRUE(ServerRun::Of(options).shard_count_only);
  options.shard = "1/4";
  EXPECT_FALSE(ServerRun::Of(options).shard_count_only);
}

// LeaderWorkerSet: workers 1..N, the leader 0; the offset makes them 0..N-1.
TEST(ServerFlagRulesTest, ResolveShardIndexReadsTheEnvironmentAndAddsTheOffset) {
  const auto env = [](const char* name) -> const char* {
    const std::string n(name);
    return n == "LWS_WORKER_INDEX" ? "4" : n == "WORD" ? "four" : nullptr;
  };
  ServerOptions o;
  o.shard = "/4";
  o.shard_index_env = "LWS_WORKER_INDEX";
  o.shard_index_offset = -1;
  ASSERT_TRUE(ResolveShardIndex(o, env).ok());
  EXPECT_EQ(o.shard, "3/4");
  // Without the offset, worker 4 of 4 is out of range.
  o.shard = "/4";
  o.shard_index_offset = 0;
  EXPECT_EQ(ResolveShardIndex(o, env).message(),
            "the shard index 4 (LWS_WORKER_INDEX=4) plus --shard_index_offset=0 is 4; expected "
            "0 <= i < 4 (the shard count)");
  o.shard = "/4";
  o.shard_index_env = "UNSET";
  EXPECT_EQ(ResolveShardIndex(o, env).message(),
            "--shard_index_env=UNSET: expected the environment variable UNSET to hold the shard "
            "index (an integer), but it is not set");
  o.shard_index_env = "WORD";
  EXPECT_EQ(ResolveShardIndex(o, env).message(),
            "the shard index is an integer, got 'four' from WORD=four");
  o.shard = "2/4";
  o.shard_index_env = "LWS_WORKER_INDEX";
  EXPECT_EQ(ResolveShardIndex(o, env).message(),
            "--shard_index_env=LWS_WORKER_INDEX gives the shard index, so --shard takes the count "
            "alone ('/N', e.g. /4), got '2/4'");
  // An offset alone shifts --shard's own index (a pod name's ordinal too).
  ServerOptions pod;
  pod.shard = "sparse-shard-2/4";
  pod.shard_index_offset = 1;
  ASSERT_TRUE(ResolveShardIndex(pod, env).ok());
  EXPECT_EQ(pod.shard, "3/4");
  ServerOptions plain;
  plain.shard = "sparse-shard-2/4";
  ASSERT_TRUE(ResolveShardIndex(plain, env).ok());
  EXPECT_EQ(plain.shard, "sparse-shard-2/4");
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
