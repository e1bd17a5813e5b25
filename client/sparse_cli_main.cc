// sparse-cli: talks to sparse-server.
//
//   sparse-cli predict --model=poly_dsm --inputs="0.1,0.2,...;..." [--both]
//   sparse-cli predict --model=poly_dsm --csv=rows.csv        (or --csv=- for stdin)
//                      [--output=preds.csv|preds.npy] [--model_version=N]
//   sparse-cli models
//   sparse-cli health [--model=poly_dsm]
//   sparse-cli bench --model=poly_dsm --concurrency=1,4,16 --plot=poly_dsm.svg
//   sparse-cli bench --model=poly_dsm --mode=open --rate=500,1000,2000
//
// Human-readable output by default; --json prints JSON for scripts. Exit
// status: 0 on success, 1 on an error (the server's code and message are
// printed), 2 on bad usage (a flag set where it would be ignored among
// them: client/cli_flag_rules.h); `health` exits 1 unless SERVING.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <thread>
#include <cmath>
#include <type_traits>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/strings/ascii.h"
#include "absl/synchronization/mutex.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/batched_predict.h"
#include "client/bench_command.h"
#include "client/cli_flag_rules.h"
#include "client/client.h"
#include "common/command_line.h"
#include "common/flag_rules.h"
#include "common/version.h"
#include "common/status_macros.h"  // header-only macros
#include "google/protobuf/util/json_util.h"

ABSL_FLAG(std::string, target, "localhost:8500", "sparse-server address, host:port.");
ABSL_FLAG(std::string, model, "", "Model name (predict, bench; health: that model's readiness).");
ABSL_FLAG(double, wait_seconds, 0,
          "health: ask again every 0.2 s until SERVING (or the server answers at all) for up to this "
          "long, as a script waits for a server it just started.");
ABSL_FLAG(int64_t, model_version, 0,
          "predict, bench: model version (0 = the newest the server has).");
ABSL_FLAG(std::string, inputs, "",
          "predict: input rows, values separated by ',' and rows by ';' (e.g. \"0.1,0.2;0.3,0.4\").");
ABSL_FLAG(std::string, csv, "",
          "predict: a CSV file of input rows (optional header), or '-' for stdin; bench: write "
          "the results as CSV here.");
ABSL_FLAG(std::string, output, "",
          "predict: write the predictions to this file instead of printing them: .csv (a header, "
          "then one row per input row) or .npy (a float32 array rows x outputs).");
ABSL_FLAG(int64_t, max_rows, 0,
          "predict: rows per request (0 = the server's limit, --max_batch_rows, from GetModel); "
          "any number of input rows is sent in requests of at most this many, in order.");
ABSL_FLAG(bool, dense, false, "predict: use the dense baseline endpoint (PredictDense).");
ABSL_FLAG(bool, both, false, "predict: call both endpoints and print them side by side.");
ABSL_FLAG(bool, route, true, "predict: ask for and print the route (buckets / experts).");
ABSL_FLAG(bool, json, false, "Print JSON instead of text (bench: every level, path and window).");
ABSL_FLAG(int64_t, timeout_ms, 30000, "Deadline of each call.");
ABSL_FLAG(bool, tls, false,
          "Talk TLS to --target (implied by any other --tls_ flag); the system's roots verify "
          "the server unless --tls_ca is given.");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA certificates that verify the server's certificate.");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate, for servers that require mutual TLS.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_server_name, "",
          "Name to check the server's certificate against, when it differs from --target's host.");
ABSL_FLAG(std::string, paths, "sparse,dense",
          "bench: paths to drive, alternating at every load level: sparse (Predict), dense "
          "(PredictDense), echo (this server without a model), bare_echo (--echo_target).");
ABSL_FLAG(std::string, protocols, "native",
          "bench: protocols the sparse and dense paths are driven over, in one run: native "
          "(sparse.v1 Predict), oip (Open Inference Protocol ModelInfer on gRPC, raw tensors), "
          "rest (KServe v2 JSON on --http_target), rest_binary (REST with Triton's binary "
          "tensors). Paths other than native are named like sparse@oip.");
ABSL_FLAG(std::string, http_target, "",
          "bench: sparse-server's REST port (--http_port) as host:port, for --protocols=rest,"
          "rest_binary.");
