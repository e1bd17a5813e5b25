// sparse-cli: talks to sparse-server.
//
//   sparse-cli predict --model=poly_dsm --inputs="0.1,0.2,...;..." [--both]
//   sparse-cli predict --model=poly_dsm --csv=rows.csv        (or --csv=- for stdin)
//   sparse-cli models
//   sparse-cli health [--model=poly_dsm]
//   sparse-cli bench --model=poly_dsm --requests=300
//
// Human-readable output by default; --json prints JSON for scripts. Exit
// status: 0 on success, 1 on an error (the server's code and message are
// printed), 2 on bad usage; `health` exits 1 unless SERVING.
#include <algorithm>
#include <atomic>
#include <functional>
#include <thread>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/synchronization/mutex.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/client.h"
#include "common/command_line.h"
#include "engine/status_macros.h"  // header-only macros
#include "google/protobuf/util/json_util.h"

ABSL_FLAG(std::string, target, "localhost:8500", "sparse-server address, host:port.");
ABSL_FLAG(std::string, model, "", "Model name (predict, bench; health: that model's readiness).");
ABSL_FLAG(int64_t, version, 0, "Model version (0 = the newest the server has).");
ABSL_FLAG(std::string, inputs, "",
          "predict: input rows, values separated by ',' and rows by ';' (e.g. \"0.1,0.2;0.3,0.4\").");
ABSL_FLAG(std::string, csv, "",
          "predict: a CSV file of input rows (optional header), or '-' for stdin.");
ABSL_FLAG(bool, dense, false, "predict: use the dense baseline endpoint (PredictDense).");
ABSL_FLAG(bool, both, false, "predict: call both endpoints and print them side by side.");
ABSL_FLAG(bool, route, true, "predict: ask for and print the route (buckets / experts).");
ABSL_FLAG(bool, json, false, "Print JSON instead of text.");
ABSL_FLAG(int64_t, requests, 300, "bench: requests per endpoint (after 20 warm-up requests).");
ABSL_FLAG(int64_t, batch, 1, "bench: rows per request (random inputs in [-1, 1]).");
ABSL_FLAG(int64_t, timeout_ms, 30000, "Deadline of each call.");
ABSL_FLAG(int, concurrency, 1, "bench: requests kept in flight (closed loop, one caller thread each).");
ABSL_FLAG(std::string, echo_target, "",
          "bench: also measure a bare gRPC echo server at host:port (build/bench/echo_server).");

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

