#include "client/bench_command.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "client/batched_predict.h"
#include "client/client.h"
#include "client/rest_client.h"
#include "client/svg_plot.h"
#include "common/status_macros.h"  // header-only macros
#include "nlohmann/json.hpp"

namespace sparse {
namespace {

using Json = nlohmann::json;
using sparse::v1::PredictRequest;
using sparse::v1::PredictResponse;

constexpr int kInputPool = 64;  // distinct request bodies cycled through

// A path's requests and the client that sends them, alive for the run.
struct PathSetup {
  std::string name;
  std::string protocol = "native";
  SparseClient* client = nullptr;
  RestClient* rest = nullptr;
  std::vector<PredictRequest> predict;  // sparse / dense, native
  std::vector<inference::ModelInferRequest> infer;  // oip
  std::vector<std::string> bodies;  // rest, rest_binary
  int64_t header_length = -1;       // rest_binary: the JSON's bytes in each body
  std::string rest_path;            // /v2/models/{m}/versions/{v}/infer
  sparse::v1::EchoRequest echo;     // echo / bare_echo
  bool dense = false;
};

// The cost an OIP or REST answer reports in its parameters.
ServerSide FromParameters(int64_t flops, int64_t weight_bytes, int64_t major_faults,
                          int64_t queue_ns, int64_t compute_ns, int64_t total_ns) {
  ServerSide side;
  side.flops = flops;
  side.weight_bytes = weight_bytes;
  side.major_faults = major_faults;
  side.queue_ns = queue_ns;
  side.compute_ns = compute_ns;  // route + compute: the protocol reports them together
  side.total_ns = total_ns;
  return side;
}

LoadPath OipLoadPath(PathSetup* setup) {
  LoadPath path;
  path.name = setup->name;
  path.issue = [setup](int64_t i, std::function<void(absl::Status, ServerSide)> done) {
    setup->client->ModelInferAsync(
        &setup->infer[i % setup->infer.size()],
        [done = std::move(done)](absl::Status s, const inference::ModelInferResponse& r) {
          if (!s.ok()) return done(s, {});
          auto param = [&r](const char* key) {
            auto it = r.parameters().find(key);
            return it == r.parameters().end() ? int64_t{0} : it->second.int64_param();
          };
          done(s, FromParameters(param("flops"), param("weight_bytes"), param("major_faults"),
                                 param("queue_ns"), param("compute_ns"), param("total_ns")));
        });
  };
  return path;
}

// The cost in a REST answer's JSON (its first header_length bytes when
// binary outputs follow), or the error it carries.
absl::StatusOr<ServerSide> FromRestReply(const RestReply& reply) {
  const absl::string_view text =
      reply.header_length.has_value()
          ? absl::string_view(reply.body).substr(0, static_cast<size_t>(*reply.header_length))
          : absl::string_view(reply.body);
  const Json body = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (reply.status != 200) {
    const std::string error = body.is_object() && body.contains("error") && body["error"].is_string()
                                  ? body["error"].get<std::string>()
                                  : std::string(text.substr(0, 200));
    return absl::UnavailableError(absl::StrCat("HTTP ", reply.status, ": ", error));
  }
  if (!body.is_object() || !body.contains("parameters")) {
    return absl::InternalError("the REST answer has no parameters");
  }
  const Json& p = body["parameters"];
  auto param = [&p](const char* key) {
    return p.contains(key) && p[key].is_number_integer() ? p[key].get<int64_t>() : int64_t{0};
  };
  return FromParameters(param("flops"), param("weight_bytes"), param("major_faults"),
                        param("queue_ns"), param("compute_ns"), param("total_ns"));
}

LoadPath RestLoadPath(PathSetup* setup) {
  LoadPath path;
  path.name = setup->name;
  path.issue = [setup](int64_t i, std::function<void(absl::Status, ServerSide)> done) {
    std::optional<int64_t> header;
    if (setup->header_length >= 0) header = setup->header_length;
    setup->rest->PostAsync(setup->rest_path, &setup->bodies[i % setup->bodies.size()], header,
                           [done = std::move(done)](absl::Status s, RestReply reply) {
                             if (!s.ok()) return done(s, {});
                             absl::StatusOr<ServerSide> side = FromRestReply(reply);
                             if (!side.ok()) return done(side.status(), {});
                             done(absl::OkStatus(), *side);
                           });
  };
  return path;
}

// The server's process CPU, from GetServerStats.
std::function<absl::StatusOr<int64_t>()> ServerCpu(SparseClient* client) {
  return [client]() -> absl::StatusOr<int64_t> {
    ASSIGN_OR_RETURN(sparse::v1::ServerStats stats, client->GetServerStats());
    return stats.cpu_user_ns() + stats.cpu_system_ns();
  };
}

LoadPath MakeLoadPath(PathSetup* setup) {
  if (setup->protocol == "oip" || setup->protocol == "rest" || setup->protocol == "rest_binary") {
    LoadPath path = setup->protocol == "oip" ? OipLoadPath(setup) : RestLoadPath(setup);
    path.server_cpu_ns = ServerCpu(setup->client);  // the same process serves every port
    return path;
  }
  if (!setup->predict.empty()) {
    return PredictLoadPath(setup->name, setup->client, &setup->predict, setup->dense);
  }
  LoadPath path;
  path.name = setup->name;
  SparseClient* client = setup->client;
  path.issue = [setup, client](int64_t, std::function<void(absl::Status, ServerSide)> done) {
    client->EchoAsync(&setup->echo, [done = std::move(done)](absl::Status s) { done(s, {}); });
  };
  path.server_cpu_ns = ServerCpu(client);
  return path;
}

std::string Level(const LevelResult& r) {
  return r.load.mode == Load::Mode::kClosed ? absl::StrCat(r.load.concurrency)
                                            : absl::StrFormat("%g", r.load.rate);
}

std::string Cpu(double us) { return us < 0 ? "-" : absl::StrFormat("%.1f", us); }

Json ToJson(const LevelResult& r) {
  Json windows = Json::array();
  for (const WindowResult& w : r.windows) {
    windows.push_back({{"seconds", w.seconds}, {"completed", w.completed}, {"errors", w.errors},
                       {"throughput_rps", w.throughput}, {"p50_us", w.p50_us}, {"p99_us", w.p99_us}});
  }
  Json j = {{"path", r.path},
            {"mode", r.load.mode == Load::Mode::kClosed ? "closed" : "open"},
            {"stable", r.stable},
            {"seconds", r.seconds},
            {"requests", r.completed},
            {"errors", r.errors},
            {"throughput_rps", r.throughput},
            {"p50_us", r.p50_us},
            {"p90_us", r.p90_us},
            {"p99_us", r.p99_us},
            {"p999_us", r.p999_us},
            {"mean_us", r.mean_us},
            {"max_us", r.max_us},
            {"server_us", r.server_us},
            {"queue_us", r.queue_us},
            {"route_us", r.route_us},
            {"compute_us", r.compute_us},
            {"network_us", r.network_us},
            {"route_p50_us", r.route_p50_us},
            {"compute_p50_us", r.compute_p50_us},
            {"flops_per_request", r.flops_per_request},
            {"weight_bytes_per_request", r.weight_bytes_per_request},
            {"major_faults_per_request", r.major_faults_per_request},
            {"client_cpu_us_per_request", r.client_cpu_us_per_request},
            {"server_cpu_us_per_request",
             r.server_cpu_us_per_request < 0 ? Json(nullptr) : Json(r.server_cpu_us_per_request)},
            {"windows", windows}};
  if (r.load.mode == Load::Mode::kClosed) {
    j["concurrency"] = r.load.concurrency;
  } else {
    j["rate_rps"] = r.load.rate;
    j["arrival"] = r.load.poisson ? "poisson" : "constant";
  }
  if (!r.first_error.empty()) j["first_error"] = r.first_error;
  return j;
}

absl::Status WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

std::string Csv(const std::string& model, int64_t batch, const std::vector<LevelResult>& results) {
  std::string out =
      "model,batch,path,mode,concurrency,rate_rps,arrival,stable,seconds,requests,errors,"
      "throughput_rps,p50_us,p90_us,p99_us,p999_us,mean_us,max_us,server_us,queue_us,route_us,"
      "compute_us,network_us,flops_per_request,client_cpu_us_per_request,"
      "server_cpu_us_per_request,weight_bytes_per_request,major_faults_per_request\n";
  for (const LevelResult& r : results) {
    const bool closed = r.load.mode == Load::Mode::kClosed;
    absl::StrAppendFormat(
        &out, "%s,%d,%s,%s,%s,%s,%s,%d,%.3f,%d,%d,%.1f,%.2f,%.2f,%.2f,%.2f,%.2f,%.2f,%.2f,%.2f,%.2f,"
              "%.2f,%.2f,%d,%.2f,%s,%d,%.4f\n",
        model, batch, r.path, closed ? "closed" : "open", closed ? absl::StrCat(r.load.concurrency) : "",
        closed ? "" : absl::StrFormat("%g", r.load.rate), closed ? "" : (r.load.poisson ? "poisson" : "constant"),
        r.stable ? 1 : 0, r.seconds, r.completed, r.errors, r.throughput, r.p50_us, r.p90_us, r.p99_us,
        r.p999_us, r.mean_us, r.max_us, r.server_us, r.queue_us, r.route_us, r.compute_us, r.network_us,
        r.flops_per_request, r.client_cpu_us_per_request,
        r.server_cpu_us_per_request < 0 ? "" : absl::StrFormat("%.2f", r.server_cpu_us_per_request),
        r.weight_bytes_per_request, r.major_faults_per_request);
  }
  return out;
}

std::string Plot(const BenchOptions& o, const std::vector<LevelResult>& results) {
  static const std::map<std::string, std::string> kColors = {
      {"sparse", "#1f77b4"}, {"dense", "#d62728"}, {"echo", "#2ca02c"}, {"bare_echo", "#7f7f7f"}};
  // Every path and protocol measured, in the order they ran.
  std::vector<std::string> paths;
  for (const LevelResult& r : results) {
    if (std::find(paths.begin(), paths.end(), r.path) == paths.end()) paths.push_back(r.path);
  }
  static const char* const kProtocolColors[] = {"#9467bd", "#8c564b", "#e377c2", "#17becf",
                                                "#bcbd22", "#ff7f0e"};
  size_t other = 0;
  std::vector<PlotSeries> series;
  for (const std::string& path : paths) {
    const auto color = kColors.find(path);
    const std::string colour =
        color != kColors.end() ? color->second : kProtocolColors[other++ % std::size(kProtocolColors)];
    PlotSeries p50{.name = path + " p50", .color = colour, .dashed = false, .points = {}};
    PlotSeries p99 = p50;
    p99.name = path + " p99";
    p99.dashed = true;
    for (const LevelResult& r : results) {
      if (r.path != path || r.completed == 0) continue;
      p50.points.emplace_back(r.throughput, r.p50_us);
      p99.points.emplace_back(r.throughput, r.p99_us);
    }
    series.push_back(std::move(p50));
    series.push_back(std::move(p99));
  }
  const bool closed = o.mode == Load::Mode::kClosed;
  std::vector<std::string> levels;
  if (closed) {
    for (int c : o.concurrency) levels.push_back(absl::StrCat(c));
  } else {
    for (double r : o.rates) levels.push_back(absl::StrFormat("%g", r));
  }
  return LatencyThroughputSvg(
      absl::StrFormat("%s: latency vs throughput, batch %d", o.model, o.batch),
      closed ? absl::StrCat("closed loop, concurrency ", absl::StrJoin(levels, ", "))
             : absl::StrCat("open loop (", o.poisson ? "poisson" : "constant",
                            "), offered req/s ", absl::StrJoin(levels, ", ")),
      series);
}

void PrintTable(const BenchOptions& o, const std::vector<LevelResult>& results) {
  const bool closed = o.mode == Load::Mode::kClosed;
  std::printf("%s, batch %lld, %s loop%s; windows of %gs after %gs warm-up, stable = last %d "
              "windows within +-%g%%\n",
              o.model.c_str(), static_cast<long long>(o.batch), closed ? "closed" : "open",
              closed ? "" : (o.poisson ? " (poisson arrivals)" : " (constant rate)"),
              o.schedule.window_seconds, o.schedule.warmup_seconds, o.schedule.stable_windows,
              o.schedule.stability * 100);
  // The path column fits the longest name (sparse@rest_binary with --protocols).
  int width = 9;
  for (const LevelResult& r : results) width = std::max(width, static_cast<int>(r.path.size()));
  std::printf("  %-8s %-*s %9s %8s %8s %8s %9s %7s %10s %10s %10s %13s %16s %14s %s\n",
              closed ? "inflight" : "offered", width, "path", "req/s", "p50 us", "p90 us", "p99 us",
              "p99.9 us", "errors", "FLOPs/req", "bytes/req", "faults/req", "server us",
              "queue/compute", "CPU us/req", "stable");
  for (const LevelResult& r : results) {
    std::printf("  %-8s %-*s %9.0f %8.1f %8.1f %8.1f %9.1f %7lld %10lld %10s %10.2f %13.1f %7.1f/%-8.1f %6s/%-7s %s\n",
                Level(r).c_str(), width, r.path.c_str(), r.throughput, r.p50_us, r.p90_us, r.p99_us,
                r.p999_us, static_cast<long long>(r.errors),
                static_cast<long long>(r.flops_per_request),
                HumanBytes(r.weight_bytes_per_request).c_str(), r.major_faults_per_request,
                r.server_us, r.queue_us,
                r.route_us + r.compute_us, Cpu(r.client_cpu_us_per_request).c_str(),
                Cpu(r.server_cpu_us_per_request).c_str(), r.stable ? "yes" : "no");
  }
  std::printf("  server us: mean time on the server (arrival to answer); queue/compute: its mean wait "
              "for a worker\n  and route+compute; the rest of the round trip is network and "
              "client. CPU us/req: client/server\n  process CPU per request (all threads). "
              "faults/req: major page faults (weight pages read from disk)\n  per request, as "
              "the server counted them.%s\n",
              std::find(o.paths.begin(), o.paths.end(), "bare_echo") != o.paths.end()
                  ? " echo: this server without a model; bare_echo: a bare gRPC echo server."
                  : "");
  for (const LevelResult& r : results) {
    if (!r.first_error.empty()) {
      std::printf("  %s at %s: %lld errors, the first: %s\n", r.path.c_str(),
                  r.load.Describe().c_str(), static_cast<long long>(r.errors), r.first_error.c_str());
    }
  }
}

absl::Status Check(const BenchOptions& o) {
  if (o.model.empty()) return absl::InvalidArgumentError("bench needs --model");
  if (o.batch < 1) return absl::InvalidArgumentError("--batch must be >= 1");
  if (o.paths.empty()) return absl::InvalidArgumentError("--paths is empty");
  for (const std::string& p : o.paths) {
    if (p != "sparse" && p != "dense" && p != "echo" && p != "bare_echo") {
      return absl::InvalidArgumentError(absl::StrCat(
          "--paths: unknown path '", p, "' (expected sparse, dense, echo or bare_echo)"));
    }
    if (p == "bare_echo" && o.echo_target.empty()) {
      return absl::InvalidArgumentError("--paths=bare_echo needs --echo_target=host:port");
    }
  }
  if (o.protocols.empty()) return absl::InvalidArgumentError("--protocols is empty");
  for (const std::string& p : o.protocols) {
    if (p != "native" && p != "oip" && p != "rest" && p != "rest_binary") {
      return absl::InvalidArgumentError(absl::StrCat(
          "--protocols: unknown protocol '", p, "' (expected native, oip, rest or rest_binary)"));
    }
    if (absl::StartsWith(p, "rest") && o.http_target.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--protocols=", p, " needs --http_target=host:port (sparse-server's --http_port)"));
    }
    if (absl::StartsWith(p, "rest") && o.tls.on()) {
      return absl::InvalidArgumentError("the REST protocols are benchmarked in plaintext only");
    }
  }
  if (o.mode == Load::Mode::kClosed && o.concurrency.empty()) {
    return absl::InvalidArgumentError("--concurrency needs at least one level, e.g. 1,4,16");
  }
  for (int c : o.concurrency) {
    if (c > 4096) {
      return absl::InvalidArgumentError(absl::StrCat("--concurrency: at most 4096, got ", c));
    }
  }
  // Output files are checked before minutes of measuring, not after, and
  // without creating them (a failed run leaves nothing behind).
  for (const std::string& path : {o.csv_path, o.plot_path}) {
    if (path.empty()) continue;
    const std::filesystem::path p(path);
    const std::string dir = p.has_parent_path() ? p.parent_path().string() : ".";
    const bool writable = access(path.c_str(), F_OK) == 0 ? access(path.c_str(), W_OK) == 0
                                                          : access(dir.c_str(), W_OK) == 0;
    if (!writable) {
      return absl::InvalidArgumentError(absl::StrCat("cannot write ", path,
                                                     " (given to --csv or --plot)"));
    }
  }
  if (o.mode == Load::Mode::kOpen && o.rates.empty()) {
    return absl::InvalidArgumentError("--mode=open needs --rate, e.g. --rate=1000,2000");
  }
  for (const std::string& t : {o.target, o.echo_target, o.http_target}) {
    if (!t.empty() && !o.allow_remote && !IsLoopbackTarget(t)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bench drives load at ", t, ", which is not on this machine; pass --allow_remote to "
          "load a remote server"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<std::vector<float>>> BenchInputs(const BenchOptions& o, int64_t d) {
  std::vector<std::vector<float>> inputs;
  if (o.rows_path.empty()) {
    std::mt19937_64 rng(1);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (int k = 0; k < kInputPool; ++k) {
      std::vector<float> x(static_cast<size_t>(o.batch * d));
      for (float& v : x) v = u(rng);
      inputs.push_back(std::move(x));
    }
    return inputs;
  }
  ASSIGN_OR_RETURN(const std::vector<std::vector<float>> rows, ReadRowsFile(o.rows_path, "--rows"));
  if (static_cast<int64_t>(rows.front().size()) != d) {
    return absl::InvalidArgumentError(absl::StrCat("--rows ", o.rows_path, ": rows of ",
                                                   rows.front().size(), " values, but model '",
                                                   o.model, "' takes ", d));
  }
  const int64_t n = static_cast<int64_t>(rows.size());
  const int64_t requests = (n + o.batch - 1) / o.batch;
  for (int64_t j = 0; j < requests; ++j) {
    std::vector<float> x;
    x.reserve(static_cast<size_t>(o.batch * d));
    for (int64_t i = 0; i < o.batch; ++i) {
      const std::vector<float>& row = rows[(j * o.batch + i) % n];
      x.insert(x.end(), row.begin(), row.end());
    }
    inputs.push_back(std::move(x));
  }
  return inputs;
}

LoadPath PredictLoadPath(const std::string& name, SparseClient* client,
                         const std::vector<PredictRequest>* requests, bool dense) {
  LoadPath path;
  path.name = name;
  path.issue = [client, requests, dense](int64_t i, std::function<void(absl::Status, ServerSide)> done) {
    client->PredictAsync(&(*requests)[i % requests->size()], dense,
                         [done = std::move(done)](absl::Status s, const PredictResponse& r) {
                           const auto& c = r.cost();
                           done(s, ServerSide{.total_ns = c.total_ns(),
                                              .queue_ns = c.queue_ns(),
                                              .route_ns = c.route_ns(),
                                              .compute_ns = c.compute_ns(),
                                              .flops = c.flops(),
                                              .weight_bytes = c.weight_bytes(),
                                              .major_faults = c.major_faults()});
                         });
  };
  path.server_cpu_ns = ServerCpu(client);
  return path;
}

std::string HumanBytes(int64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  const char* const units[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes) / 1024;
  int u = 0;
  while (v >= 1024 && u < 3) {
    v /= 1024;
    ++u;
  }
  return v >= 100 ? absl::StrFormat("%.1f %s", v, units[u]) : absl::StrFormat("%.2f %s", v, units[u]);
}

bool IsLoopbackTarget(const std::string& target) {
  absl::string_view t = target;
  absl::ConsumePrefix(&t, "dns:///");
  absl::ConsumePrefix(&t, "ipv4:");
  absl::ConsumePrefix(&t, "ipv6:");
  if (absl::StartsWith(t, "unix:") || absl::StartsWith(t, "unix-abstract:")) return true;
  if (absl::StartsWith(t, "[::1]")) return true;
  const absl::string_view host = t.substr(0, t.rfind(':'));
  if (host == "localhost") return true;
  // 127.0.0.0/8 as a dotted address, not a name that starts with "127.".
  return absl::StartsWith(host, "127.") &&
         host.find_first_not_of("0123456789.") == absl::string_view::npos;
}

absl::Status RunBench(const BenchOptions& o) {
  RETURN_IF_ERROR(Check(o));
  ASSIGN_OR_RETURN(std::unique_ptr<SparseClient> main_client,
                   SparseClient::Create(o.target, o.timeout, o.tls));
  SparseClient& client = *main_client;
  ASSIGN_OR_RETURN(sparse::v1::ModelStatus status, client.GetModel(o.model));
  const sparse::v1::VersionStatus* version = &status.versions(status.versions_size() - 1);
  for (const auto& v : status.versions()) {
    if (v.version() == (o.version ? o.version : status.serving_version())) version = &v;
  }
  const int64_t d = version->input_dim();
  std::unique_ptr<SparseClient> bare;
  if (!o.echo_target.empty()) bare = std::make_unique<SparseClient>(o.echo_target, o.timeout);

  std::unique_ptr<RestClient> rest;
  for (const std::string& p : o.protocols) {
    if (absl::StartsWith(p, "rest") && rest == nullptr) {
      ASSIGN_OR_RETURN(rest, RestClient::Create(o.http_target, o.timeout));
    }
  }

  // Request bodies: the same for every path and protocol; Echo carries as
  // many bytes as a Predict request of this batch.
  ASSIGN_OR_RETURN(const std::vector<std::vector<float>> inputs, BenchInputs(o, d));
  std::vector<PathSetup> setups;
  for (const std::string& name : o.paths) {
    const bool model_path = name == "sparse" || name == "dense";
    for (const std::string& protocol : model_path ? o.protocols : std::vector<std::string>{"native"}) {
      PathSetup s;
      s.name = protocol == "native" ? name : absl::StrCat(name, "@", protocol);
      s.protocol = protocol;
      s.client = name == "bare_echo" ? bare.get() : &client;
      s.rest = rest.get();
      s.echo.set_payload(std::string(static_cast<size_t>(o.batch * d * sizeof(float)), 'x'));
      if (model_path) {
        s.dense = name == "dense";
        const std::string model = s.dense ? o.model + ".dense" : o.model;
        const std::string version = o.version > 0 ? absl::StrCat(o.version) : "";
        s.rest_path = absl::StrCat("/v2/models/", model,
                                   version.empty() ? "" : absl::StrCat("/versions/", version), "/infer");
        for (const std::vector<float>& x : inputs) {
          const std::string bytes(reinterpret_cast<const char*>(x.data()), x.size() * sizeof(float));
          if (protocol == "native") {
            PredictRequest r;
            r.set_model(o.model);
            r.set_version(o.version);
            r.set_rows(o.batch);
            r.set_priority(o.priority);
            r.mutable_inputs()->Add(x.begin(), x.end());
            s.predict.push_back(std::move(r));
          } else if (protocol == "oip") {
            inference::ModelInferRequest r;
            r.set_model_name(model);
            r.set_model_version(version);
            auto* input = r.add_inputs();
            input->set_name("input");
            input->set_datatype("FP32");
            input->add_shape(o.batch);
            input->add_shape(d);
            if (o.priority > 0) (*r.mutable_parameters())["priority"].set_uint64_param(o.priority);
            r.add_raw_input_contents(bytes);
            s.infer.push_back(std::move(r));
          } else if (protocol == "rest") {
            Json body = {{"inputs", {{{"name", "input"}, {"shape", {o.batch, d}},
                                      {"datatype", "FP32"}, {"data", x}}}}};
            if (o.priority > 0) body["parameters"] = {{"priority", o.priority}};
            s.bodies.push_back(body.dump());
          } else {  // rest_binary
            Json header = {
                {"inputs", {{{"name", "input"}, {"shape", {o.batch, d}}, {"datatype", "FP32"},
                             {"parameters", {{"binary_data_size", bytes.size()}}}}}},
                {"outputs", {{{"name", "output"}, {"parameters", {{"binary_data", true}}}}}}};
            if (o.priority > 0) header["parameters"] = {{"priority", o.priority}};
            const std::string text = header.dump();
            s.header_length = static_cast<int64_t>(text.size());
            s.bodies.push_back(text + bytes);
          }
        }
      }
      setups.push_back(std::move(s));
    }
  }
  // One request per path first: a wrong model, a missing dense twin or a
  // wrong port fails here with the server's message, not as a table of
  // errors.
  for (PathSetup& s : setups) {
    absl::Status first;
    if (s.protocol != "native") {
      absl::Notification answered;
      MakeLoadPath(&s).issue(0, [&](absl::Status st, ServerSide) {
        first = std::move(st);
        answered.Notify();
      });
      answered.WaitForNotification();
    } else if (s.predict.empty()) {
      first = s.client->Echo(s.echo.payload()).status();
    } else {
      std::vector<float> x(s.predict[0].inputs().begin(), s.predict[0].inputs().end());
      first = s.client->Predict(o.model, o.version, o.batch, x, s.dense, false).status();
    }
    if (!first.ok()) {
      return absl::Status(first.code(), absl::StrCat(s.name, ": ", first.message()));
    }
  }

  std::vector<Load> loads;
  if (o.mode == Load::Mode::kClosed) {
    for (int c : o.concurrency) loads.push_back(Load{.mode = Load::Mode::kClosed, .concurrency = c});
  } else {
    for (double r : o.rates) {
      loads.push_back(Load{.mode = Load::Mode::kOpen, .concurrency = 1, .rate = r, .poisson = o.poisson});
    }
  }
  const int steps = static_cast<int>(loads.size() * setups.size());
  int step = 0;
  const bool tty = isatty(fileno(stderr));
  std::vector<LevelResult> results;
  for (const Load& load : loads) {
    for (PathSetup& s : setups) {  // the paths alternate at every level
      ++step;
      ProgressCallback progress;
      if (o.progress) {
        progress = [&, step](const LevelResult& r, int window) {
          std::fprintf(stderr, "%s[bench %d/%d] %s %s: window %d/%d, %.0f req/s, p50 %.1f us, p99 "
                       "%.1f us, %lld errors%s",
                       tty ? "\r\033[K" : "", step, steps, r.path.c_str(), load.Describe().c_str(),
                       window + 1, o.schedule.max_windows, r.throughput, r.p50_us, r.p99_us,
                       static_cast<long long>(r.errors), tty ? "" : "\n");
          std::fflush(stderr);
        };
      }
      LoadPath path = MakeLoadPath(&s);
      ASSIGN_OR_RETURN(LevelResult r, RunLevel(path, load, o.schedule, progress));
      if (r.completed == 0 && r.errors > 0) {
        if (o.progress && tty) std::fprintf(stderr, "\n");
        return absl::UnavailableError(absl::StrCat(r.path, " at ", load.Describe(),
                                                   ": every request failed: ", r.first_error));
      }
      results.push_back(std::move(r));
    }
  }
  if (o.progress && tty) std::fprintf(stderr, "\r\033[K");

  if (!o.csv_path.empty()) RETURN_IF_ERROR(WriteFile(o.csv_path, Csv(o.model, o.batch, results)));
  if (!o.plot_path.empty()) RETURN_IF_ERROR(WriteFile(o.plot_path, Plot(o, results)));
  if (o.json) {
    Json levels = Json::array();
    for (const LevelResult& r : results) levels.push_back(ToJson(r));
    const Json out = {{"model", o.model},
                      {"version", version->version()},
                      {"batch", o.batch},
                      {"mode", o.mode == Load::Mode::kClosed ? "closed" : "open"},
                      {"results", levels}};
    std::printf("%s\n", out.dump().c_str());
  } else {
    PrintTable(o, results);
    if (!o.csv_path.empty()) std::printf("  wrote %s\n", o.csv_path.c_str());
    if (!o.plot_path.empty()) std::printf("  wrote %s\n", o.plot_path.c_str());
  }
  return absl::OkStatus();
}

}  // namespace sparse
