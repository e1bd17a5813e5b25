// Where each sparse-cli flag applies: to which commands (predict, models,
// health, bench) and, for bench, to which load mode. A flag set where it
// would be ignored (`models --batch=4`, `predict --concurrency=16`,
// `bench --mode=closed --rate=100`) is refused naming the flag, where it
// applies and what this run is (issue 31; the mechanism is
// common/flag_rules.h). Every flag client/sparse_cli_main.cc defines has
// exactly one rule here; CheckCliRulesCover enforces it at start-up.
#ifndef SPARSE_CLIENT_CLI_FLAG_RULES_H_
#define SPARSE_CLIENT_CLI_FLAG_RULES_H_

#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/flag_rules.h"

namespace sparse {

// What a sparse-cli run does, as far as flags care.
struct CliRun {
  std::string command;     // predict, models, health or bench
  bool open_loop = false;  // bench --mode=open
  bool rest = false;       // bench --protocols names rest or rest_binary
  bool dense = false;      // predict --dense
  bool both = false;       // predict --both

  // "'bench --mode=open'", "'predict --dense'", "'models'".
  std::string Describe() const;
};

// The flags that choose a run. `command` must be one of the four.
struct CliChoice {
  std::string command;
  std::string mode = "closed";      // --mode
  std::string protocols = "native";  // --protocols
  bool dense = false;
  bool both = false;
};

// The run, or INVALID_ARGUMENT for a bench --mode other than closed or open.
absl::StatusOr<CliRun> CliRunOf(const CliChoice& choice);

// One rule per sparse-cli flag, in --help order.
absl::Span<const FlagRule<CliRun>> SparseCliFlagRules();

// INVALID_ARGUMENT for the first flag with is_set(flag) that does not apply
// to `run`: "--batch applies only to bench; this run is 'models', where it
// would be ignored: drop it or change the run".
absl::Status CheckCliFlagsApply(const CliRun& run,
                                absl::FunctionRef<bool(absl::string_view)> is_set);

// INTERNAL naming a flag of `defined` without a rule, or a rule whose flag
// sparse-cli does not define.
absl::Status CheckCliRulesCover(const std::vector<std::string>& defined);

}  // namespace sparse

#endif  // SPARSE_CLIENT_CLI_FLAG_RULES_H_
