#include "client/cli_flag_rules.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace sparse {
namespace {

bool Always(const CliRun&) { return true; }
bool Predict(const CliRun& r) { return r.command == "predict"; }
bool Bench(const CliRun& r) { return r.command == "bench"; }
bool Health(const CliRun& r) { return r.command == "health"; }
bool PredictOrBench(const CliRun& r) { return Predict(r) || Bench(r); }
bool ModelCommand(const CliRun& r) { return Predict(r) || Bench(r) || Health(r); }
bool PredictDenseAlone(const CliRun& r) { return Predict(r) && !r.both; }
bool PredictSparsePath(const CliRun& r) { return Predict(r) && (!r.dense || r.both); }
bool ClosedBench(const CliRun& r) { return Bench(r) && !r.open_loop; }
bool OpenBench(const CliRun& r) { return Bench(r) && r.open_loop; }
bool RestBench(const CliRun& r) { return Bench(r) && r.rest; }

constexpr char kEvery[] = "every command";
constexpr char kBench[] = "bench";
constexpr char kPredict[] = "predict";
constexpr char kPredictOrBench[] = "predict and bench";
constexpr char kClosed[] = "bench --mode=closed (the default; open loop sends at --rate instead)";
constexpr char kOpen[] = "bench --mode=open";

constexpr FlagRule<CliRun> kRules[] = {
    {"target", kEvery, Always},
    {"model", "predict, bench and health (models lists every model)", ModelCommand},
    {"wait_seconds", "health", Health},
    {"model_version", kPredictOrBench, PredictOrBench},
    {"inputs", kPredict, Predict},
    {"csv", "predict (rows to send) and bench (where to write the results)", PredictOrBench},
    {"output", kPredict, Predict},
    {"max_rows", kPredict, Predict},
    {"dense", "predict without --both (--both calls the dense endpoint too)", PredictDenseAlone},
    {"both", kPredict, Predict},
    {"route", "predict on the sparse path (--dense alone calls only the dense endpoint, which has "
              "no route)",
     PredictSparsePath},
    {"json", kEvery, Always},
    {"timeout_ms", kEvery, Always},
    {"tls", kEvery, Always},
    {"tls_ca", kEvery, Always},
    {"tls_cert", kEvery, Always},
    {"tls_key", kEvery, Always},
    {"tls_server_name", kEvery, Always},
    {"paths", kBench, Bench},
    {"protocols", kBench, Bench},
    {"http_target", "bench with --protocols naming rest or rest_binary", RestBench},
    {"echo_target", kBench, Bench},
    {"batch", kBench, Bench},
    {"rows", kBench, Bench},
    {"mode", kBench, Bench},
    {"concurrency", kClosed, ClosedBench},
    {"rate", kOpen, OpenBench},
    {"arrival", kOpen, OpenBench},
    {"warmup_seconds", kBench, Bench},
    {"window_seconds", kBench, Bench},
    {"stable_windows", kBench, Bench},
    {"max_windows", kBench, Bench},
    {"stability", kBench, Bench},
    {"max_requests", kBench, Bench},
    {"max_outstanding", kOpen, OpenBench},
    {"priority", kBench, Bench},
    {"plot", kBench, Bench},
    {"quiet", kPredictOrBench, PredictOrBench},
    {"allow_remote", kBench, Bench},
};

}  // namespace

std::string CliRun::Describe() const {
  std::string out = command;
  if (command == "bench") {
    absl::StrAppend(&out, open_loop ? " --mode=open" : " --mode=closed");
    if (rest) absl::StrAppend(&out, " over REST");
  }
  if (command == "predict" && both) absl::StrAppend(&out, " --both");
  if (command == "predict" && dense && !both) absl::StrAppend(&out, " --dense");
  return absl::StrCat("'", out, "'");
}

absl::StatusOr<CliRun> CliRunOf(const CliChoice& choice) {
  CliRun run{.command = choice.command, .dense = choice.dense, .both = choice.both};
  if (run.command != "bench") return run;
  if (choice.mode != "closed" && choice.mode != "open") {
    return absl::InvalidArgumentError(
        absl::StrCat("--mode: expected closed or open, got '", choice.mode, "'"));
  }
  run.open_loop = choice.mode == "open";
  for (absl::string_view p : absl::StrSplit(choice.protocols, ',', absl::SkipWhitespace())) {
    if (absl::StartsWith(absl::StripAsciiWhitespace(p), "rest")) run.rest = true;
  }
  return run;
}

absl::Span<const FlagRule<CliRun>> SparseCliFlagRules() { return kRules; }

absl::Status CheckCliFlagsApply(const CliRun& run,
                                absl::FunctionRef<bool(absl::string_view)> is_set) {
  return CheckFlagsApply(SparseCliFlagRules(), run, run.Describe(), is_set);
}

absl::Status CheckCliRulesCover(const std::vector<std::string>& defined) {
  return CheckRulesCover(SparseCliFlagRules(), defined, "sparse-cli", "client/cli_flag_rules.cc");
}

}  // namespace sparse