ABSL_FLAG(std::string, echo_target, "",
          "bench: also measure a bare gRPC echo server at host:port (build/bench/echo_server), "
          "the transport floor (adds bare_echo to --paths).");
ABSL_FLAG(int64_t, batch, 1,
          "bench: rows per request (random inputs in [-1, 1], or the next rows of --rows).");
ABSL_FLAG(std::string, rows, "",
          "bench: send these input rows instead of random ones: a .npy file (float32 or float64, "
          "rows x inputs) or a CSV file (optional header), in order, --batch rows per request, "
          "cycling through the file.");
ABSL_FLAG(std::string, mode, "closed",
          "bench: closed (--concurrency requests in flight, each completion sends the next) or "
          "open (requests due at --rate whether or not earlier ones came back; latency counts "
          "from each request's intended send time, so a stalled server shows).");
ABSL_FLAG(std::string, concurrency, "1",
          "bench, closed loop: requests in flight; a comma-separated list sweeps, e.g. "
          "1,2,4,8,16,32,64.");
ABSL_FLAG(std::string, rate, "",
          "bench, open loop: offered requests per second; a list sweeps, e.g. 1000,5000,10000.");
ABSL_FLAG(std::string, arrival, "constant",
          "bench, open loop: constant gaps or poisson (exponential gaps, the same mean rate).");
ABSL_FLAG(double, warmup_seconds, 1, "bench: load before measuring, at every level and path.");
ABSL_FLAG(double, window_seconds, 1, "bench: length of one measurement window.");
ABSL_FLAG(int, stable_windows, 3,
          "bench: a level ends when this many consecutive windows agree on throughput within "
          "--stability; they are what is reported.");
ABSL_FLAG(int, max_windows, 10,
          "bench: a level ends after this many windows even if not stable (reported as such).");
ABSL_FLAG(double, stability, 0.10, "bench: tolerance, as a fraction of the mean throughput.");
ABSL_FLAG(int64_t, max_requests, 1000000, "bench: at most this many requests per level and path.");
ABSL_FLAG(int64_t, max_outstanding, 4096,
          "bench, open loop: at most this many requests in flight; when reached, sending waits "
          "(and the wait counts in latency).");
ABSL_FLAG(uint32_t, priority, 0,
          "bench: the priority level every request asks for (1 is the highest; 0 the model's "
          "default), on every protocol: the native API's PredictRequest.priority, OIP's "
          "`priority` parameter. A model without priority_levels ignores it.");
ABSL_FLAG(std::string, plot, "", "bench: write an SVG plot of latency (p50, p99) vs throughput here.");
ABSL_FLAG(bool, quiet, false,
          "bench, predict: no progress line on stderr (predict shows one only on a terminal, "
          "after a second).");
ABSL_FLAG(bool, allow_remote, false,
          "bench: allow driving load at a target that is not on this machine (loopback only by "
          "default).");

namespace sparse {
namespace {

using sparse::v1::PredictResponse;

std::string ToJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, options);
  return out;
}

absl::Status Usage(absl::string_view message) {
  return absl::InvalidArgumentError(message);
}

absl::StatusOr<std::vector<std::vector<float>>> ReadInputs() {
  const std::string inputs = absl::GetFlag(FLAGS_inputs), csv = absl::GetFlag(FLAGS_csv);
  if (!inputs.empty() && !csv.empty()) return Usage("give --inputs or --csv, not both");
  if (!inputs.empty()) return ParseRows(inputs, ';', "--inputs");
  if (csv.empty()) return Usage("predict needs --inputs=\"v,v,...;v,v,...\" or --csv=file (or - for stdin)");
  std::string text;
  if (csv == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), {});
  } else {
    std::ifstream in(csv);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", csv));
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  return ParseRows(text, '\n', csv == "-" ? "stdin" : csv);
}

std::string Micros(int64_t ns) { return absl::StrFormat("%.1f", ns / 1000.0); }

