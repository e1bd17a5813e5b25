#include "server/server.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/pem.h"
#include "common/status_macros.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "server/listen_check.h"

namespace sparse {
namespace {

// Plaintext, TLS or mutual TLS, from the options' PEM files.
// The gRPC port's credentials from the PEM text in `tls` (empty: plaintext).
std::shared_ptr<grpc::ServerCredentials> ServerCredentials(const HttpServer::Options& tls) {
  if (tls.tls_cert_chain.empty()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions ssl(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  ssl.pem_key_cert_pairs.push_back({tls.tls_private_key, tls.tls_cert_chain});
  if (!tls.tls_client_ca.empty()) {
    ssl.pem_root_certs = tls.tls_client_ca;
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

// Drops every builder plugin (server reflection, which
// InitProtoReflectionServerBuilderPlugin adds to all later builders): the
// health-only port must serve the health service and nothing else.
class NoPlugins final : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    plugins->clear();
  }
};

// One line per bad option, each naming its flag, the range it takes and the
// value it got.
struct Problems {
  template <typename T>
  void Need(bool ok, absl::string_view flag, absl::string_view range, const T& value) {
    if (!ok) lines.push_back(absl::StrCat("--", flag, " takes ", range, ", got ", value));
  }
  void Add(std::string line) { lines.push_back(std::move(line)); }
  std::vector<std::string> lines;
};

// The repository, the gRPC port, the workers and the queue.
void CheckServing(const ServerOptions& o, Problems& p) {
  p.Need(!o.model_repository.empty(), "model_repository", "a directory", "nothing");
  if (!o.model_name.empty()) {
    absl::Status name = CheckModelName(o.model_name);
    if (name.ok()) name = CheckNotDenseTwinName(o.model_name);
    if (!name.ok()) {
      p.Add(absl::StrCat("--model_name takes a model name (", name.message(), "), got '",
                         o.model_name, "'"));
    }
  }
  p.Need(o.port >= 0 && o.port <= 65535, "port", "0..65535 (0 = a free port)", o.port);
  p.Need(o.workers >= 0, "workers", "a count >= 0 (0 = one per core)", o.workers);
  p.Need(o.max_queue >= 1, "max_queue", "a count >= 1", o.max_queue);
  p.Need(o.max_batch_rows >= 1 && o.max_batch_rows <= (1 << 20), "max_batch_rows", "1..1048576",
       o.max_batch_rows);
  p.Need(o.inline_max_flops >= -1, "inline_max_flops",
       "FLOPs >= 0 (0 = queue every request; -1 = the default)", o.inline_max_flops);
  p.Need(o.max_message_bytes >= 0 && o.max_message_bytes <= (int64_t{1} << 31) - 1,
       "max_message_bytes", "0..2147483647 bytes (0 = sized from the models)", o.max_message_bytes);
  p.Need(o.max_concurrent_streams >= 1, "max_concurrent_streams", "a count >= 1",
       o.max_concurrent_streams);
  p.Need(o.health_port >= -1 && o.health_port <= 65535, "health_port",
       "-1..65535 (-1 = none, 0 = a free port)", o.health_port);
  p.Need(o.metrics_port >= -1 && o.metrics_port <= 65535, "metrics_port",
       "-1..65535 (-1 = off, 0 = a free port)", o.metrics_port);
  p.Need(o.http_port >= -1 && o.http_port <= 65535, "http_port",
       "-1..65535 (-1 = off, 0 = a free port)", o.http_port);
}

// The HTTP ports and their limits.
void CheckHttp(const ServerOptions& o, Problems& p) {
  p.Need(o.http_threads >= 0 && o.http_threads <= 1024, "http_threads", "0..1024 (0 = one per core)",
       o.http_threads);
  p.Need(o.http_header_bytes >= 1024 && o.http_header_bytes <= (int64_t{1} << 20), "http_header_bytes",
       "1024..1048576 bytes", o.http_header_bytes);
  p.Need(o.http_idle_seconds > 0 && o.http_idle_seconds <= 86400, "http_idle_seconds",
       "seconds in (0, 86400]", o.http_idle_seconds);
  p.Need(o.http_header_seconds > 0 && o.http_header_seconds <= 3600, "http_header_seconds",
       "seconds in (0, 3600]", o.http_header_seconds);
  p.Need(o.http_body_seconds > 0 && o.http_body_seconds <= 86400, "http_body_seconds",
       "seconds in (0, 86400]", o.http_body_seconds);
  p.Need(o.http_max_connections >= 1 && o.http_max_connections <= (1 << 20), "http_max_connections",
       "1..1048576", o.http_max_connections);
}

// Polling, the drain, TLS and model control.
void CheckLifecycle(const ServerOptions& o, Problems& p) {
  p.Need(o.poll_seconds >= 0 && o.poll_seconds <= 86400, "poll_seconds",
       "seconds in 0..86400 (0 = load once)", o.poll_seconds);
  p.Need(o.drain_seconds >= 0 && o.drain_seconds <= 86400, "drain_seconds", "seconds in 0..86400",
       o.drain_seconds);
  if (o.tls_cert_file.empty() != o.tls_key_file.empty()) {
    p.Add(
        absl::StrCat("--tls_cert and --tls_key go together, got ",
                     o.tls_cert_file.empty() ? "--tls_key alone" : "--tls_cert alone"));
  }
  if (o.model_control && o.poll_seconds > 0) {
    p.Add(
        "--model_control and --poll_seconds exclude each other: a poll would undo an explicit "
        "UnloadModel");
  }
  if (o.model_control && !o.tls_cert_file.empty() && o.tls_client_ca_file.empty()) {
    p.Add(
        "--model_control with TLS needs --tls_client_ca: only clients with a certificate may "
        "load and unload models");
  }
}

// A shard or a front.
void CheckSharding(const ServerOptions& o, Problems& p) {
  if (!o.shard.empty()) {
    const absl::StatusOr<ShardSpec> spec = ParseShardSpec(o.shard);
    if (!spec.ok()) p.Add(absl::StrCat("--shard: ", spec.status().message()));
  }
  if (!o.shard.empty() && !o.shard_targets.empty()) {
    p.Add(
        "--shard and --shard_targets exclude each other: a server is a shard or a front");
  }
  p.Need(static_cast<int64_t>(o.shard_targets.size()) <= kMaxShards, "shard_targets",
       absl::StrCat("at most ", kMaxShards, " targets"), o.shard_targets.size());
  for (const std::string& target : o.shard_targets) {
    if (target.empty()) p.Add("--shard_targets holds an empty target");
  }
  p.Need(o.shard_wait_seconds >= 0 && o.shard_wait_seconds <= 86400, "shard_wait_seconds",
       "seconds in 0..86400", o.shard_wait_seconds);
  p.Need(o.shard_retain_seconds >= 0 && o.shard_retain_seconds <= 86400, "shard_retain_seconds",
       "seconds in 0..86400", o.shard_retain_seconds);
  p.Need(o.shard_keepalive_seconds >= 0.1 && o.shard_keepalive_seconds <= 3600,
       "shard_keepalive_seconds", "seconds in 0.1..3600", o.shard_keepalive_seconds);
  p.Need(o.shard_max_reconnect_seconds >= 0.1 && o.shard_max_reconnect_seconds <= 600,
       "shard_max_reconnect_seconds", "seconds in 0.1..600", o.shard_max_reconnect_seconds);
}

}  // namespace

absl::Status ServerOptions::Validate() const {
  Problems problems;
  CheckServing(*this, problems);
  CheckHttp(*this, problems);
  CheckLifecycle(*this, problems);
  CheckSharding(*this, problems);
  if (problems.lines.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrJoin(problems.lines, "\n"));
}

absl::Status ResolveShardIndex(ServerOptions& o,
                               absl::FunctionRef<const char*(const char*)> getenv) {
  if (o.shard_index_env.empty() && o.shard_index_offset == 0) return absl::OkStatus();
  const size_t slash = o.shard.find('/');
  const std::string count = slash == std::string::npos ? "" : o.shard.substr(slash + 1);
  std::string index_text = slash == std::string::npos ? o.shard : o.shard.substr(0, slash);
  std::string source = absl::StrCat("--shard=", o.shard);
  if (!o.shard_index_env.empty()) {
    if (!index_text.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--shard_index_env=", o.shard_index_env, " gives the shard index, so --shard takes the "
          "count alone ('/N', e.g. /4), got '", o.shard, "'"));
    }
    const char* value = getenv(o.shard_index_env.c_str());
    if (value == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--shard_index_env=", o.shard_index_env, ": expected the environment variable ",
          o.shard_index_env, " to hold the shard index (an integer), but it is not set"));
    }
    index_text = value;
    source = absl::StrCat(o.shard_index_env, "=", value);
  } else {
    // A StatefulSet pod's name ends in its ordinal, as in ParseShardSpec.
    if (const size_t dash = index_text.rfind('-'); dash != std::string::npos && dash > 0) {
      index_text = index_text.substr(dash + 1);
    }
  }
  int64_t index = 0;
  if (!absl::SimpleAtoi(index_text, &index)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the shard index is an integer, got '", index_text, "' from ", source));
  }
  int64_t n = 0;
  if (!absl::SimpleAtoi(count, &n) || n < 1 || n > kMaxShards) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--shard: expected the shard count N in 1..", kMaxShards, " after '/', got '", o.shard, "'"));
  }
  const int64_t shifted = index + o.shard_index_offset;
  if (shifted < 0 || shifted >= n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the shard index ", index, " (", source, ") plus --shard_index_offset=",
        o.shard_index_offset, " is ", shifted, "; expected 0 <= i < ", n, " (the shard count)"));
  }
  o.shard = absl::StrCat(shifted, "/", n);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SparseServer>> SparseServer::Start(
    const ServerOptions& options, std::vector<std::string>* load_errors) {
  RETURN_IF_ERROR(options.Validate());
  auto server = std::unique_ptr<SparseServer>(new SparseServer());
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  // A front's workers mostly wait on their shards: four per core.
  const int workers = options.workers > 0              ? options.workers
                      : !options.shard_targets.empty() ? 4 * cores
                                                       : cores;
  server->metrics_ = std::make_unique<ServerMetrics>();
  // A taken port fails now, in one line, not after every model has loaded.
  RETURN_IF_ERROR(CheckListenPorts(options.address, {{options.port, "--port"},
                                                     {options.health_port, "--health_port"},
                                                     {options.metrics_port, "--metrics_port"},
                                                     {options.http_port, "--http_port"}}));
  RETURN_IF_ERROR(server->OpenRepository(options, workers, load_errors));
  server->StartCore(options, workers);
  RETURN_IF_ERROR(server->ServeMetrics(options));
  RETURN_IF_ERROR(server->ServeGrpc(options));
  RETURN_IF_ERROR(server->ServeHealthPort(options));
  RETURN_IF_ERROR(server->ServeHttp(options));
  {
    // The snapshot is read under health_mu_: one published meanwhile
    // applies after this one, never before it.
    absl::MutexLock lock(&server->health_mu_);
    server->health_ready_ = true;
    server->ApplyModelHealth(*server->repository_->snapshot());
  }
  if (options.poll_seconds > 0) {
    server->repository_->StartPolling(std::chrono::milliseconds(
        std::max<int64_t>(1, static_cast<int64_t>(options.poll_seconds * 1000))));
  }
  return server;
}

