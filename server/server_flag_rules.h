// Where each sparse-server flag applies: a shard's flags to a shard
// (--shard), a front's to a front (--shard_targets), mutual TLS to a server
// with TLS (--tls_cert), the HTTP limits to a server with an HTTP port. A
// flag set where it would be ignored is refused naming the flag, where it
// applies and what this server is (issue 31; the mechanism is
// common/flag_rules.h). ServerOptions::Validate checks values and the
// combinations that conflict; this table is the one place that says where
// a flag applies. Every flag server/main.cc defines has exactly one rule
// here; CheckServerRulesCover enforces it at start-up.
#ifndef SPARSE_SERVER_SERVER_FLAG_RULES_H_
#define SPARSE_SERVER_SERVER_FLAG_RULES_H_

#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/flag_rules.h"
#include "server/server.h"

namespace sparse {

// What a sparse-server run is, as far as flags care.
struct ServerRun {
  bool shard = false;    // --shard=i/N (or /N)
  bool shard_count_only = false;  // --shard=/N: the index from --shard_index_env
  bool front = false;    // --shard_targets
  bool tls = false;      // --tls_cert (and --tls_key)
  bool http = false;     // --http_port >= 0
  bool metrics = false;  // --metrics_port >= 0
  bool weight_cache = false;  // --weight_cache_dir

  static ServerRun Of(const ServerOptions& options);
  // "a front (--shard_targets), plaintext (no --tls_cert), with --http_port, no --metrics_port".
  std::string Describe() const;
};

// One rule per sparse-server flag, in --help order.
absl::Span<const FlagRule<ServerRun>> SparseServerFlagRules();

// INVALID_ARGUMENT for the first flag with is_set(flag) that does not apply
// to `run`: "--shard_retain_seconds applies only to a shard (--shard); this
// run is a server that is neither shard nor front ..., where it would be
// ignored: drop it or change the run".
absl::Status CheckServerFlagsApply(const ServerRun& run,
                                   absl::FunctionRef<bool(absl::string_view)> is_set);

// INTERNAL naming a flag of `defined` without a rule, or a rule whose flag
// sparse-server does not define.
absl::Status CheckServerRulesCover(const std::vector<std::string>& defined);

// For server/main.cc, after absl::ParseCommandLine: the rules cover the
// flags main.cc defines, and every flag set on the command line applies to
// the server `options` describe.
absl::Status CheckServerFlags(const ServerOptions& options);

}  // namespace sparse

#endif  // SPARSE_SERVER_SERVER_FLAG_RULES_H_