void PrintCost(const char* label, const PredictResponse& r, int64_t round_trip_ns) {
  const auto& c = r.cost();
  std::printf("  %-7s FLOPs %lld (%lld per row), dense baseline %lld; weights read %s; server %s us "
              "(queue %s, route %s, compute %s), round trip %s us\n",
              label, static_cast<long long>(c.flops()),
              static_cast<long long>(r.rows() ? c.flops() / r.rows() : 0),
              static_cast<long long>(c.dense_flops()), HumanBytes(c.weight_bytes()).c_str(),
              Micros(c.total_ns()).c_str(),
              Micros(c.queue_ns()).c_str(), Micros(c.route_ns()).c_str(),
              Micros(c.compute_ns()).c_str(), Micros(round_trip_ns).c_str());
  if (c.shards() > 0) {
    // A sharded model: FLOPs, bytes and compute above include the shards'.
    std::printf("  %-7s sharded: %d shard(s) called, fan-out %s us\n", "", c.shards(),
                Micros(c.fanout_ns()).c_str());
  }
}

std::string RowRoute(const PredictResponse& r, int64_t row) {
  const auto& route = r.route();
  std::vector<std::string> parts;
  for (int64_t i = 0; i < route.keys_per_row(); ++i) {
    const int64_t k = row * route.keys_per_row() + i;
    parts.push_back(absl::StrCat(route.bucket_keys(k), route.bucket_missed(k) ? "(miss)" : ""));
  }
  if (!parts.empty()) return absl::StrCat("buckets ", absl::StrJoin(parts, " "));
  for (int64_t i = 0; i < route.experts_per_row(); ++i) {
    parts.push_back(absl::StrCat(route.expert_ids(row * route.experts_per_row() + i)));
  }
  return parts.empty() ? "" : absl::StrCat("expert ", absl::StrJoin(parts, " "));
}

// A progress line on stderr for a long predict: only on a terminal, and
// only once a run has taken a second (scripts and short runs see nothing).
class ProgressLine {
 public:
  ProgressLine() : shown_(false), on_(!absl::GetFlag(FLAGS_quiet) && ::isatty(2) == 1) {}
  ~ProgressLine() {
    if (shown_) std::fprintf(stderr, "\n");
  }
  // Redrawn at most every 100 ms, and at the end.
  void Update(const char* label, int64_t done, int64_t total) {
    const auto now = std::chrono::steady_clock::now();
    if (!on_ || now - start_ < std::chrono::seconds(1)) return;
    if (done < total && now - drawn_ < std::chrono::milliseconds(100)) return;
    drawn_ = now;
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(kWidth * done / std::max<int64_t>(total, 1));
    std::fprintf(stderr, "\rsparse-cli: %-6s [%s%s] %lld/%lld rows", label,
                 std::string(filled, '#').c_str(), std::string(kWidth - filled, '.').c_str(),
                 static_cast<long long>(done), static_cast<long long>(total));
    std::fflush(stderr);
    shown_ = true;
  }

 private:
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point drawn_;
  bool shown_;
  const bool on_;
};

using PathCalls = std::vector<std::pair<const char*, SparseClient::Call>>;

// The sparse and/or dense path over every input row, split into requests
// of at most the server's row limit.
absl::StatusOr<PathCalls> PredictPaths(SparseClient& client, const std::string& model, int64_t n,
                                       const std::vector<float>& flat) {
  const bool both = absl::GetFlag(FLAGS_both), dense_only = absl::GetFlag(FLAGS_dense);
  PathCalls calls;
  ProgressLine progress;
  for (const bool dense : {false, true}) {
    if (dense ? !(both || dense_only) : !(both || !dense_only)) continue;
    const char* label = dense ? "dense" : "sparse";
    BatchedPredictOptions options{
        .version = absl::GetFlag(FLAGS_model_version),
        .dense = dense,
        .route = !dense && absl::GetFlag(FLAGS_route),
        .max_rows = absl::GetFlag(FLAGS_max_rows),
        .progress = [&progress, label](int64_t done, int64_t total) {
          progress.Update(label, done, total);
        }};
    ASSIGN_OR_RETURN(auto call, PredictBatched(client, model, n, flat, options));
    calls.emplace_back(label, std::move(call));
  }
  return calls;
}