absl::Status SparseServer::OpenRepository(const ServerOptions& options, int workers,
                                          std::vector<std::string>* load_errors) {
  ModelRepository::Options repository_options;
  static_cast<LoaderOptions&>(repository_options) = options;  // the flags' load settings
  repository_options.workers = workers;                        // resolved
  repository_options.single_model = options.model_name;
  // Readiness and metrics follow every snapshot. The servers do not exist
  // during the first load; Start() sets their health once they run.
  repository_options.on_publish = [this](const RepositorySnapshot& snapshot) {
    PublishModels(snapshot);
  };
  if (!options.shard.empty()) {
    ASSIGN_OR_RETURN(shard_spec_, ParseShardSpec(options.shard));
    repository_options.part = {.role = ModelPart::Role::kShard, .shard = shard_spec_};
    repository_options.retain_in_use = std::chrono::milliseconds(
        static_cast<int64_t>(options.shard_retain_seconds * 1000));
  }
  if (!options.shard_targets.empty()) {
    ShardSet::Options shards;
    shards.targets = options.shard_targets;
    shards.wait_for_shards = absl::Seconds(options.shard_wait_seconds);
    shards.max_reconnect_backoff = absl::Seconds(options.shard_max_reconnect_seconds);
    shards.keepalive = absl::Seconds(options.shard_keepalive_seconds);
    metrics_->AddShards(options.shard_targets);
    ServerMetrics* metrics = metrics_.get();
    shards.on_send = [metrics](int shard) { metrics->ShardCallSent(shard); };
    shards.on_call = [metrics](int shard, int code, double seconds) {
      metrics->ObserveShardCall(shard, code, seconds);
    };
    ASSIGN_OR_RETURN(shard_set_, ShardSet::Create(std::move(shards), options.shard_tls));
    repository_options.part = {
        .role = ModelPart::Role::kFront,
        .shard = {.index = 0, .count = static_cast<int>(options.shard_targets.size())}};
    const ShardSet* shard_set = shard_set_.get();
    repository_options.make_front = [shard_set](const std::string& model, int64_t version,
                                                Precision precision, const Checkpoint& front) {
      return shard_set->MakeFront(model, version, precision, front);
    };
  }
  ASSIGN_OR_RETURN(repository_, ModelRepository::Open(options.model_repository,
                                                       repository_options, load_errors));
  const std::shared_ptr<const RepositorySnapshot> first = repository_->snapshot();
  if (ServingVersions(*first) == 0) {
    size_t failed = 0;
    for (const auto& [name, state] : *first) failed += state.failures.size();
    if (failed > 0) {
      // Version directories are there but none loaded (a front whose
      // shards are not up, a corrupt file): the reasons were logged above.
      return absl::NotFoundError(absl::StrCat("no loadable model in ", options.model_repository,
                                              ": ", failed, failed == 1 ? " version" : " versions",
                                              " failed to load (why is above)"));
    }
    if (!options.model_name.empty()) {
      const std::map<std::string, std::string> not_served = repository_->NotServed();
      auto why = not_served.find(options.model_name);
      return absl::NotFoundError(absl::StrCat(
          "no loadable model in ", options.model_repository, " (--model_name=",
          options.model_name, "): ",
          why != not_served.end() ? why->second
                                  : "expected <version>/ directories or one version's files"));
    }
    return absl::NotFoundError(absl::StrCat("no loadable model in ", options.model_repository,
                                            " (expected <model>/<version>/ directories written by "
                                            "sparse-train)"));
  }
  PublishModels(*first);
  return absl::OkStatus();
}

