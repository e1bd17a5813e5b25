// Where each sparse-train flag applies. A flag the user sets where it would
// be ignored (--d on a CSV run, --outputs on a synthetic one, --experts with
// the topk router, --model_version with --dry_run) is refused with a message
// naming the flag, where it applies and what this run is; nothing is
// silently ignored (issue 31, trap 1).
//
// Every flag sparse_train_main.cc defines has exactly one rule here;
// CheckRulesCover enforces it at start-up, so a new flag without a rule
// fails every run (and tests/sparse_train_cli_test.cc). The mechanism is
// common/flag_rules.h, shared with sparse-cli and sparse-server.
#ifndef SPARSE_TRAINER_FLAG_RULES_H_
#define SPARSE_TRAINER_FLAG_RULES_H_

#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/flag_rules.h"
#include "engine/model.h"
#include "engine/router_kind.h"
#include "engine/weights.h"

namespace sparse {

// What a run does, as far as flags care; built from the flags that choose
// (--dataset or the file's format, --model, --router, --family, --dry_run).
struct RunShape {
  // A synthetic kind, a file format ("csv", "npy", "idx"), or
  // "fashion_mnist" (Debian's dataset-fashion-mnist, IDX files).
  std::string dataset = "polynomial";
  ModelKind kind = ModelKind::kDsm;    // kDsm or kLshTable
  RouterKind router = RouterKind::kLsh;
  HashFamily family = HashFamily::kHyperplane;
  bool test_file = false;  // --test_file given
  bool publish = true;     // false under --dry_run
  bool search = false;     // --search chooses router, experts and units

  bool files() const { return dataset == "csv" || dataset == "npy" || dataset == "idx"; }
  bool synthetic() const { return !files() && dataset != "fashion_mnist"; }
  // "--dataset=csv --model=dsm --router=lsh --dry_run", as a user would type it.
  std::string Describe() const;
};

// One rule per sparse-train flag, in --help order.
absl::Span<const FlagRule<RunShape>> SparseTrainFlagRules();

// INVALID_ARGUMENT for the first flag with is_set(flag) whose rule does not
// apply to `run`: "--d applies only to synthetic data (...); this run is
// --dataset=csv ...: it would be ignored".
absl::Status CheckFlagsApply(const RunShape& run,
                             absl::FunctionRef<bool(absl::string_view)> is_set);

// INTERNAL naming a flag of `defined` that has no rule, or a rule whose flag
// is not defined.
absl::Status CheckRulesCover(const std::vector<std::string>& defined);

// The format a --train_file / --test_file value names by its extension:
// "csv" for .csv or .tsv, "npy" for "inputs.npy,targets.npy", "idx" for
// "images-idx3-ubyte[.gz],labels-idx1-ubyte[.gz]", "" otherwise.
std::string FormatFromFileName(absl::string_view spec);

// The dataset a run reads. --dataset when the user set it (a file whose
// name implies another format is refused); else the format --train_file's
// name implies (refused when it implies none: pass --dataset); else the
// --dataset default. --test_file must be of the same format.
struct DatasetFlags {
  std::string dataset = "polynomial";  // --dataset's value
  bool dataset_set = false;
  std::string train_file = "";
  std::string test_file = "";
};
absl::StatusOr<std::string> ResolveDataset(const DatasetFlags& flags);

}  // namespace sparse

#endif  // SPARSE_TRAINER_FLAG_RULES_H_
