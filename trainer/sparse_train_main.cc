// sparse-train: trains a sparse model (LSH table or DSM) and its dense twin
// on the paper's synthetic functions or on your data, evaluates both
// through the engine, and publishes them as a new version of a model in a
// model repository. Run with --help for every flag.
#include <omp.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <string>
#include <system_error>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/command_line.h"
#include "common/flag_rules.h"
#include "common/version.h"
#include "common/status_macros.h"
#include "model_store/checkpoint.h"
#include "trainer/dataset.h"
#include "trainer/flag_rules.h"
#include "trainer/search.h"
#include "trainer/trainer.h"
#include "nlohmann/json.hpp"

// Data
ABSL_FLAG(std::string, dataset, "polynomial",
          "Training data: a synthetic function (polynomial, hypercube, relu_net, manifold) "
          "sampled on U[-1,1]^d; 'csv', 'npy' or 'idx' to read --train_file (implied by its "
          "name: .csv or .tsv, 'inputs.npy,targets.npy', or MNIST's "
          "'images-idx3-ubyte.gz,labels-idx1-ubyte.gz'); or 'fashion_mnist', Debian's "
          "dataset-fashion-mnist (784 pixels in [0, 1], 10 one-hot targets; 60,000 training "
          "and 10,000 test images, the first --train_rows / --test_rows of them). A flag set "
          "where it does not apply is refused.");
ABSL_FLAG(int64_t, d, 8, "Synthetic data: input dimension d.");
ABSL_FLAG(int64_t, poly_degree, 4, "polynomial / manifold: degree D of the polynomial.");
ABSL_FLAG(int64_t, manifold_dim, 8, "manifold: intrinsic dimension k of p(Ax), A in R^{k x d}.");
ABSL_FLAG(int64_t, relu_width, 64, "relu_net: width of the target network's hidden layers.");
ABSL_FLAG(uint64_t, function_seed, 1, "Synthetic data: seed that draws the target function.");
ABSL_FLAG(int64_t, train_rows, 65536,
          "Synthetic data: training rows (paper: 2^16). fashion_mnist: at most this many.");
ABSL_FLAG(int64_t, test_rows, 16384,
          "Synthetic data: test rows (paper: 2^14). fashion_mnist: at most this many.");
ABSL_FLAG(std::string, train_file, "",
          "csv: a CSV file (optional header, '#' comment lines; the last --outputs columns are "
          "targets). npy: 'inputs.npy,targets.npy'. idx: 'images,labels', IDX files of unsigned "
          "bytes, gzip-compressed or not (inputs: pixels / 255; targets: one-hot labels).");
ABSL_FLAG(std::string, test_file, "",
          "Test data in the --train_file format; without it --holdout of the training file is "
          "held out.");
ABSL_FLAG(int64_t, outputs, 1, "csv: number of target columns at the end of each row.");
ABSL_FLAG(std::string, csv_separator, "",
          "csv: ',', ';' or 'tab' (empty = sniffed from the first line that is not a comment: "
          "tab if it holds one, else ';' if it holds one, else ',').");
ABSL_FLAG(double, holdout, 0.2, "Fraction of --train_file held out for testing when no --test_file.");
// Model
ABSL_FLAG(std::string, model, "dsm", "Sparse model kind: dsm or lsh_table.");
ABSL_FLAG(std::string, router, "lsh", "dsm: router: lsh, hash (random hash), kmeans or topk.");
ABSL_FLAG(int64_t, experts, 16, "dsm lsh/hash/kmeans: experts per block (a power of 2 for lsh).");
ABSL_FLAG(int64_t, active_units, 64, "dsm: units kept per block (an expert's width).");
ABSL_FLAG(int64_t, blocks, 1, "dsm: independently routed blocks whose outputs add.");
ABSL_FLAG(int64_t, topk_width, 1024, "dsm topk: total width t.");
ABSL_FLAG(std::string, activation, "relu", "dsm and dense: relu or identity.");
ABSL_FLAG(int64_t, tables, 8, "lsh_table: number of tables s.");
ABSL_FLAG(int64_t, hashes, 11, "lsh_table: hash functions per table m (2^m buckets per table for hyperplane).");
ABSL_FLAG(int64_t, lsh_degree, 0, "lsh_table: 0 = constant buckets, 1 = affine buckets.");
ABSL_FLAG(std::string, family, "hyperplane", "lsh_table: hyperplane or euclidean.");
ABSL_FLAG(double, bucket_width, 0, "lsh_table euclidean: bucket width w (0 = std-dev of a projection).");
ABSL_FLAG(int64_t, min_bucket_rows, 0,
          "lsh_table: rows a bucket needs to be stored (0 = 1 for constant, d+2 for affine).");