// Rows of numbers from "a,b;c,d" or CSV text (one row per line).
absl::StatusOr<std::vector<std::vector<float>>> ParseRows(const std::string& text, char row_sep,
                                                          absl::string_view source) {
  std::vector<std::vector<float>> rows;
  int64_t line = 0;
  for (absl::string_view row : absl::StrSplit(text, row_sep)) {
    ++line;
    row = absl::StripAsciiWhitespace(row);
    if (row.empty()) continue;
    std::vector<float> values;
    bool numeric = true;
    for (absl::string_view field : absl::StrSplit(row, ',')) {
      float v = 0;
      if (!absl::SimpleAtof(absl::StripAsciiWhitespace(field), &v)) {
        numeric = false;
        break;
      }
      values.push_back(v);
    }
    if (!numeric) {
      if (rows.empty() && row_sep == '\n') continue;  // a CSV header
      return absl::InvalidArgumentError(
          absl::StrCat(source, " row ", line, ": expected numbers, got '", row, "'"));
    }
    if (!rows.empty() && values.size() != rows.front().size()) {
      return absl::InvalidArgumentError(absl::StrCat(source, " row ", line, ": expected ",
                                                     rows.front().size(), " values, got ",
                                                     values.size()));
    }
    rows.push_back(std::move(values));
  }
  if (rows.empty()) return absl::InvalidArgumentError(absl::StrCat(source, ": no input rows"));
  return rows;
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
  std::printf("  %-7s FLOPs %lld (%lld per row), dense baseline %lld; server %s us "
              "(queue %s, route %s, compute %s), round trip %s us\n",
              label, static_cast<long long>(c.flops()),
              static_cast<long long>(r.rows() ? c.flops() / r.rows() : 0),
              static_cast<long long>(c.dense_flops()), Micros(c.total_ns()).c_str(),
              Micros(c.queue_ns()).c_str(), Micros(c.route_ns()).c_str(),
              Micros(c.compute_ns()).c_str(), Micros(round_trip_ns).c_str());
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

absl::Status Predict(SparseClient& client) {
  const std::string model = absl::GetFlag(FLAGS_model);
  if (model.empty()) return Usage("predict needs --model");
  ASSIGN_OR_RETURN(std::vector<std::vector<float>> rows, ReadInputs());
  std::vector<float> flat;
  for (const auto& row : rows) flat.insert(flat.end(), row.begin(), row.end());
  const int64_t n = static_cast<int64_t>(rows.size());
  const bool both = absl::GetFlag(FLAGS_both), dense_only = absl::GetFlag(FLAGS_dense);
  const bool route = absl::GetFlag(FLAGS_route);
  std::vector<std::pair<const char*, SparseClient::Call>> calls;
  if (both || !dense_only) {
    ASSIGN_OR_RETURN(auto call, client.Predict(model, absl::GetFlag(FLAGS_version), n, flat, false, route));
    calls.emplace_back("sparse", std::move(call));
  }
  if (both || dense_only) {
    ASSIGN_OR_RETURN(auto call, client.Predict(model, absl::GetFlag(FLAGS_version), n, flat, true, false));
    calls.emplace_back("dense", std::move(call));
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
  const PredictResponse& first = calls.front().second.response;
  std::printf("model %s version %lld: %lld row(s) x %lld output(s)%s\n", first.model().c_str(),
              static_cast<long long>(first.version()), static_cast<long long>(n),
              static_cast<long long>(first.output_dim()),
              calls.size() == 2 && calls[1].second.response.dense_cost_only()
                  ? " (dense endpoint is a cost-only baseline: no trained twin)"
                  : "");
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
  for (const auto& [label, call] : calls) PrintCost(label, call.response, call.round_trip_ns);
  return absl::OkStatus();
}

absl::Status Models(SparseClient& client) {
  ASSIGN_OR_RETURN(sparse::v1::ListModelsResponse list, client.ListModels());
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", ToJson(list).c_str());
    return absl::OkStatus();
  }
  std::printf("%-16s %-8s %-10s %-8s %-14s %-14s %-11s %s\n", "model", "version", "kind", "d->o",
              "FLOPs/row", "dense FLOPs", "test MSE", "description");
  for (const auto& m : list.models()) {
    for (const auto& v : m.versions()) {
      const auto mse_it = v.info().find("test_mse");
      double mse_value = 0;
      const std::string mse = mse_it != v.info().end() && absl::SimpleAtod(mse_it->second, &mse_value)
                                  ? absl::StrFormat("%.3e", mse_value)
                                  : "-";
      std::printf("%-16s %-8s %-10s %-8s %-14lld %-14s %-11s %s\n", m.name().c_str(),
                  absl::StrCat(v.version(), v.version() == m.serving_version() ? "*" : "").c_str(),
                  v.kind().c_str(), absl::StrCat(v.input_dim(), "->", v.output_dim()).c_str(),
                  static_cast<long long>(v.flops_per_row()),
                  v.has_dense() ? absl::StrCat(v.dense_flops_per_row(), v.dense_cost_only() ? " (cost)" : "").c_str()
                                : "none",
                  mse.c_str(), v.description().c_str());
    }
  }
  std::printf("(* = the version that serves by default)\n");
  return absl::OkStatus();
}

absl::Status Health(SparseClient& client, bool* serving) {
  const std::string model = absl::GetFlag(FLAGS_model);
  ASSIGN_OR_RETURN(auto status, client.Health(model));
  *serving = status == grpc::health::v1::HealthCheckResponse::SERVING;
  const std::string name = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(status);
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("{\"service\":\"%s\",\"status\":\"%s\"}\n", model.c_str(), name.c_str());
  } else {
    std::printf("%s: %s\n", model.empty() ? "server" : model.c_str(), name.c_str());
  }
  return absl::OkStatus();
}

// Closed-loop comparison: `--concurrency` callers each keep one request in
// flight, first on the sparse endpoint, then the dense one, then Echo on
// this server (the serving path without a model) and, with --echo_target, a
// bare gRPC echo server (the transport floor). Open-loop load, sweeps and
// plots come with the rest of the load generator (issue 5).
struct Sample {
  int64_t round_trip_ns = 0, route_ns = 0, compute_ns = 0, flops = 0;
};

