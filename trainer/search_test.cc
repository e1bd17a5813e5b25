#include "trainer/search.h"

#include <cmath>

#include "gtest/gtest.h"

namespace sparse {
namespace {

Dataset Polynomial(int64_t rows) {
  auto f = TargetFunction::Create({.kind = SyntheticKind::kPolynomial, .d = 4, .degree = 3});
  return SampleDataset(**f, 4, rows, 7);
}

TEST(SearchTest, ChoosesTheBestFinalistWithinTheBudgetAndMarksItOnTheFront) {
  const SearchOptions options{.budget_flops = 300};
  absl::StatusOr<SearchResult> r = Search(Polynomial(2048), options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->rounds, 3);
  EXPECT_GT(r->entries.size(), 10u);
  const SearchEntry& chosen = r->entries[r->chosen];
  EXPECT_LE(chosen.flops_per_row, 300);
  EXPECT_TRUE(chosen.pareto);
  EXPECT_EQ(chosen.round, 2);
  EXPECT_EQ(r->chosen_options.router, chosen.router);
  EXPECT_EQ(r->chosen_options.active_units, chosen.active_units);
  int finalists = 0;
  for (const SearchEntry& e : r->entries) {
    if (e.round != 2) continue;
    ++finalists;
    EXPECT_GE(e.validation_mse, chosen.validation_mse);
  }
  // Halving 3 rounds from N candidates keeps about a quarter (at least 4).
  EXPECT_GE(finalists, 4);
  EXPECT_LE(finalists, static_cast<int>(r->entries.size() + 3) / 4 + 1);
  const std::string table = FormatSearchTable(*r, options);
  EXPECT_NE(table.find("budget 300 FLOPs per row"), std::string::npos) << table;
  EXPECT_NE(table.find("  >*"), std::string::npos) << table;
}

TEST(SearchTest, WarnsWhenExpertsGetFewerRowsThanUnits) {
  // 400 fitting rows, and a budget wide enough for 64-unit experts.
  const SearchOptions options{.budget_flops = 2000, .rounds = 1};
  absl::StatusOr<SearchResult> r = Search(Polynomial(500), options);
  ASSERT_TRUE(r.ok()) << r.status();
  bool warned = false;
  for (const SearchEntry& e : r->entries) {
    if (e.experts > 0 && e.rows / e.experts < e.active_units) {
      EXPECT_NE(e.warning.find("rows per expert for"), std::string::npos) << e.warning;
      warned = true;
    }
  }
  EXPECT_TRUE(warned);
  EXPECT_NE(FormatSearchTable(*r, options).find("warning: "), std::string::npos);
}

TEST(SearchTest, RefusesNoBudgetAndABudgetNothingFits) {
  EXPECT_NE(Search(Polynomial(512), {}).status().message().find("needs a budget"), std::string::npos);
  absl::Status tiny = Search(Polynomial(512), {.budget_flops = 10}).status();
  EXPECT_NE(tiny.message().find("no DSM fits a budget of 10 FLOPs"), std::string::npos) << tiny;
}

}  // namespace
}  // namespace sparse