void SparseServer::PublishModels(const RepositorySnapshot& snapshot) {
  std::map<std::string, int> versions;
  for (const auto& [name, state] : snapshot) {
    versions[name] = static_cast<int>(state.versions.size());
  }
  metrics_->SetLoadedVersions(versions);
  SetModelHealth(snapshot);
}

void SparseServer::StartCore(const ServerOptions& options, int workers) {
  ServerMetrics* metrics = metrics_.get();
  core_ = std::make_unique<InferenceCore>(
      repository_.get(),
      InferenceCore::Options{
          .workers = workers,
          .max_queue = options.max_queue,
          .max_batch_rows = options.max_batch_rows,
          .inline_max_flops = options.inline_max_flops >= 0 ? options.inline_max_flops
                              : options.shard.empty()      ? 262144
                                                           : 4194304,
          .observe = [metrics](const InferRequest& request, const absl::Status& status,
                               const InferResponse& response) {
            metrics->Observe(request.model, request.dense, status.code(), response.cost);
          },
          .shard = options.shard.empty() ? std::nullopt : std::optional<ShardSpec>(shard_spec_)});
}

HttpServer::Options SparseServer::HttpOptions(const ServerOptions& options) {
  const auto ms = [](double seconds) {
    return std::chrono::milliseconds(std::max<int64_t>(1, static_cast<int64_t>(seconds * 1000)));
  };
  HttpServer::Options http;
  http.address = options.address;
  http.header_bytes = options.http_header_bytes;
  http.idle_timeout = ms(options.http_idle_seconds);
  http.header_timeout = ms(options.http_header_seconds);
  http.body_timeout = ms(options.http_body_seconds);
  http.max_connections = options.http_max_connections;
  return http;
}