struct PathResult {
  std::string name;
  std::vector<int64_t> round_trip, route, compute;
  int64_t flops = 0, errors = 0;
  double seconds = 0;
  std::string first_error;
};

PathResult RunClosedLoop(const std::string& name, int64_t requests, int concurrency,
                         const std::function<absl::StatusOr<Sample>(int64_t)>& call) {
  PathResult result;
  result.name = name;
  std::atomic<int64_t> next{0};
  absl::Mutex mu;
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> callers;
  for (int c = 0; c < concurrency; ++c) {
    callers.emplace_back([&] {
      std::vector<Sample> mine;
      int64_t errors = 0;
      std::string error;
      for (int64_t i = next++; i < requests; i = next++) {
        absl::StatusOr<Sample> sample = call(i);
        if (sample.ok()) {
          mine.push_back(*sample);
        } else {
          ++errors;
          if (error.empty()) error = std::string(sample.status().message());
        }
      }
      absl::MutexLock lock(&mu);
      for (const Sample& s : mine) {
        result.round_trip.push_back(s.round_trip_ns);
        result.route.push_back(s.route_ns);
        result.compute.push_back(s.compute_ns);
        result.flops = s.flops;
      }
      result.errors += errors;
      if (result.first_error.empty()) result.first_error = error;
    });
  }
  for (std::thread& t : callers) t.join();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

double Percentile(std::vector<int64_t> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min<size_t>(v.size() - 1, static_cast<size_t>(p * v.size()))] / 1000.0;
}

absl::Status Bench(SparseClient& client) {
  const std::string model = absl::GetFlag(FLAGS_model);
  if (model.empty()) return Usage("bench needs --model");
  ASSIGN_OR_RETURN(sparse::v1::ModelStatus status, client.GetModel(model));
  const auto& version = status.versions(status.versions_size() - 1);
  const int64_t d = version.input_dim(), rows = absl::GetFlag(FLAGS_batch);
  const int64_t requests = absl::GetFlag(FLAGS_requests);
  const int concurrency = absl::GetFlag(FLAGS_concurrency);
  if (requests < 1 || rows < 1 || concurrency < 1 || concurrency > 1024) {
    return Usage("--requests and --batch must be >= 1 and --concurrency in [1, 1024]");
  }
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<std::vector<float>> pool(64);
  for (auto& x : pool) {
    x.resize(rows * d);
    for (float& v : x) v = u(rng);
  }
  // Echo carries as many bytes as a Predict request of this batch.
  const std::string payload(static_cast<size_t>(rows * d * sizeof(float)), 'x');
  auto predict = [&](bool dense) {
    return [&, dense](int64_t i) -> absl::StatusOr<Sample> {
      ASSIGN_OR_RETURN(auto call, client.Predict(model, 0, rows, pool[i % pool.size()], dense, false));
      const auto& cost = call.response.cost();
      return Sample{call.round_trip_ns, cost.route_ns(), cost.compute_ns(), cost.flops()};
    };
  };
  auto echo = [&payload](SparseClient& target) {
    return [&target, &payload](int64_t) -> absl::StatusOr<Sample> {
      ASSIGN_OR_RETURN(int64_t ns, target.Echo(payload));
      return Sample{ns, 0, 0, 0};
    };
  };
  // Warm up every worker and connection first.
  for (int warm = 0; warm < 20; ++warm) {
    for (bool dense : {false, true}) RETURN_IF_ERROR(predict(dense)(warm).status());
  }
  std::vector<PathResult> results;
  results.push_back(RunClosedLoop("sparse", requests, concurrency, predict(false)));
  results.push_back(RunClosedLoop("dense", requests, concurrency, predict(true)));
  results.push_back(RunClosedLoop("echo", requests, concurrency, echo(client)));
  std::unique_ptr<SparseClient> bare;
  const std::string echo_target = absl::GetFlag(FLAGS_echo_target);
  if (!echo_target.empty()) {
    bare = std::make_unique<SparseClient>(echo_target, std::chrono::milliseconds(absl::GetFlag(FLAGS_timeout_ms)));
    for (int warm = 0; warm < 20; ++warm) RETURN_IF_ERROR(bare->Echo(payload).status());
    results.push_back(RunClosedLoop("bare_echo", requests, concurrency, echo(*bare)));
  }
  for (const PathResult& r : results) {
    if (r.errors == requests) {
      return absl::UnavailableError(absl::StrCat(r.name, ": every request failed: ", r.first_error));
    }
  }
  if (absl::GetFlag(FLAGS_json)) {
    std::vector<std::string> parts;
    for (const PathResult& r : results) {
      parts.push_back(absl::StrFormat(
          "\"%s\":{\"requests\":%d,\"errors\":%d,\"throughput_rps\":%.1f,\"flops_per_request\":%d,"
          "\"p50_us\":%.2f,\"p90_us\":%.2f,\"p99_us\":%.2f,\"route_p50_us\":%.2f,"
          "\"compute_p50_us\":%.2f}",
          r.name, static_cast<int64_t>(r.round_trip.size()), r.errors,
          r.round_trip.size() / r.seconds, r.flops, Percentile(r.round_trip, 0.5),
          Percentile(r.round_trip, 0.9), Percentile(r.round_trip, 0.99), Percentile(r.route, 0.5),
          Percentile(r.compute, 0.5)));
    }
    std::printf("{\"model\":\"%s\",\"batch\":%lld,\"concurrency\":%d,%s}\n", model.c_str(),
                static_cast<long long>(rows), concurrency, absl::StrJoin(parts, ",").c_str());
    return absl::OkStatus();
  }
  std::printf("%s, batch %lld, %lld requests per path, %d in flight (closed loop)\n", model.c_str(),
              static_cast<long long>(rows), static_cast<long long>(requests), concurrency);
  std::printf("  %-9s %10s %14s %9s %9s %9s %9s %11s %7s\n", "path", "req/s", "FLOPs/request",
              "p50 us", "p90 us", "p99 us", "route us", "compute us", "errors");
  for (const PathResult& r : results) {
    std::printf("  %-9s %10.0f %14lld %9.1f %9.1f %9.1f %9.1f %11.1f %7lld\n", r.name.c_str(),
                r.round_trip.size() / r.seconds, static_cast<long long>(r.flops),
                Percentile(r.round_trip, 0.5), Percentile(r.round_trip, 0.9),
                Percentile(r.round_trip, 0.99), Percentile(r.route, 0.5),
                Percentile(r.compute, 0.5), static_cast<long long>(r.errors));
  }
  std::printf("  (echo: this server's path without a model%s)\n",
              bare ? "; bare_echo: a bare gRPC echo server, the transport floor" : "");
  return absl::OkStatus();
}

}  // namespace
}  // namespace sparse