ABSL_FLAG(int64_t, dense_width, 0,
          "Width of the dense twin (0 = the sparse model's activated units per row).");
// Search
ABSL_FLAG(bool, search, false,
          "dsm: choose the router, experts and units per expert by successive halving on a "
          "validation split of the training rows, under --budget_flops and/or --budget_bytes; "
          "prints the candidates with the Pareto front marked, then trains the chosen one.");
ABSL_FLAG(int64_t, budget_flops, 0, "--search: FLOPs per row the chosen model may cost (0 = none).");
ABSL_FLAG(int64_t, budget_bytes, 0,
          "--search: FP32 weight bytes read per row the chosen model may cost (0 = none).");
ABSL_FLAG(double, search_validation, 0.2,
          "--search: fraction of the training rows held out to compare candidates.");
// Fitting
ABSL_FLAG(double, ridge, 1e-5,
          "Relative ridge: lambda = ridge * trace(H^T H) / features. Keep it >= 1e-5: the "
          "normal equations are accumulated in float32.");
ABSL_FLAG(int64_t, closed_form_limit, 8192,
          "Widest top layer fitted in closed form; wider ones (topk, dense) use Adam.");
ABSL_FLAG(int64_t, epochs, 20, "Adam epochs (only when a fit exceeds --closed_form_limit).");
ABSL_FLAG(double, learning_rate, 1e-3, "Adam learning rate.");
ABSL_FLAG(std::string, precision, "FP32",
          "How the checkpoint stores the networks' weight matrices: FP32, BF16 (half the bytes) or "
          "INT8 (a quarter, with a scale per output channel). The test MSE served at FP32, BF16 "
          "and INT8 is measured and recorded either way; the server's precision is config.pbtxt's.");
ABSL_FLAG(uint64_t, seed, 1, "Seed for the data sample, random features, hashes and routers.");
ABSL_FLAG(int, threads, 0, "Threads for training GEMMs (0 = all cores).");
// Output
ABSL_FLAG(std::string, repository, "", "Model repository to publish into.");
ABSL_FLAG(std::string, model_name, "", "Model name: publishes <repository>/<model_name>/<version>/.");
ABSL_FLAG(int64_t, model_version, 0,
          "Model version to publish (0 = one more than the newest present).");
ABSL_FLAG(bool, dry_run, false, "Train and evaluate, but publish nothing.");
ABSL_FLAG(bool, json, false, "Print the final summary as one JSON object on stdout.");
ABSL_FLAG(bool, quiet, false, "No progress lines on stderr.");