absl::Status SparseServer::ServeMetrics(const ServerOptions& options) {
  if (options.metrics_port < 0) return absl::OkStatus();
  routing_collector_ = std::make_shared<RoutingCollector>(core_.get());
  metrics_endpoint_ = std::make_unique<MetricsEndpoint>(
      std::vector<std::shared_ptr<prometheus::Collectable>>{
          metrics_->registry(), routing_collector_, std::make_shared<LoadCollector>(core_.get()),
          std::make_shared<InternalErrorCollector>()});
  // Its own port and thread, plaintext (as Prometheus scrapes), under the
  // same limits as the REST port: no client can hold its thread.
  HttpServer::Options http = HttpOptions(options);
  http.port = options.metrics_port;
  http.threads = 1;
  http.max_body_bytes = 4096;  // GET /metrics carries no body
  http.port_flag = "--metrics_port";
  http.site = ErrorSite::kMetrics;
  ASSIGN_OR_RETURN(metrics_http_, HttpServer::Start(http, metrics_endpoint_.get()));
  return absl::OkStatus();
}

absl::Status SparseServer::ServeGrpc(const ServerOptions& options) {
  int64_t message_bytes = options.max_message_bytes;
  if (message_bytes <= 0) {
    // At least 64 MiB, so a wider model loaded later still fits.
    int64_t widest = 1;
    for (const auto& [name, state] : *repository_->snapshot()) {
      for (const auto& [number, servable] : state.versions) {
        widest = std::max({widest, servable->loaded.sparse->info().input_dim,
                           servable->loaded.sparse->info().output_dim});
      }
    }
    message_bytes = std::clamp<int64_t>(options.max_batch_rows * widest * 4 + (int64_t{1} << 20),
                                        int64_t{64} << 20, int64_t{1} << 30);
  }
  // Each PEM file is read once (ReadPemFile: regular files only), for both
  // the gRPC and the HTTP port. ServerOptions::Validate() has checked that
  // the files come in pairs.
  if (!options.tls_cert_file.empty()) {
    ASSIGN_OR_RETURN(tls_.tls_cert_chain, ReadPemFile(options.tls_cert_file, "--tls_cert"));
    ASSIGN_OR_RETURN(tls_.tls_private_key, ReadPemFile(options.tls_key_file, "--tls_key"));
    if (!options.tls_client_ca_file.empty()) {
      ASSIGN_OR_RETURN(tls_.tls_client_ca, ReadPemFile(options.tls_client_ca_file, "--tls_client_ca"));
    }
  }
  const std::shared_ptr<grpc::ServerCredentials> credentials = ServerCredentials(tls_);
  service_ = std::make_unique<SparseInferenceService>(core_.get());
  if (options.model_control) control_ = std::make_unique<ModelControl>(repository_.get());
  open_inference_ = std::make_unique<OipProtocol>(core_.get(), control_.get());
  oip_service_ = std::make_unique<OipGrpcService>(open_inference_.get());
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat(options.address, ":", options.port), credentials, &port_);
  message_bytes_ = message_bytes;
  builder.SetMaxReceiveMessageSize(static_cast<int>(message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(message_bytes));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_concurrent_streams);
  // A port another server holds is refused, not shared (gRPC's default,
  // SO_REUSEPORT, would split the clients between the two): as
  // CheckListenPorts found it.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(service_.get());
  builder.RegisterService(oip_service_.get());
  if (!options.shard.empty()) {
    shard_service_ = std::make_unique<ShardService>(core_.get());
    builder.RegisterService(shard_service_.get());
  }
  if (options.model_control) {
    control_service_ = std::make_unique<ModelControlService>(control_.get());
    builder.RegisterService(control_service_.get());
  }
  server_ = builder.BuildAndStart();
  if (server_ != nullptr && port_ != 0) return absl::OkStatus();
  if (!options.tls_cert_file.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot start TLS on ", options.address, ":", options.port, ": check that --tls_cert=",
        options.tls_cert_file, " and --tls_key=", options.tls_key_file,
        " hold a valid certificate and its key (gRPC's log above says more), and that the "
        "port is free"));
  }
  return absl::UnavailableError(absl::StrCat("cannot listen on ", options.address, ":",
                                             options.port, " (--port): in use or not permitted"));
}