int main(int argc, char** argv) {
  const std::vector<std::string> args = sparse::ParseCommandLine(
      argc, argv,
      "talks to sparse-server.\n\n"
      "  sparse-cli predict --model=M --inputs=\"v,v,...;v,v,...\" [--both|--dense] [--json]\n"
      "  sparse-cli predict --model=M --csv=rows.csv    (--csv=- reads stdin)\n"
      "  sparse-cli models [--json]\n"
      "  sparse-cli health [--model=M]                  (exit 0 only when SERVING)\n"
      "  sparse-cli bench --model=M [--requests=300] [--batch=1] [--concurrency=1]\n"
      "                   [--echo_target=host:port]\n\n"
      "--target says where the server is (default localhost:8500).",
      "sparse_cli_main.");
  if (args.size() != 1) {
    std::fprintf(stderr, "sparse-cli: expected one command (predict, models, health, bench); see --help\n");
    return 2;
  }
  const std::string& command = args[0];
  sparse::SparseClient client(absl::GetFlag(FLAGS_target),
                              std::chrono::milliseconds(absl::GetFlag(FLAGS_timeout_ms)));
  absl::Status status;
  bool serving = true;
  if (command == "predict") {
    status = sparse::Predict(client);
  } else if (command == "models") {
    status = sparse::Models(client);
  } else if (command == "health") {
    status = sparse::Health(client, &serving);
  } else if (command == "bench") {
    status = sparse::Bench(client);
  } else {
    std::fprintf(stderr, "sparse-cli: unknown command '%s' (predict, models, health, bench)\n",
                 command.c_str());
    return 2;
  }
  if (!status.ok()) {
    std::fprintf(stderr, "sparse-cli: %s: %s\n", absl::StatusCodeToString(status.code()).c_str(),
                 std::string(status.message()).c_str());
    return status.code() == absl::StatusCode::kInvalidArgument &&
                   absl::StrContains(status.message(), "--") ? 2 : 1;
  }
  return serving ? 0 : 1;
}
