#include "trainer/flag_rules.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "trainer/dataset.h"

namespace sparse {
namespace {

bool Always(const RunShape&) { return true; }
bool Synthetic(const RunShape& r) { return r.synthetic(); }
bool PolynomialDegree(const RunShape& r) {
  return r.dataset == "polynomial" || r.dataset == "manifold";
}
bool Manifold(const RunShape& r) { return r.dataset == "manifold"; }
bool ReluNet(const RunShape& r) { return r.dataset == "relu_net"; }
bool Files(const RunShape& r) { return r.files(); }
bool Csv(const RunShape& r) { return r.dataset == "csv"; }
bool Holdout(const RunShape& r) { return r.files() && !r.test_file; }
bool SampledRows(const RunShape& r) { return !r.files(); }
bool Dsm(const RunShape& r) { return r.kind == ModelKind::kDsm; }
bool ChosenDsm(const RunShape& r) { return Dsm(r) && !r.search; }
bool RoutedDsm(const RunShape& r) { return ChosenDsm(r) && r.router != RouterKind::kTopk; }
bool TopkDsm(const RunShape& r) { return ChosenDsm(r) && r.router == RouterKind::kTopk; }
bool Search(const RunShape& r) { return Dsm(r) && r.search; }
bool LshTable(const RunShape& r) { return r.kind == ModelKind::kLshTable; }
bool EuclideanTable(const RunShape& r) {
  return LshTable(r) && r.family == HashFamily::kEuclidean;
}
bool Publish(const RunShape& r) { return r.publish; }

constexpr char kSynthetic[] =
    "synthetic data (--dataset=polynomial, hypercube, relu_net or manifold; a file's "
    "dimensions and rows are its own)";
constexpr char kChosenDsm[] = "--model=dsm without --search (the search chooses it)";
constexpr char kPublish[] = "runs that publish (--dry_run publishes nothing)";

constexpr FlagRule<RunShape> kRules[] = {
    // Data
    {"dataset", "every run", Always},
    {"d", kSynthetic, Synthetic},
    {"poly_degree", "--dataset=polynomial or manifold", PolynomialDegree},
    {"manifold_dim", "--dataset=manifold", Manifold},
    {"relu_width", "--dataset=relu_net", ReluNet},
    {"function_seed", kSynthetic, Synthetic},
    {"train_rows", "synthetic data and --dataset=fashion_mnist (its first rows)", SampledRows},
    {"test_rows", "synthetic data and --dataset=fashion_mnist (its first rows)", SampledRows},
    {"train_file", "--dataset=csv, npy or idx", Files},
    {"test_file", "--dataset=csv, npy or idx", Files},
    {"outputs", "--dataset=csv (an npy targets file has its own width)", Csv},
    {"csv_separator", "--dataset=csv", Csv},
    {"holdout", "--dataset=csv, npy or idx without --test_file (the test file is the test set)",
     Holdout},
    // Model
    {"model", "every run", Always},
    {"router", kChosenDsm, ChosenDsm},
    {"experts",
     "--model=dsm with the lsh, hash or kmeans router (topk has no experts), without --search",
     RoutedDsm},
    {"active_units", kChosenDsm, ChosenDsm},
    {"blocks", kChosenDsm, ChosenDsm},
    {"topk_width", "--model=dsm --router=topk, without --search", TopkDsm},
    {"activation", "every run (the DSM and every dense twin)", Always},
    {"tables", "--model=lsh_table", LshTable},
    {"hashes", "--model=lsh_table", LshTable},
    {"lsh_degree", "--model=lsh_table", LshTable},
    {"family", "--model=lsh_table", LshTable},
    {"bucket_width", "--model=lsh_table --family=euclidean", EuclideanTable},
    {"min_bucket_rows", "--model=lsh_table", LshTable},
    {"dense_width", "every run (the dense twin)", Always},
    // Search
    {"search", "--model=dsm (the search chooses a DSM)", Dsm},
    {"budget_flops", "--model=dsm --search", Search},
    {"budget_bytes", "--model=dsm --search", Search},
    {"search_validation", "--model=dsm --search", Search},
    // Fitting
    {"ridge", "every run", Always},
    {"closed_form_limit", "every run", Always},
    {"epochs", "every run (when a fit is wider than --closed_form_limit)", Always},
    {"learning_rate", "every run (when a fit is wider than --closed_form_limit)", Always},
    {"precision", "every run", Always},
    {"seed", "every run", Always},
    {"threads", "every run", Always},
    // Output
    {"repository", kPublish, Publish},
    {"model_name", kPublish, Publish},
    {"model_version", kPublish, Publish},
    {"dry_run", "every run", Always},
    {"json", "every run", Always},
    {"quiet", "every run", Always},
};

}  // namespace

std::string RunShape::Describe() const {
  std::string out = absl::StrCat("--dataset=", dataset);
  if (test_file) absl::StrAppend(&out, " with --test_file");
  if (kind == ModelKind::kDsm && search) {
    absl::StrAppend(&out, " --model=dsm --search");
  } else if (kind == ModelKind::kDsm) {
    absl::StrAppend(&out, " --model=dsm --router=", RouterKindName(router));
  } else {
    absl::StrAppend(&out, " --model=lsh_table --family=", HashFamilyName(family));
  }
  if (!publish) absl::StrAppend(&out, " --dry_run");
  return out;
}

absl::Span<const FlagRule<RunShape>> SparseTrainFlagRules() { return kRules; }

absl::Status CheckFlagsApply(const RunShape& run,
                             absl::FunctionRef<bool(absl::string_view)> is_set) {
  return CheckFlagsApply(SparseTrainFlagRules(), run, run.Describe(), is_set);
}

absl::Status CheckRulesCover(const std::vector<std::string>& defined) {
  return CheckRulesCover(SparseTrainFlagRules(), defined, "sparse-train", "trainer/flag_rules.cc");
}

std::string FormatFromFileName(absl::string_view spec) {
  const std::string lower = absl::AsciiStrToLower(spec);
  if (absl::EndsWith(lower, ".csv") || absl::EndsWith(lower, ".tsv")) return "csv";
  const std::vector<absl::string_view> parts = absl::StrSplit(lower, ',');
  const bool npy = std::all_of(parts.begin(), parts.end(),
                               [](absl::string_view p) { return absl::EndsWith(p, ".npy"); });
  if (npy) return "npy";
  // MNIST's names: train-images-idx3-ubyte.gz,train-labels-idx1-ubyte.gz.
  const bool idx = parts.size() == 2 &&
                   std::all_of(parts.begin(), parts.end(), [](absl::string_view p) {
                     return absl::StrContains(p, "idx") &&
                            (absl::EndsWith(p, "ubyte") || absl::EndsWith(p, "ubyte.gz"));
                   });
  return idx ? "idx" : "";
}

absl::StatusOr<std::string> ResolveDataset(const DatasetFlags& flags) {
  std::string dataset = flags.dataset;
  const std::string implied = FormatFromFileName(flags.train_file);
  if (!flags.dataset_set && !flags.train_file.empty()) {
    if (implied.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot tell the format of --train_file=", flags.train_file,
          " from its name (expected a .csv or .tsv file, 'inputs.npy,targets.npy' or "
          "'images-idx3-ubyte.gz,labels-idx1-ubyte.gz'): pass --dataset=csv, npy or idx"));
    }
    dataset = implied;
  }
  if (dataset != "csv" && dataset != "npy" && dataset != "idx") {
    if (dataset != "fashion_mnist" && !ParseSyntheticKind(dataset).ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--dataset must be csv, npy, idx, fashion_mnist or a synthetic function (polynomial, "
          "hypercube, relu_net, manifold), got '", dataset, "'"));
    }
    return dataset;  // the rules refuse the file flags
  }
  for (const auto& [flag, file] : {std::pair<const char*, const std::string&>{
                                       "train_file", flags.train_file},
                                   {"test_file", flags.test_file}}) {
    const std::string format = FormatFromFileName(file);
    if (!format.empty() && format != dataset) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, "=", file, " names ", format,
                                                     " data, but this run reads --dataset=",
                                                     dataset));
    }
  }
  return dataset;
}

}  // namespace sparse