namespace sparse {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// OIP and REST serve the dense twin of model m as "m.dense".
constexpr absl::string_view kDenseSuffix = ".dense";

template <typename T>
absl::StatusOr<T> CheckPositive(const char* flag, T v) {
  if (v <= 0) return absl::InvalidArgumentError(absl::StrCat("--", flag, " must be > 0, got ", v));
  return v;
}

// True when the user set --name on the command line or in a --flagfile,
// even to its default (common/flag_rules.h).
bool IsSet(absl::string_view name) { return FlagSetOnCommandLine(name); }

// What this run does, from the flags that choose it; a flag set where it
// would be ignored is refused (trainer/flag_rules.h).
absl::StatusOr<RunShape> ShapeFromFlags() {
  RETURN_IF_ERROR(CheckRulesCover(FlagsDefinedIn("sparse_train_main.")));
  RunShape run;
  ASSIGN_OR_RETURN(run.dataset, ResolveDataset({.dataset = absl::GetFlag(FLAGS_dataset),
                                                .dataset_set = IsSet("dataset"),
                                                .train_file = absl::GetFlag(FLAGS_train_file),
                                                .test_file = absl::GetFlag(FLAGS_test_file)}));
  const std::string model = absl::GetFlag(FLAGS_model);
  if (model == "dsm") {
    run.kind = ModelKind::kDsm;
  } else if (model == "lsh_table") {
    run.kind = ModelKind::kLshTable;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--model must be dsm or lsh_table, got '", model, "'"));
  }
  ASSIGN_OR_RETURN(run.router, ParseRouterKind(absl::GetFlag(FLAGS_router)));
  ASSIGN_OR_RETURN(run.family, ParseHashFamily(absl::GetFlag(FLAGS_family)));
  run.test_file = !absl::GetFlag(FLAGS_test_file).empty();
  run.publish = !absl::GetFlag(FLAGS_dry_run);
  run.search = absl::GetFlag(FLAGS_search);
  RETURN_IF_ERROR(CheckFlagsApply(run, IsSet));
  return run;
}

absl::StatusOr<TrainOptions> OptionsFromFlags(const RunShape& run) {
  TrainOptions o;
  o.kind = run.kind;
  o.router = run.router;
  o.family = run.family;
  ASSIGN_OR_RETURN(o.activation, ParseActivation(absl::GetFlag(FLAGS_activation)));
  {
    absl::StatusOr<Precision> precision = ParsePrecision(absl::GetFlag(FLAGS_precision));
    if (!precision.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--precision: ", precision.status().message()));
    }
    o.precision = *precision;
  }
  ASSIGN_OR_RETURN(o.experts, CheckPositive("experts", absl::GetFlag(FLAGS_experts)));
  ASSIGN_OR_RETURN(o.active_units, CheckPositive("active_units", absl::GetFlag(FLAGS_active_units)));
  ASSIGN_OR_RETURN(o.blocks, CheckPositive("blocks", absl::GetFlag(FLAGS_blocks)));
  ASSIGN_OR_RETURN(o.topk_width, CheckPositive("topk_width", absl::GetFlag(FLAGS_topk_width)));
  ASSIGN_OR_RETURN(o.tables, CheckPositive("tables", absl::GetFlag(FLAGS_tables)));
  ASSIGN_OR_RETURN(o.hashes, CheckPositive("hashes", absl::GetFlag(FLAGS_hashes)));
  o.lsh_degree = absl::GetFlag(FLAGS_lsh_degree);
  if (o.lsh_degree != 0 && o.lsh_degree != 1) {
    return absl::InvalidArgumentError(absl::StrCat("--lsh_degree must be 0 or 1, got ", o.lsh_degree));
  }
  o.bucket_width = static_cast<float>(absl::GetFlag(FLAGS_bucket_width));
  o.min_bucket_rows = absl::GetFlag(FLAGS_min_bucket_rows);
  o.dense_width = absl::GetFlag(FLAGS_dense_width);
  if (o.dense_width < 0) return absl::InvalidArgumentError("--dense_width must be >= 0");
  ASSIGN_OR_RETURN(o.ridge, CheckPositive("ridge", absl::GetFlag(FLAGS_ridge)));
  ASSIGN_OR_RETURN(o.closed_form_limit, CheckPositive("closed_form_limit", absl::GetFlag(FLAGS_closed_form_limit)));
  ASSIGN_OR_RETURN(o.epochs, CheckPositive("epochs", absl::GetFlag(FLAGS_epochs)));
  ASSIGN_OR_RETURN(o.learning_rate, CheckPositive("learning_rate", absl::GetFlag(FLAGS_learning_rate)));
  o.seed = absl::GetFlag(FLAGS_seed);
  if (o.kind == ModelKind::kDsm && o.router == RouterKind::kTopk) {
    if (o.topk_width % o.blocks != 0 || o.active_units > o.topk_width / o.blocks) {
      return absl::InvalidArgumentError(absl::StrCat(
          "topk needs --topk_width divisible by --blocks and --active_units <= topk_width / "
          "blocks; got topk_width=", o.topk_width, " blocks=", o.blocks,
          " active_units=", o.active_units));
    }
  }
  if (o.kind == ModelKind::kLshTable && o.family == HashFamily::kHyperplane && o.hashes > 64) {
    return absl::InvalidArgumentError(absl::StrCat("--hashes must be <= 64 for hyperplane, got ", o.hashes));
  }
  return o;
}

// `classes`: an IDX test file's one-hot width, the training file's (0 for
// the training file itself).
absl::StatusOr<Dataset> ReadFile(const std::string& format, const std::string& spec,
                                 int64_t classes = 0) {
  if (format == "csv") {
    CsvOptions options{.outputs = absl::GetFlag(FLAGS_outputs)};
    const std::string separator = absl::GetFlag(FLAGS_csv_separator);
    if (!separator.empty()) {
      absl::StatusOr<char> parsed = ParseSeparator(separator);
      if (!parsed.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("--csv_separator: ", parsed.status().message()));
      }
      options.separator = *parsed;
    }
    return ReadCsv(spec, options);
  }
  std::vector<std::string> parts = absl::StrSplit(spec, ',');
  if (parts.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        format == "idx" ? "idx data is given as 'images-idx3-ubyte.gz,labels-idx1-ubyte.gz'"
                        : "npy data is given as 'inputs.npy,targets.npy'",
        ", got '", spec, "'"));
  }
  if (format == "idx") return ReadIdx(parts[0], parts[1], classes);
  return ReadNpy(parts[0], parts[1]);
}

