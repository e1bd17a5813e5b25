#include "common/flag_rules.h"

#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace sparse {
namespace {

struct Trip {
  bool fast = false;
};
bool Always(const Trip&) { return true; }
bool Fast(const Trip& r) { return r.fast; }
constexpr FlagRule<Trip> kRules[] = {
    {"name", "every run", Always},
    {"speed", "--fast runs", Fast},
    {"gear", "--fast runs", Fast},
};

TEST(CommonFlagRulesTest, RefusesTheFirstSetFlagThatDoesNotApplyNamingWhereItApplies) {
  const std::set<std::string> set = {"name", "gear", "speed"};
  auto is_set = [&set](absl::string_view f) { return set.count(std::string(f)) > 0; };
  const absl::Status slow = CheckFlagsApply<Trip>(kRules, Trip{}, "a slow run", is_set);
  EXPECT_EQ(slow.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(slow.message(),
            "--speed applies only to --fast runs; this run is a slow run, where it would be "
            "ignored: drop it or change the run");
  EXPECT_TRUE(CheckFlagsApply<Trip>(kRules, Trip{.fast = true}, "fast", is_set).ok());
  EXPECT_TRUE(CheckFlagsApply<Trip>(kRules, Trip{}, "slow",
                                   [](absl::string_view f) { return f == "name"; })
                  .ok());
}

TEST(CommonFlagRulesTest, CoverageNamesAFlagWithoutARuleAndARuleWithoutAFlag) {
  std::vector<std::string> defined = {"gear", "name", "speed"};
  EXPECT_TRUE(CheckRulesCover<Trip>(kRules, defined, "prog", "x/rules.cc").ok());
  defined.push_back("colour");
  const absl::Status missing = CheckRulesCover<Trip>(kRules, defined, "prog", "x/rules.cc");
  EXPECT_EQ(missing.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(missing.message(), "flag --colour has no rule in x/rules.cc saying where it applies");
  const absl::Status stale =
      CheckRulesCover<Trip>(kRules, {"name", "speed"}, "prog", "x/rules.cc");
  EXPECT_EQ(stale.message(), "x/rules.cc has a rule for --gear, which prog does not define");
}

}  // namespace
}  // namespace sparse
