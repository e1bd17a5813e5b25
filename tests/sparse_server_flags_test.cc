// Issue 31: every sparse-server flag either applies or is refused, naming
// why. Every kind of server (plain, shard, front, TLS, with a REST port,
// with a metrics port) is tried with all the flags that apply to it
// together, and each flag where it does not apply. Every command line also
// holds a bad --max_queue, which ServerOptions::Validate refuses after the
// flag rules: flags that apply reach that refusal (no model loads, no port
// opens); a flag that does not stops the run first with "sparse-server:
// error: --flag applies only to ...". A flag added to sparse-server must join
// Table(), or EveryFlagInHelpIsInTheTable fails.
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/command_runs.h"

namespace sparse {
namespace {

enum ServerRunKind : uint32_t {
  kPlain = 1 << 0,    // neither shard nor front, plaintext, no HTTP port
  kShard = 1 << 1,    // --shard=0/2
  kFront = 1 << 2,    // --shard_targets=...
  kTls = 1 << 3,      // --tls_cert --tls_key
  kHttp = 1 << 4,     // --http_port=0
  kMetrics = 1 << 5,  // --metrics_port=0
  kCache = 1 << 6,    // --weight_cache_dir=...
  kShardEnv = 1 << 7,  // --shard=/2 --shard_index_env=... (the index from the environment)
};
constexpr uint32_t kRunCount = 8;
// kShardEnv's index, as a LeaderWorkerSet worker's LWS_WORKER_INDEX.
constexpr char kIndexVariable[] = "SPARSE_FLAGS_TEST_SHARD_INDEX";
constexpr uint32_t kEvery = (1u << kRunCount) - 1;

std::string Base(uint32_t run) {
  const std::string repository = "--model_repository=/nonexistent/repository";
  switch (run) {
    case kPlain: return repository;
    case kShard: return repository + " --shard=0/2";
    case kFront: return repository + " '--shard_targets=127.0.0.1:1;127.0.0.1:2'";
    case kTls: return repository + " --tls_cert=/nonexistent/c.pem --tls_key=/nonexistent/k.pem";
    case kHttp: return repository + " --http_port=0";
    case kMetrics: return repository + " --metrics_port=0";
    case kCache: return repository + " --weight_cache_dir=/nonexistent/cache";
    case kShardEnv:
      return repository + " --shard=/2 --shard_index_env=" + kIndexVariable;
  }
  return "";
}

// Each flag of sparse-server, a value valid wherever it applies, and the
// servers it applies to.
std::vector<FlagCase> Table() {
  constexpr uint32_t kHttpPorts = kHttp | kMetrics;
  return {
      {"model_repository", "/nonexistent/other", kEvery},
      {"model_name", "m", kEvery},
      {"address", "127.0.0.1", kEvery},
      {"port", "0", kEvery},
      {"workers", "1", kEvery},
      {"max_queue", "8", kEvery},
      {"max_batch_rows", "8", kEvery},
      {"max_concurrent_streams", "8", kEvery},
      {"inline_max_flops", "0", kEvery},
      {"tls_cert", "/nonexistent/c.pem", kEvery},
      {"tls_key", "/nonexistent/k.pem", kEvery},
      {"tls_client_ca", "/nonexistent/ca.pem", kTls},
      {"health_port", "0", kEvery},
      {"metrics_port", "0", kEvery},
      {"http_port", "0", kEvery},
      {"max_message_bytes", "1048576", kEvery},
      {"http_threads", "1", kHttp},
      {"http_header_bytes", "2048", kHttpPorts},
      {"http_idle_seconds", "5", kHttpPorts},
      {"http_header_seconds", "5", kHttpPorts},
      {"http_body_seconds", "5", kHttpPorts},
      {"http_max_connections", "16", kHttpPorts},
      {"poll_seconds", "1", kEvery},
      {"max_model_bytes", "1000000", kEvery},
      {"model_control", "true", kEvery},
      {"drain_seconds", "1", kEvery},
      {"cost_only_dense", "false", kEvery},
      {"weight_cache_dir", "/nonexistent/other-cache", kEvery, kCache},
      {"weight_verify", "touch", kCache},
      {"shard", "1/2", kEvery, kShardEnv},
      {"shard_index_env", kIndexVariable, kShardEnv, kShardEnv},
      {"shard_index_offset", "0", kShard | kShardEnv},
      {"shard_targets", "127.0.0.1:3", kEvery},
      {"shard_wait_seconds", "5", kFront},
      {"shard_retain_seconds", "5", kShard | kShardEnv},
      {"shard_max_reconnect_seconds", "1", kFront},
      {"shard_keepalive_seconds", "1", kFront},
      {"shard_tls", "true", kFront},
      {"shard_tls_ca", "/nonexistent/ca.pem", kFront},
      {"shard_tls_cert", "/nonexistent/c.pem", kFront},
      {"shard_tls_key", "/nonexistent/k.pem", kFront},
      {"shard_tls_server_name", "shard.test", kFront},
  };
}

// Every command line ends in a --max_queue Validate refuses after the flag
// rules (the last --max_queue wins over the table's).
std::string Command(const std::string& args) {
  return std::string(SPARSE_SERVER_BINARY) + " " + args + " --max_queue=0 2>&1";
}
constexpr char kValidated[] = "sparse-server: --max_queue takes a count >= 1, got 0";

TEST(SparseServerFlagsTest, EveryFlagInHelpIsInTheTable) {
  const CommandOutput help = RunCommand(std::string(SPARSE_SERVER_BINARY) + " --help 2>&1");
  ASSERT_GT(FlagsInHelp(help.out).size(), 30u) << help.out;
  EXPECT_EQ(FlagsInHelp(help.out), TableFlags(Table())) << "add the new flag to Table() in tests/sparse_server_flags_test.cc "
                              "with the servers it applies to, and to server/server_flag_rules.cc";
}

// Each kind of server with every flag that applies to it reaches Validate;
// each flag where it does not apply is refused before, naming it.
TEST(SparseServerFlagsTest, FlagsPassTogetherWhereTheyApplyAndEachIsRefusedNamingWhyElsewhere) {
  setenv(kIndexVariable, "1", 1);
  const std::vector<FlagJob> jobs = FlagJobs(Table(), kRunCount, Base);
  const std::vector<CommandOutput> outputs = RunFlagJobs(jobs, Command, 8);
  for (size_t i = 0; i < jobs.size(); ++i) {
    const FlagJob& job = jobs[i];
    const CommandOutput& r = outputs[i];
    EXPECT_EQ(r.exit_code, 1) << job.args << "\n" << r.out;
    if (job.applies) {
      EXPECT_NE(r.out.find(kValidated), std::string::npos) << job.args << "\n" << r.out;
      EXPECT_EQ(r.out.find("applies only to"), std::string::npos) << job.args << "\n" << r.out;
    } else {
      EXPECT_NE(r.out.find("sparse-server: error: --" + job.flag + " applies only to "),
                std::string::npos)
          << job.args << "\n" << r.out;
      EXPECT_EQ(r.out.find(kValidated), std::string::npos) << job.args << "\n" << r.out;
    }
  }
}

// The refusal's whole text, for an example issue 31 gives.
TEST(SparseServerFlagsTest, AShardFlagOnAFrontIsRefusedWithItsReason) {
  const CommandOutput r = RunCommand(std::string(SPARSE_SERVER_BINARY) +
                                     " --model_repository=/nonexistent "
                                     "--shard_targets=127.0.0.1:1 --shard_retain_seconds=5 2>&1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out,
            "sparse-server: error: --shard_retain_seconds applies only to a shard (--shard=i/N): "
            "how long it keeps a version its fronts call; this run is a front (--shard_targets), "
            "plaintext (no --tls_cert), no --http_port, no --metrics_port, where it would be "
            "ignored: drop it or change the run\n");
}

// A LeaderWorkerSet worker: the index from the environment, less one.
TEST(SparseServerFlagsTest, TheShardIndexComesFromTheEnvironmentWithAnOffset) {
  const std::string command = std::string(kIndexVariable) + "=3 " + SPARSE_SERVER_BINARY +
                              " --model_repository=/nonexistent --shard=/2 --shard_index_env=" +
                              kIndexVariable;
  const CommandOutput out_of_range = RunCommand(command + " 2>&1");
  EXPECT_EQ(out_of_range.exit_code, 1);
  EXPECT_EQ(out_of_range.out, std::string("sparse-server: the shard index 3 (") + kIndexVariable +
                                  "=3) plus --shard_index_offset=0 is 3; expected 0 <= i < 2 (the "
                                  "shard count)\n");
  // 3 - 2 = 1 of 2: past the index, to the bad --max_queue.
  const CommandOutput shifted =
      RunCommand(command + " --shard_index_offset=-2 --max_queue=0 2>&1");
  EXPECT_NE(shifted.out.find(kValidated), std::string::npos) << shifted.out;
}

}  // namespace
}  // namespace sparse