void PrintPredictions(const PathCalls& calls, int64_t n, bool route) {
  const PredictResponse& first = calls.front().second.response;
  std::printf("  %-5s", "row");
  for (const auto& [label, call] : calls) std::printf(" %-24s", label);
  std::printf("\n");
  const int64_t o = first.output_dim();
  for (int64_t r = 0; r < n; ++r) {
    std::printf("  %-5lld", static_cast<long long>(r));
    for (const auto& [label, call] : calls) {
      std::vector<std::string> values;
      for (int64_t j = 0; j < o; ++j) values.push_back(absl::StrFormat("%.6g", call.response.outputs(r * o + j)));
      std::printf(" %-24s", absl::StrJoin(values, ",").c_str());
    }
    const std::string rr = calls.front().first == std::string("sparse") && route
                               ? RowRoute(calls.front().second.response, r) : "";
    std::printf("%s\n", rr.empty() ? "" : absl::StrCat(" ", rr).c_str());
  }
}

absl::Status Predict(SparseClient& client) {
  const std::string model = absl::GetFlag(FLAGS_model);
  if (model.empty()) return Usage("predict needs --model");
  if (absl::GetFlag(FLAGS_max_rows) < 0) {
    return Usage(absl::StrCat("--max_rows: expected rows per request >= 1 (0 = the server's "
                              "limit), got ", absl::GetFlag(FLAGS_max_rows)));
  }
  ASSIGN_OR_RETURN(std::vector<std::vector<float>> rows, ReadInputs());
  std::vector<float> flat;
  for (const auto& row : rows) flat.insert(flat.end(), row.begin(), row.end());
  const int64_t n = static_cast<int64_t>(rows.size());
  ASSIGN_OR_RETURN(const PathCalls calls, PredictPaths(client, model, n, flat));
  const PredictResponse& first = calls.front().second.response;
  const std::string output = absl::GetFlag(FLAGS_output);
  if (!output.empty()) {
    std::vector<std::pair<std::string, std::vector<float>>> paths;
    for (const auto& [label, call] : calls) {
      paths.emplace_back(label, std::vector<float>(call.response.outputs().begin(),
                                                   call.response.outputs().end()));
    }
    RETURN_IF_ERROR(WritePredictions(output, n, first.output_dim(), paths));
  }
  if (absl::GetFlag(FLAGS_json)) {
    std::vector<std::string> parts;
    for (const auto& [label, call] : calls) {
      parts.push_back(absl::StrCat("\"", label, "\":", ToJson(call.response),
                                   ",\"", label, "_round_trip_ns\":", call.round_trip_ns));
    }
    std::printf("{%s}\n", absl::StrJoin(parts, ",").c_str());
    return absl::OkStatus();
  }
  std::printf("model %s version %lld: %lld row(s) x %lld output(s)%s\n", first.model().c_str(),
              static_cast<long long>(first.version()), static_cast<long long>(n),
              static_cast<long long>(first.output_dim()),
              calls.size() == 2 && calls[1].second.response.dense_cost_only()
                  ? " (dense endpoint is a cost-only baseline: no trained twin)"
                  : "");
  if (output.empty()) {
    PrintPredictions(calls, n, absl::GetFlag(FLAGS_route));
  } else {
    std::printf("  predictions written to %s\n", output.c_str());
  }
  for (const auto& [label, call] : calls) PrintCost(label, call.response, call.round_trip_ns);
  return absl::OkStatus();
}

// What did not load, and why (the server's log says the same): versions
// that failed, config.pbtxt errors, model folders that serve nothing.
void PrintNotServing(const sparse::v1::ListModelsResponse& list) {
  std::vector<std::string> lines;
  for (const auto& m : list.models()) {
    for (const auto& f : m.failed_versions()) {
      lines.push_back(absl::StrCat(m.name(), " version ", f.version(), ": failed to load: ", f.error()));
    }
    if (!m.config_error().empty()) {
      lines.push_back(absl::StrCat(m.name(), ": ", m.config_error(),
                                   m.versions().empty() ? "" : " (the previous config stays)"));
    }
    if (!m.not_served().empty()) lines.push_back(absl::StrCat(m.name(), ": ", m.not_served()));
  }
  if (lines.empty()) return;
  std::printf("not serving:\n");
  for (const std::string& line : lines) std::printf("  %s\n", line.c_str());
}

