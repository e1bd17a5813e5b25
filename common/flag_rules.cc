#include "common/flag_rules.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "absl/flags/commandlineflag.h"
#include "absl/flags/internal/parse.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace sparse {

absl::Status FlagDoesNotApply(absl::string_view flag, absl::string_view applies_to,
                              absl::string_view run_description) {
  return absl::InvalidArgumentError(absl::StrCat(
      "--", flag, " applies only to ", applies_to, "; this run is ", run_description,
      ", where it would be ignored: drop it or change the run"));
}

absl::Status CheckRuleNamesCover(const std::vector<absl::string_view>& ruled,
                                 const std::vector<std::string>& defined,
                                 absl::string_view program, absl::string_view rules_file) {
  const absl::flat_hash_set<absl::string_view> ruled_set(ruled.begin(), ruled.end());
  for (const std::string& flag : defined) {
    if (!ruled_set.contains(flag)) {
      return absl::InternalError(absl::StrCat("flag --", flag, " has no rule in ", rules_file,
                                              " saying where it applies"));
    }
  }
  for (absl::string_view flag : ruled) {
    if (std::find(defined.begin(), defined.end(), flag) == defined.end()) {
      return absl::InternalError(absl::StrCat(rules_file, " has a rule for --", flag, ", which ",
                                              program, " does not define"));
    }
  }
  return absl::OkStatus();
}

bool FlagSetOnCommandLine(absl::string_view name) {
  return absl::flags_internal::WasPresentOnCommandLine(name);
}

std::vector<std::string> FlagsDefinedIn(absl::string_view main_file) {
  std::vector<std::string> names;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (absl::StrContains(flag->Filename(), main_file)) names.emplace_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace sparse
