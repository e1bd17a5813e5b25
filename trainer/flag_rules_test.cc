#include "trainer/flag_rules.h"

#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace sparse {
namespace {

std::vector<std::string> RuledFlags() {
  std::vector<std::string> flags;
  for (const auto& rule : SparseTrainFlagRules()) flags.emplace_back(rule.flag);
  return flags;
}

TEST(FlagRulesTest, CoverageCheckNamesAFlagWithoutARuleAndARuleWithoutAFlag) {
  std::vector<std::string> flags = RuledFlags();
  EXPECT_TRUE(CheckRulesCover(flags).ok());
  flags.push_back("new_flag");
  absl::Status missing = CheckRulesCover(flags);
  EXPECT_EQ(missing.code(), absl::StatusCode::kInternal);
  EXPECT_NE(missing.message().find("flag --new_flag has no rule"), std::string::npos) << missing;
  flags = RuledFlags();
  flags.erase(flags.begin());
  absl::Status stale = CheckRulesCover(flags);
  EXPECT_NE(stale.message().find("has a rule for --dataset, which sparse-train does not define"),
            std::string::npos)
      << stale;
}

TEST(FlagRulesTest, RefusesTheFirstSetFlagThatDoesNotApply) {
  const RunShape csv{.dataset = "csv"};
  const std::set<std::string> set = {"outputs", "train_rows", "d"};
  auto is_set = [&set](absl::string_view f) { return set.count(std::string(f)) > 0; };
  absl::Status s = CheckFlagsApply(csv, is_set);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("--d applies only to synthetic data"), std::string::npos) << s;
  EXPECT_NE(s.message().find("this run is --dataset=csv --model=dsm --router=lsh"), std::string::npos)
      << s;
  EXPECT_TRUE(CheckFlagsApply(RunShape{.dataset = "csv"},
                              [](absl::string_view f) { return f == "outputs"; })
                  .ok());
  const RunShape dry{.publish = false};
  absl::Status version = CheckFlagsApply(dry, [](absl::string_view f) { return f == "model_version"; });
  EXPECT_NE(version.message().find("--model_version applies only to runs that publish"),
            std::string::npos)
      << version;
}

TEST(FlagRulesTest, TrainFileImpliesItsFormatOrNeedsDataset) {
  EXPECT_EQ(FormatFromFileName("data.CSV"), "csv");
  EXPECT_EQ(FormatFromFileName("data.tsv"), "csv");
  EXPECT_EQ(FormatFromFileName("x.npy,y.npy"), "npy");
  EXPECT_EQ(FormatFromFileName("x.npy,y.txt"), "");
  EXPECT_EQ(FormatFromFileName("data.txt"), "");
  EXPECT_EQ(FormatFromFileName("train-images-idx3-ubyte.gz,train-labels-idx1-ubyte.gz"), "idx");
  EXPECT_EQ(FormatFromFileName("images-idx3-ubyte,labels-idx1-ubyte"), "idx");
  EXPECT_EQ(FormatFromFileName("train-images-idx3-ubyte.gz"), "");
  EXPECT_EQ(ResolveDataset({.dataset = "fashion_mnist", .dataset_set = true}).value(),
            "fashion_mnist");
  EXPECT_EQ(ResolveDataset({.dataset = "polynomial", .train_file = "a.csv"}).value(), "csv");
  EXPECT_EQ(ResolveDataset({.dataset = "polynomial"}).value(), "polynomial");
  EXPECT_EQ(ResolveDataset({.dataset = "csv", .dataset_set = true, .train_file = "a.txt"}).value(),
            "csv");
  absl::Status unknown = ResolveDataset({.dataset = "polynomial", .train_file = "a.txt"}).status();
  EXPECT_NE(unknown.message().find("pass --dataset=csv, npy or idx"), std::string::npos);
  absl::Status mismatch = ResolveDataset({.dataset = "csv",
                                          .dataset_set = true,
                                          .train_file = "a.csv",
                                          .test_file = "x.npy,y.npy"})
                              .status();
  EXPECT_NE(mismatch.message().find("--test_file=x.npy,y.npy names npy data, but this run reads "
                                    "--dataset=csv"),
            std::string::npos)
      << mismatch;
  EXPECT_FALSE(ResolveDataset({.dataset = "sine", .dataset_set = true}).ok());
}

}  // namespace
}  // namespace sparse