absl::Status SparseServer::ServeHttp(const ServerOptions& options) {
  if (options.http_port < 0) return absl::OkStatus();
  rest_ = std::make_unique<RestFrontend>(open_inference_.get(), options.max_batch_rows);
  HttpServer::Options http = HttpOptions(options);
  http.tls_cert_chain = tls_.tls_cert_chain;
  http.tls_private_key = tls_.tls_private_key;
  http.tls_client_ca = tls_.tls_client_ca;
  http.port = options.http_port;
  http.threads = options.http_threads;
  http.max_body_bytes = message_bytes_;
  ASSIGN_OR_RETURN(http_, HttpServer::Start(http, rest_.get()));
  return absl::OkStatus();
}

absl::Status SparseServer::ServeHealthPort(const ServerOptions& options) {
  if (options.health_port < 0) return absl::OkStatus();
  // Only the default health service, no plugins (reflection), and every
  // other method answered UNIMPLEMENTED: nothing else on this plaintext port.
  grpc::ServerBuilder builder;
  builder.SetOption(std::make_unique<NoPlugins>());
  refuse_others_ = std::make_unique<grpc::CallbackGenericService>();
  builder.RegisterCallbackGenericService(refuse_others_.get());
  builder.AddListeningPort(absl::StrCat(options.address, ":", options.health_port),
                           grpc::InsecureServerCredentials(), &health_port_);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);  // as the main port
  health_server_ = builder.BuildAndStart();
  if (health_server_ != nullptr && health_port_ != 0) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat("cannot listen on ", options.address, ":",
                                             options.health_port, " (--health_port)"));
}