// The first `rows` rows of `data` (all when it has fewer).
void KeepFirstRows(int64_t rows, Dataset* data) {
  if (rows >= data->rows) return;
  data->rows = rows;
  data->x.resize(rows * data->d);
  data->y.resize(rows * data->o);
}

struct Data {
  Dataset train, test;
  std::string description;
};

absl::StatusOr<Data> LoadData(const std::string& dataset) {
  Data data;
  if (dataset == "fashion_mnist") {
    const std::string dir = "/usr/share/datasets/fashion-mnist/";
    if (!fs::exists(dir + "train-images-idx3-ubyte.gz")) {
      return absl::NotFoundError(
          "--dataset=fashion_mnist reads Debian's dataset-fashion-mnist package, which is not "
          "installed: apt-get install dataset-fashion-mnist (deploy/install-deps.sh installs it)");
    }
    ASSIGN_OR_RETURN(data.train, ReadIdx(dir + "train-images-idx3-ubyte.gz",
                                         dir + "train-labels-idx1-ubyte.gz", 10));
    ASSIGN_OR_RETURN(data.test, ReadIdx(dir + "t10k-images-idx3-ubyte.gz",
                                        dir + "t10k-labels-idx1-ubyte.gz", 10));
    ASSIGN_OR_RETURN(const int64_t train_rows, CheckPositive("train_rows", absl::GetFlag(FLAGS_train_rows)));
    ASSIGN_OR_RETURN(const int64_t test_rows, CheckPositive("test_rows", absl::GetFlag(FLAGS_test_rows)));
    KeepFirstRows(train_rows, &data.train);
    KeepFirstRows(test_rows, &data.test);
    data.description = absl::StrCat("Fashion-MNIST (", data.train.rows, " training and ",
                                    data.test.rows, " test images of 28 x 28 pixels, 10 classes)");
    return data;
  }
  if (dataset == "csv" || dataset == "npy" || dataset == "idx") {
    const std::string train_file = absl::GetFlag(FLAGS_train_file);
    if (train_file.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("--dataset=", dataset, " needs --train_file"));
    }
    ASSIGN_OR_RETURN(Dataset all, ReadFile(dataset, train_file));
    const std::string test_file = absl::GetFlag(FLAGS_test_file);
    if (!test_file.empty()) {
      data.train = std::move(all);
      ASSIGN_OR_RETURN(data.test, ReadFile(dataset, test_file, dataset == "idx" ? data.train.o : 0));
      // File names only: the description is stored in the checkpoint and
      // served by GetModel, where directories have no business.
      data.description = absl::StrCat(dataset, " ", fs::path(train_file).filename().string(),
                                      " (test: ", fs::path(test_file).filename().string(), ")");
    } else {
      ASSIGN_OR_RETURN(auto split, SplitHoldout(all, absl::GetFlag(FLAGS_holdout), absl::GetFlag(FLAGS_seed)));
      data.train = std::move(split.first);
      data.test = std::move(split.second);
      data.description = absl::StrCat(dataset, " ", fs::path(train_file).filename().string(), " (",
                                      absl::GetFlag(FLAGS_holdout), " held out)");
    }
    if (data.train.d != data.test.d || data.train.o != data.test.o) {
      return absl::InvalidArgumentError(absl::StrCat(
          "train file has ", data.train.d, " inputs + ", data.train.o, " targets, test file has ",
          data.test.d, " + ", data.test.o));
    }
    return data;
  }
  ASSIGN_OR_RETURN(SyntheticKind kind, ParseSyntheticKind(dataset));
  SyntheticSpec spec{.kind = kind,
                     .d = absl::GetFlag(FLAGS_d),
                     .degree = absl::GetFlag(FLAGS_poly_degree),
                     .manifold_dim = absl::GetFlag(FLAGS_manifold_dim),
                     .relu_width = absl::GetFlag(FLAGS_relu_width),
                     .seed = absl::GetFlag(FLAGS_function_seed)};
  ASSIGN_OR_RETURN(std::unique_ptr<TargetFunction> f, TargetFunction::Create(spec));
  ASSIGN_OR_RETURN(int64_t train_rows, CheckPositive("train_rows", absl::GetFlag(FLAGS_train_rows)));
  ASSIGN_OR_RETURN(int64_t test_rows, CheckPositive("test_rows", absl::GetFlag(FLAGS_test_rows)));
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  data.train = SampleDataset(*f, spec.d, train_rows, seed * 2 + 1);
  data.test = SampleDataset(*f, spec.d, test_rows, seed * 2 + 2);
  data.description = f->Describe();
  return data;
}

