// Where each flag of a binary applies, and the refusal of a flag set where
// it would be ignored (issue 31: every flag either applies or is refused,
// naming why). Shared by sparse-train (trainer/flag_rules.h), sparse-cli
// (client/cli_flag_rules.h) and sparse-server (server/server_flag_rules.h):
// each keeps a table of one FlagRule per flag it defines, over its own
// description of a run (`Run`), and checks it with the functions below.
//
// CheckRulesCover at start-up makes a flag without a rule (or a rule without
// a flag) fail every run, so a new flag cannot be silently ignored.
#ifndef SPARSE_COMMON_FLAG_RULES_H_
#define SPARSE_COMMON_FLAG_RULES_H_

#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace sparse {

template <typename Run>
struct FlagRule {
  absl::string_view flag;        // without the leading "--"
  absl::string_view applies_to;  // completes "--flag applies only to ..."
  bool (*applies)(const Run&);
};

// INVALID_ARGUMENT "--flag applies only to <applies_to>; this run is
// <run_description>, where it would be ignored: drop it or change the run".
absl::Status FlagDoesNotApply(absl::string_view flag, absl::string_view applies_to,
                              absl::string_view run_description);

// INVALID_ARGUMENT (FlagDoesNotApply) for the first rule, in table order,
// whose flag is_set(flag) and which does not apply to `run`.
template <typename Run>
absl::Status CheckFlagsApply(absl::Span<const FlagRule<Run>> rules, const Run& run,
                             absl::string_view run_description,
                             absl::FunctionRef<bool(absl::string_view)> is_set) {
  for (const FlagRule<Run>& rule : rules) {
    if (is_set(rule.flag) && !rule.applies(run)) {
      return FlagDoesNotApply(rule.flag, rule.applies_to, run_description);
    }
  }
  return absl::OkStatus();
}

// INTERNAL naming a flag of `defined` that none of `ruled` names ("flag
// --x has no rule in <rules_file> saying where it applies"), or a ruled
// flag `program` does not define.
absl::Status CheckRuleNamesCover(const std::vector<absl::string_view>& ruled,
                                 const std::vector<std::string>& defined,
                                 absl::string_view program, absl::string_view rules_file);

template <typename Run>
absl::Status CheckRulesCover(absl::Span<const FlagRule<Run>> rules,
                             const std::vector<std::string>& defined, absl::string_view program,
                             absl::string_view rules_file) {
  std::vector<absl::string_view> ruled;
  for (const FlagRule<Run>& rule : rules) ruled.push_back(rule.flag);
  return CheckRuleNamesCover(ruled, defined, program, rules_file);
}

// True when --name was given on the command line or in a --flagfile, even
// with its default value. (CommandLineFlag::IsSpecifiedOnCommandLine is
// private in Abseil 20220623; this is the call absl's own parser answers
// it with.) Only meaningful after absl::ParseCommandLine.
bool FlagSetOnCommandLine(absl::string_view name);

// The names of the flags defined in source files whose path contains
// `main_file` (e.g. "sparse_cli_main."), as ParseCommandLine's --help
// selects them.
std::vector<std::string> FlagsDefinedIn(absl::string_view main_file);

}  // namespace sparse

#endif  // SPARSE_COMMON_FLAG_RULES_H_