void SparseServer::SetModelHealth(const RepositorySnapshot& snapshot) {
  absl::MutexLock lock(&health_mu_);
  if (!health_ready_) return;  // Start() sets it once the servers run
  ApplyModelHealth(snapshot);
}

void SparseServer::ApplyModelHealth(const RepositorySnapshot& snapshot) {
  for (grpc::Server* s : {server_.get(), health_server_.get()}) {
    if (s == nullptr) continue;
    grpc::HealthCheckServiceInterface* health = s->GetHealthCheckService();
    health->SetServingStatus("", true);
    for (const std::string& name : health_models_) {
      if (snapshot.count(name) == 0) health->SetServingStatus(name, false);  // unloaded
    }
    for (const auto& [name, state] : snapshot) {
      health->SetServingStatus(name, !state.versions.empty());
    }
  }
  for (const auto& [name, state] : snapshot) health_models_.insert(name);
}

SparseServer::~SparseServer() {
  Shutdown();
  // gRPC's Wait returns once every call's callback is done, LoadModel's
  // too (its loader task answers after publishing): no load publishes
  // (on_publish, health) after this, while the members go.
  Wait();
  // The core finishes what is queued before the frontends and the
  // repository it points to go.
  core_.reset();
}

void SparseServer::Shutdown(int64_t grace_ms) {
  if (server_ == nullptr) return;
  const auto deadline = std::chrono::system_clock::now() + std::chrono::milliseconds(grace_ms);
  repository_->StopPolling();  // nothing loads while draining
  for (grpc::Server* s : {server_.get(), health_server_.get()}) {
    if (s != nullptr) s->GetHealthCheckService()->Shutdown();  // NOT_SERVING from here on
  }
  // Requests that arrive from now on are refused UNAVAILABLE (retryable)
  // while those admitted finish; then gRPC stops, cancelling what is left
  // at the deadline. (A call that reaches gRPC in its last moment is
  // cancelled by gRPC itself.)
  if (http_ != nullptr) http_->Drain();  // 503 and close, as gRPC's UNAVAILABLE
  core_->Drain(absl::FromChrono(deadline));
  server_->Shutdown(deadline);
  if (health_server_ != nullptr) health_server_->Shutdown(deadline);
  if (http_ != nullptr) http_->Stop();  // waits for the replies being written
}

void SparseServer::Wait() {
  if (server_ != nullptr) server_->Wait();
  if (health_server_ != nullptr) health_server_->Wait();
}

}  // namespace sparse