// The model directory, created now so an unwritable repository fails before
// any training time is spent.
absl::StatusOr<std::string> PrepareModelDir() {
  const std::string repo = absl::GetFlag(FLAGS_repository);
  const std::string name = absl::GetFlag(FLAGS_model_name);
  if (repo.empty() || name.empty()) {
    return absl::InvalidArgumentError(
        "--repository and --model_name say where to publish (or pass --dry_run)");
  }
  if (name == "." || name == ".." || name.find('/') != std::string::npos || name[0] == '.') {
    return absl::InvalidArgumentError(absl::StrCat(
        "--model_name must be a plain directory name (no '/', not starting with '.'), got '",
        name, "'"));
  }
  if (absl::EndsWith(name, kDenseSuffix)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--model_name '", name, "' ends in '", kDenseSuffix, "', which names the dense twin of model '",
        name.substr(0, name.size() - kDenseSuffix.size()),
        "' over REST and OIP; choose a name without that suffix"));
  }
  const std::string dir = (fs::path(repo) / name).string();
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  if (::access(dir.c_str(), W_OK) != 0) {
    return absl::PermissionDeniedError(absl::StrCat("cannot write to ", dir));
  }
  return dir;
}

int64_t NextVersion(const std::string& model_dir) {
  int64_t newest = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(model_dir, ec)) {
    int64_t v = 0;
    if (absl::SimpleAtoi(entry.path().filename().string(), &v) && v > newest) newest = v;
  }
  return newest + 1;
}

void PrintHuman(const TrainResult& r, const Data& data, const std::string& published, double total) {
  const ModelMetrics& s = r.sparse;
  const ModelMetrics& d = r.dense;
  std::printf("sparse-train: %s\n", s.description.c_str());
  std::printf("  data: %s\n        %lld train rows, %lld test rows, d=%lld, o=%lld\n",
              data.description.c_str(), static_cast<long long>(data.train.rows),
              static_cast<long long>(data.test.rows), static_cast<long long>(data.train.d),
              static_cast<long long>(data.train.o));
  std::printf("  %-22s %-16s %s\n", "", "sparse", absl::StrCat("dense twin (t=", d.activated_units, ")").c_str());
  std::printf("  %-22s %-16.4e %.4e\n", "test MSE", s.test_mse, d.test_mse);
  for (const auto& [precision, at] : s.at) {
    const PrecisionMetrics& dense_at = d.at.at(precision);
    std::printf("  %-22s %-16.4e %.4e\n",
                absl::StrCat("test MSE at ", PrecisionName(precision)).c_str(), at.test_mse,
                dense_at.test_mse);
  }
  std::printf("  %-22s %-16.4e %.4e\n", "train MSE", s.train_mse, d.train_mse);
  if (s.classification) {
    std::printf("  %-22s %-16.4f %.4f\n", "test accuracy", s.test_accuracy, d.test_accuracy);
  }
  std::printf("  %-22s %-16lld %lld\n", "activated units/row", static_cast<long long>(s.activated_units),
              static_cast<long long>(d.activated_units));
  std::printf("  %-22s %-16lld %lld\n", "FLOPs per row", static_cast<long long>(s.flops_per_row),
              static_cast<long long>(d.flops_per_row));
  std::printf("  %-22s %-16lld %lld\n", "parameters", static_cast<long long>(s.parameters),
              static_cast<long long>(d.parameters));
  for (const auto& [precision, at] : s.at) {
    if (at.routes_changed > 0) {
      std::printf("  routes at %s differ from FP32 on %.3f%% of test rows\n",
                  std::string(PrecisionName(precision)).c_str(), 100 * at.routes_changed);
    }
  }
  std::printf("  (at BF16 and INT8 from the weights as stored: %s; routers stay FP32)\n",
              std::string(PrecisionName(r.checkpoint.tensor_precision)).c_str());
  std::printf("  sparse fit: %s\n  dense fit:  %s\n", s.solver.c_str(), d.solver.c_str());
  std::printf("  time: train %.1f s, evaluate %.1f s, total %.1f s\n", r.train_seconds,
              r.eval_seconds, total);
  std::printf("  %s\n", published.empty() ? "dry run: nothing published"
                                         : absl::StrCat("published ", published).c_str());
}