absl::Status Models(SparseClient& client) {
  ASSIGN_OR_RETURN(sparse::v1::ListModelsResponse list, client.ListModels());
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", ToJson(list).c_str());
    return absl::OkStatus();
  }
  std::printf("%-16s %-8s %-10s %-8s %-14s %-14s %-5s %-11s %-11s %-11s %s\n", "model", "version",
              "kind", "d->o", "FLOPs/row", "dense FLOPs", "prec", "bytes/row", "resident",
              "test MSE", "description");
  for (const auto& m : list.models()) {
    for (const auto& v : m.versions()) {
      // The test MSE at the precision it serves, when its writer recorded it.
      auto mse_it = v.info().find(absl::StrCat("test_mse_", absl::AsciiStrToLower(v.precision())));
      if (v.precision() == "FP32" || mse_it == v.info().end()) mse_it = v.info().find("test_mse");
      double mse_value = 0;
      const std::string mse = mse_it != v.info().end() && absl::SimpleAtod(mse_it->second, &mse_value)
                                  ? absl::StrFormat("%.3e", mse_value)
                                  : "-";
      std::printf("%-16s %-8s %-10s %-8s %-14lld %-14s %-5s %-11s %-11s %-11s %s\n",
                  m.name().c_str(),
                  absl::StrCat(v.version(), v.version() == m.serving_version() ? "*" : "").c_str(),
                  v.kind().c_str(), absl::StrCat(v.input_dim(), "->", v.output_dim()).c_str(),
                  static_cast<long long>(v.flops_per_row()),
                  v.has_dense() ? absl::StrCat(v.dense_flops_per_row(), v.dense_cost_only() ? " (cost)" : "").c_str()
                                : "none",
                  v.precision().c_str(), HumanBytes(v.weight_bytes_per_row()).c_str(),
                  HumanBytes(v.resident_bytes()).c_str(), mse.c_str(), v.description().c_str());
      // Weights served from the weight cache file: how much of the mapping
      // is in memory now (the resident column counts process memory only).
      if (v.mapped_bytes() > 0) {
        std::string experts;
        if (v.expert_bytes() > 0 && v.expert_resident_bytes_size() > 0) {
          int64_t whole = 0;
          for (int64_t b : v.expert_resident_bytes()) whole += b >= v.expert_bytes() ? 1 : 0;
          experts = absl::StrCat(", ", whole, " of ", v.expert_resident_bytes_size(),
                                 " expert slices wholly in memory");
        }
        std::printf("%-16s %-8s %s mapped, %lld%% in memory%s (weight_verify=%s)\n", "", "",
                    HumanBytes(v.mapped_bytes()).c_str(),
                    static_cast<long long>(100 * v.mapped_resident_bytes() / v.mapped_bytes()),
                    experts.c_str(), v.weight_verify().c_str());
      }
    }
  }
  std::printf("(* = the version that serves by default)\n");
  PrintNotServing(list);
  return absl::OkStatus();
}

ClientTls TlsFromFlags();

absl::Status Health(SparseClient& client, bool* serving) {
  const std::string model = absl::GetFlag(FLAGS_model);
  const double wait = absl::GetFlag(FLAGS_wait_seconds);
  if (!(wait >= 0 && wait <= 86400)) {
    return absl::InvalidArgumentError(absl::StrCat("--wait_seconds must be in [0, 86400], got ", wait));
  }
  const absl::Time until = absl::Now() + absl::Seconds(wait);
  auto status = client.Health(model);
  // A channel refused once waits out gRPC's reconnect backoff (seconds),
  // so each try after a failed one gets a channel of its own.
  std::unique_ptr<SparseClient> fresh;
  while (!(status.ok() && *status == grpc::health::v1::HealthCheckResponse::SERVING) &&
         absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(200));
    if (!status.ok()) {
      ASSIGN_OR_RETURN(fresh, SparseClient::Create(absl::GetFlag(FLAGS_target),
                                                   std::chrono::milliseconds(absl::GetFlag(FLAGS_timeout_ms)),
                                                   TlsFromFlags()));
    }
    status = (fresh != nullptr ? *fresh : client).Health(model);
  }
  RETURN_IF_ERROR(status.status());
  *serving = *status == grpc::health::v1::HealthCheckResponse::SERVING;
  const std::string name = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(*status);
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("{\"service\":\"%s\",\"status\":\"%s\"}\n", model.c_str(), name.c_str());
  } else {
    std::printf("%s: %s\n", model.empty() ? "server" : model.c_str(), name.c_str());
  }
  return absl::OkStatus();
}

