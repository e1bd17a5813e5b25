#include "server/server_flag_rules.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace sparse {
namespace {

bool Always(const ServerRun&) { return true; }
bool Shard(const ServerRun& r) { return r.shard; }
bool ShardCountOnly(const ServerRun& r) { return r.shard_count_only; }
bool Front(const ServerRun& r) { return r.front; }
bool Tls(const ServerRun& r) { return r.tls; }
bool Http(const ServerRun& r) { return r.http; }
bool HttpOrMetrics(const ServerRun& r) { return r.http || r.metrics; }
bool WeightCache(const ServerRun& r) { return r.weight_cache; }

constexpr char kEvery[] = "every server";
constexpr char kFront[] = "a front (--shard_targets): how it reaches its shards";
constexpr char kFrontTls[] =
    "a front (--shard_targets): how it reaches its shards; a shard's own TLS is "
    "--tls_cert/--tls_key/--tls_client_ca";
constexpr char kHttpPorts[] = "servers with an HTTP port (--http_port or --metrics_port)";

constexpr FlagRule<ServerRun> kRules[] = {
    {"model_repository", kEvery, Always},
    {"model_name", kEvery, Always},
    {"address", kEvery, Always},
    {"port", kEvery, Always},
    {"workers", kEvery, Always},
    {"max_queue", kEvery, Always},
    {"max_batch_rows", kEvery, Always},
    {"max_concurrent_streams", kEvery, Always},
    {"inline_max_flops", kEvery, Always},
    {"tls_cert", kEvery, Always},
    {"tls_key", kEvery, Always},
    {"tls_client_ca", "servers with TLS (--tls_cert and --tls_key): mutual TLS is TLS first", Tls},
    {"health_port", kEvery, Always},
    {"metrics_port", kEvery, Always},
    {"http_port", kEvery, Always},
    {"max_message_bytes", kEvery, Always},
    {"http_threads", "servers with --http_port (the metrics port has one thread)", Http},
    {"http_header_bytes", kHttpPorts, HttpOrMetrics},
    {"http_idle_seconds", kHttpPorts, HttpOrMetrics},
    {"http_header_seconds", kHttpPorts, HttpOrMetrics},
    {"http_body_seconds", kHttpPorts, HttpOrMetrics},
    {"http_max_connections", kHttpPorts, HttpOrMetrics},
    {"poll_seconds", kEvery, Always},
    {"max_model_bytes", kEvery, Always},
    {"model_control", kEvery, Always},
    {"drain_seconds", kEvery, Always},
    {"cost_only_dense", kEvery, Always},
    {"weight_cache_dir", kEvery, Always},
    {"weight_verify", "servers with --weight_cache_dir", WeightCache},
    {"shard", kEvery, Always},
    {"shard_index_env",
     "a shard given its count alone (--shard=/N): the index comes from the environment",
     ShardCountOnly},
    {"shard_index_offset", "a shard (--shard=i/N or --shard=/N): it shifts the index", Shard},
    {"shard_targets", kEvery, Always},
    {"shard_wait_seconds", "a front (--shard_targets): how long a load waits for its shards",
     Front},
    {"shard_retain_seconds", "a shard (--shard=i/N): how long it keeps a version its fronts call",
     Shard},
    {"shard_max_reconnect_seconds", kFront, Front},
    {"shard_keepalive_seconds", kFront, Front},
    {"shard_tls", kFrontTls, Front},
    {"shard_tls_ca", kFrontTls, Front},
    {"shard_tls_cert", kFrontTls, Front},
    {"shard_tls_key", kFrontTls, Front},
    {"shard_tls_server_name", kFrontTls, Front},
};

}  // namespace

ServerRun ServerRun::Of(const ServerOptions& options) {
  return ServerRun{.shard = !options.shard.empty(),
                   .shard_count_only = !options.shard.empty() && options.shard[0] == '/',
                   .front = !options.shard_targets.empty(),
                   .tls = !options.tls_cert_file.empty(),
                   .http = options.http_port >= 0,
                   .metrics = options.metrics_port >= 0,
                   .weight_cache = !options.weight_cache_dir.empty()};
}

std::string ServerRun::Describe() const {
  return absl::StrCat(shard_count_only ? "a shard given its count alone (--shard=/N)"
                      : shard         ? "a shard (--shard)"
                      : front ? "a front (--shard_targets)"
                              : "a server that is neither shard nor front",
                      tls ? ", with TLS" : ", plaintext (no --tls_cert)",
                      http ? ", with --http_port" : ", no --http_port",
                      metrics ? ", with --metrics_port" : ", no --metrics_port",
                      weight_cache ? ", with --weight_cache_dir" : "");
}

absl::Span<const FlagRule<ServerRun>> SparseServerFlagRules() { return kRules; }

absl::Status CheckServerFlagsApply(const ServerRun& run,
                                   absl::FunctionRef<bool(absl::string_view)> is_set) {
  return CheckFlagsApply(SparseServerFlagRules(), run, run.Describe(), is_set);
}

absl::Status CheckServerRulesCover(const std::vector<std::string>& defined) {
  return CheckRulesCover(SparseServerFlagRules(), defined, "sparse-server",
                         "server/server_flag_rules.cc");
}

absl::Status CheckServerFlags(const ServerOptions& options) {
  RETURN_IF_ERROR(CheckServerRulesCover(FlagsDefinedIn("server/main.")));
  return CheckServerFlagsApply(ServerRun::Of(options), FlagSetOnCommandLine);
}

}  // namespace sparse