nlohmann::json MetricsJson(const ModelMetrics& m) {
  nlohmann::json j = {{"test_mse", m.test_mse},
                      {"train_mse", m.train_mse},
                      {"activated_units", m.activated_units},
                      {"flops_per_row", m.flops_per_row},
                      {"weight_bytes_per_row", m.weight_bytes_per_row},
                      {"parameters", m.parameters},
                      {"solver", m.solver},
                      {"description", m.description}};
  if (m.classification) j["test_accuracy"] = m.test_accuracy;
  for (const auto& [precision, at] : m.at) {
    nlohmann::json p = {{"test_mse", at.test_mse},
                        {"routes_changed", at.routes_changed},
                        {"weight_bytes_per_row", at.weight_bytes_per_row}};
    if (m.classification) p["test_accuracy"] = at.test_accuracy;
    j["at"][std::string(PrecisionName(precision))] = p;
  }
  return j;
}

// --search: the chosen options (progress kept), the candidates' table on
// stdout (stderr under --json) and a one-line summary for the checkpoint.
absl::StatusOr<TrainOptions> SearchFromFlags(const Dataset& train, const TrainOptions& base,
                                             std::string* summary) {
  SearchOptions search{.budget_flops = absl::GetFlag(FLAGS_budget_flops),
                       .budget_bytes = absl::GetFlag(FLAGS_budget_bytes),
                       .validation = absl::GetFlag(FLAGS_search_validation),
                       .base = base};
  if (search.budget_flops < 0 || search.budget_bytes < 0) {
    return absl::InvalidArgumentError(absl::StrCat("--budget_flops and --budget_bytes must be >= 0, got ",
                                                   search.budget_flops, " and ", search.budget_bytes));
  }
  if (!(search.validation > 0 && search.validation < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--search_validation must be in (0, 1), got ", search.validation));
  }
  ASSIGN_OR_RETURN(SearchResult result, Search(train, search));
  const std::string table = FormatSearchTable(result, search);
  std::fputs(table.c_str(), absl::GetFlag(FLAGS_json) ? stderr : stdout);
  const TrainOptions& chosen = result.chosen_options;
  *summary = absl::StrCat("router=", RouterKindName(chosen.router), " E=", chosen.experts,
                          " k=", chosen.active_units, " chosen of ", result.entries.size(),
                          " candidates by validation MSE under ", search.budget_flops,
                          " FLOPs / ", search.budget_bytes, " bytes per row (0 = none)");
  TrainOptions options = chosen;
  options.progress = base.progress;
  return options;
}

absl::Status Run() {
  const auto start = Clock::now();
  const int threads = absl::GetFlag(FLAGS_threads);
  if (threads > 0) omp_set_num_threads(threads);
  ASSIGN_OR_RETURN(const RunShape run, ShapeFromFlags());
  ASSIGN_OR_RETURN(TrainOptions options, OptionsFromFlags(run));
  std::string model_dir;
  if (!absl::GetFlag(FLAGS_dry_run)) {
    ASSIGN_OR_RETURN(model_dir, PrepareModelDir());
  }
  if (!absl::GetFlag(FLAGS_quiet)) {
    options.progress = [start](const std::string& line) {
      std::fprintf(stderr, "[sparse-train %6.1fs] %s\n",
                   std::chrono::duration<double>(Clock::now() - start).count(), line.c_str());
    };
  }
  if (options.progress) options.progress("loading data");
  ASSIGN_OR_RETURN(Data data, LoadData(run.dataset));
  std::string search_summary;
  if (run.search) {
    ASSIGN_OR_RETURN(options, SearchFromFlags(data.train, options, &search_summary));
  }
  ASSIGN_OR_RETURN(TrainResult result, Train(data.train, data.test, options));

  std::string published;
  if (!model_dir.empty()) {
    int64_t version = absl::GetFlag(FLAGS_model_version);
    if (version == 0) version = NextVersion(model_dir);
    Checkpoint& c = result.checkpoint;
    c.info["dataset"] = data.description;
    c.info["train_rows"] = absl::StrCat(data.train.rows);
    c.info["test_rows"] = absl::StrCat(data.test.rows);
    c.info["test_mse"] = absl::StrFormat("%.9g", result.sparse.test_mse);
    c.info["dense_test_mse"] = absl::StrFormat("%.9g", result.dense.test_mse);
    for (const auto& [precision, at] : result.sparse.at) {
      const std::string suffix = absl::AsciiStrToLower(PrecisionName(precision));
      c.info["test_mse_" + suffix] = absl::StrFormat("%.9g", at.test_mse);
      c.info["dense_test_mse_" + suffix] =
          absl::StrFormat("%.9g", result.dense.at.at(precision).test_mse);
      c.info["routes_changed_" + suffix] = absl::StrFormat("%.6g", at.routes_changed);
    }
    c.info["weight_dtype"] = std::string(PrecisionName(c.tensor_precision));
    c.info["sparse_solver"] = result.sparse.solver;
    c.info["dense_solver"] = result.dense.solver;
    c.info["seed"] = absl::StrCat(options.seed);
    if (!search_summary.empty()) c.info["search"] = search_summary;
    RETURN_IF_ERROR(WriteCheckpoint(model_dir, version, c));
    published = (fs::path(model_dir) / std::to_string(version)).string();
  }
  const double total = std::chrono::duration<double>(Clock::now() - start).count();
  if (absl::GetFlag(FLAGS_json)) {
    nlohmann::json j = {{"sparse", MetricsJson(result.sparse)},
                        {"dense", MetricsJson(result.dense)},
                        {"data", data.description},
                        {"train_rows", data.train.rows},
                        {"test_rows", data.test.rows},
                        {"train_seconds", result.train_seconds},
                        {"eval_seconds", result.eval_seconds},
                        {"total_seconds", total},
                        {"published", published}};
    if (!search_summary.empty()) j["search"] = search_summary;
    std::cout << j.dump() << std::endl;
  } else {
    PrintHuman(result, data, published, total);
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace sparse

int main(int argc, char** argv) {
  const std::vector<std::string> rest = sparse::ParseCommandLine(
      argc, argv,
      "trains a sparse model and its dense twin, and publishes them as a model version.\n\n"
      "  sparse-train --repository=repo --model_name=poly_dsm                 # DSM, lsh router\n"
      "  sparse-train --model=lsh_table --tables=8 --hashes=11 --repository=repo --model_name=poly_lsh\n"
      "  sparse-train --train_file=data.csv --outputs=1 --repository=repo --model_name=mine\n"
      "  sparse-train --train_file=data.csv --search --budget_flops=2000 --repository=repo --model_name=mine\n\n"
      "Data defaults to the paper's random polynomial (d=8, degree 4, 2^16 train / 2^14 test rows).\n"
      "Progress goes to stderr; the summary (or --json) to stdout. Exit status 0 on success,\n"
      "1 on any error (nothing is published then).",
      "sparse_train_main.", sparse::VersionText());
  if (!rest.empty()) {
    std::fprintf(stderr, "sparse-train: unexpected argument '%s' (flags look like --name=value; see --help)\n",
                 rest[0].c_str());
    return 1;
  }
  const absl::Status status = sparse::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "sparse-train: error: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