// Splits a comma-separated flag into numbers in (0, max] (whole numbers
// when T is an integer type), all checked before any level runs.
template <typename T>
absl::StatusOr<std::vector<T>> Levels(const std::string& flag, const std::string& text, double max) {
  std::vector<T> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    double v = 0;
    if (!absl::SimpleAtod(absl::StripAsciiWhitespace(part), &v) || !(v > 0 && v <= max) ||
        (std::is_integral_v<T> && v != std::floor(v))) {
      return Usage(absl::StrCat("--", flag, ": expected ",
                                std::is_integral_v<T> ? "whole numbers" : "numbers", " in (0, ", max,
                                "] separated by commas, got '", part, "'"));
    }
    out.push_back(static_cast<T>(v));
  }
  return out;
}

ClientTls TlsFromFlags() {
  return ClientTls{.enabled = absl::GetFlag(FLAGS_tls),
                   .ca_file = absl::GetFlag(FLAGS_tls_ca),
                   .cert_file = absl::GetFlag(FLAGS_tls_cert),
                   .key_file = absl::GetFlag(FLAGS_tls_key),
                   .server_name = absl::GetFlag(FLAGS_tls_server_name)};
}

absl::Status Bench() {
  BenchOptions o;
  o.tls = TlsFromFlags();
  o.target = absl::GetFlag(FLAGS_target);
  o.echo_target = absl::GetFlag(FLAGS_echo_target);
  o.allow_remote = absl::GetFlag(FLAGS_allow_remote);
  o.model = absl::GetFlag(FLAGS_model);
  o.version = absl::GetFlag(FLAGS_model_version);
  o.paths = absl::StrSplit(absl::GetFlag(FLAGS_paths), ',', absl::SkipWhitespace());
  o.protocols = absl::StrSplit(absl::GetFlag(FLAGS_protocols), ',', absl::SkipWhitespace());
  o.http_target = absl::GetFlag(FLAGS_http_target);
  if (!o.echo_target.empty() && std::find(o.paths.begin(), o.paths.end(), "bare_echo") == o.paths.end()) {
    o.paths.push_back("bare_echo");
  }
  o.batch = absl::GetFlag(FLAGS_batch);
  o.rows_path = absl::GetFlag(FLAGS_rows);
  // --mode is closed or open: CheckFlags (CliRunOf) has refused any other.
  const std::string mode = absl::GetFlag(FLAGS_mode), arrival = absl::GetFlag(FLAGS_arrival);
  if (arrival != "constant" && arrival != "poisson") {
    return Usage("--arrival: expected constant or poisson, got '" + arrival + "'");
  }
  o.mode = mode == "closed" ? Load::Mode::kClosed : Load::Mode::kOpen;
  o.poisson = arrival == "poisson";
  if (o.mode == Load::Mode::kClosed) {
    ASSIGN_OR_RETURN(o.concurrency, Levels<int>("concurrency", absl::GetFlag(FLAGS_concurrency), 4096));
  } else {
    ASSIGN_OR_RETURN(o.rates, Levels<double>("rate", absl::GetFlag(FLAGS_rate), 1e7));
  }
  o.schedule.warmup_seconds = absl::GetFlag(FLAGS_warmup_seconds);
  o.schedule.window_seconds = absl::GetFlag(FLAGS_window_seconds);
  o.schedule.stable_windows = absl::GetFlag(FLAGS_stable_windows);
  o.schedule.max_windows = absl::GetFlag(FLAGS_max_windows);
  o.schedule.stability = absl::GetFlag(FLAGS_stability);
  o.schedule.max_requests = absl::GetFlag(FLAGS_max_requests);
  o.schedule.max_outstanding = absl::GetFlag(FLAGS_max_outstanding);
  o.priority = absl::GetFlag(FLAGS_priority);
  o.timeout = std::chrono::milliseconds(absl::GetFlag(FLAGS_timeout_ms));
  o.csv_path = absl::GetFlag(FLAGS_csv);
  o.plot_path = absl::GetFlag(FLAGS_plot);
  o.json = absl::GetFlag(FLAGS_json);
  o.progress = !absl::GetFlag(FLAGS_quiet);
  return RunBench(o);
}

// Every rule in place, and every flag the user set applies to this run
// (client/cli_flag_rules.h); else what to drop, as a usage error.
absl::Status CheckFlags(const std::string& command) {
  RETURN_IF_ERROR(CheckCliRulesCover(FlagsDefinedIn("sparse_cli_main.")));
  ASSIGN_OR_RETURN(const CliRun run, CliRunOf({.command = command,
                                               .mode = absl::GetFlag(FLAGS_mode),
                                               .protocols = absl::GetFlag(FLAGS_protocols),
                                               .dense = absl::GetFlag(FLAGS_dense),
                                               .both = absl::GetFlag(FLAGS_both)}));
  return CheckCliFlagsApply(run, FlagSetOnCommandLine);
}

}  // namespace
}  // namespace sparse

int main(int argc, char** argv) {
  const std::vector<std::string> args = sparse::ParseCommandLine(
      argc, argv,
      "talks to sparse-server.\n\n"
      "  sparse-cli predict --model=M --inputs=\"v,v,...;v,v,...\" [--both|--dense] [--json]\n"
      "  sparse-cli predict --model=M --csv=rows.csv [--output=preds.csv|preds.npy]\n"
      "                     (--csv=- reads stdin; any number of rows, sent in requests of at\n"
      "                     most the server's --max_batch_rows; --model_version=N picks a version)\n"
      "  sparse-cli models [--json]\n"
      "  sparse-cli health [--model=M] [--wait_seconds=S]  (exit 0 only when SERVING)\n"
      "  sparse-cli bench --model=M [--concurrency=1,4,16] [--batch=1] [--paths=sparse,dense]\n"
      "                   [--rows=F.npy|F.csv] [--echo_target=host:port] [--csv=F] [--plot=F.svg]\n"
      "                   [--json]\n"
      "  sparse-cli bench --model=M --mode=open --rate=1000,5000 [--arrival=poisson]\n\n"
      "--target says where the server is (default localhost:8500); --tls_ca, --tls_cert and\n"
      "--tls_key reach a server with TLS or mutual TLS on.",
      "sparse_cli_main.", sparse::VersionText());
  if (args.size() != 1) {
    std::fprintf(stderr, "sparse-cli: expected one command (predict, models, health, bench); see --help\n");
    return 2;
  }
  const std::string& command = args[0];
  if (command != "predict" && command != "models" && command != "health" && command != "bench") {
    std::fprintf(stderr, "sparse-cli: unknown command '%s' (predict, models, health, bench)\n",
                 command.c_str());
    return 2;
  }
  if (const absl::Status flags = sparse::CheckFlags(command); !flags.ok()) {
    std::fprintf(stderr, "sparse-cli: error: %s\n", std::string(flags.message()).c_str());
    return flags.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  absl::StatusOr<std::unique_ptr<sparse::SparseClient>> client = sparse::SparseClient::Create(
      absl::GetFlag(FLAGS_target), std::chrono::milliseconds(absl::GetFlag(FLAGS_timeout_ms)),
      sparse::TlsFromFlags());
  absl::Status status = client.status();
  bool serving = true;
  if (!status.ok()) {
    // reported below
  } else if (command == "predict") {
    status = sparse::Predict(**client);
  } else if (command == "models") {
    status = sparse::Models(**client);
  } else if (command == "health") {
    status = sparse::Health(**client, &serving);
  } else {
    status = sparse::Bench();
  }
  if (!status.ok()) {
    std::fprintf(stderr, "sparse-cli: %s: %s\n", absl::StatusCodeToString(status.code()).c_str(),
                 std::string(status.message()).c_str());
    return status.code() == absl::StatusCode::kInvalidArgument &&
                   absl::StrContains(status.message(), "--") ? 2 : 1;
  }
  return serving ? 0 : 1;
}
