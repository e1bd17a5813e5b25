#include "server/server.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/pem.h"
#include "engine/status_macros.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace sparse {
namespace {

// Plaintext, TLS or mutual TLS, from the options' PEM files.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
    const ServerOptions& options) {
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError("TLS needs both --tls_cert and --tls_key");
  }
  if (options.tls_cert_file.empty()) {
    if (!options.tls_client_ca_file.empty()) {
      return absl::InvalidArgumentError("--tls_client_ca needs --tls_cert and --tls_key");
    }
    return grpc::InsecureServerCredentials();
  }
  grpc::SslServerCredentialsOptions ssl(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  ASSIGN_OR_RETURN(pair.cert_chain, ReadPemFile(options.tls_cert_file, "--tls_cert"));
  ASSIGN_OR_RETURN(pair.private_key, ReadPemFile(options.tls_key_file, "--tls_key"));
  ssl.pem_key_cert_pairs.push_back(std::move(pair));
  if (!options.tls_client_ca_file.empty()) {
    ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPemFile(options.tls_client_ca_file, "--tls_client_ca"));
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

}  // namespace

absl::StatusOr<std::unique_ptr<SparseServer>> SparseServer::Start(
    const ServerOptions& options, std::vector<std::string>* load_errors) {
  if (options.model_control && options.poll_seconds > 0) {
    return absl::InvalidArgumentError(
        "--model_control and --poll_seconds exclude each other: a poll would undo an explicit "
        "UnloadModel");
  }
  if (options.model_control && !options.tls_cert_file.empty() &&
      options.tls_client_ca_file.empty()) {
    return absl::InvalidArgumentError(
        "--model_control with TLS needs --tls_client_ca: only clients with a certificate may "
        "load and unload models");
  }
  auto server = std::unique_ptr<SparseServer>(new SparseServer());
  server->metrics_ = std::make_unique<ServerMetrics>();
  ModelRepository::Options repository_options;
  repository_options.max_batch_rows = options.max_batch_rows;
  const int workers = options.workers > 0
                          ? options.workers
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  repository_options.workers = workers;
  repository_options.max_model_bytes = options.max_model_bytes;
  // Readiness and metrics follow every snapshot. The servers do not exist
  // during the first load; Start() sets their health below.
  SparseServer* s = server.get();
  repository_options.on_publish = [s](const RepositorySnapshot& snapshot) {
    std::map<std::string, int> versions;
    for (const auto& [name, state] : snapshot) {
      versions[name] = static_cast<int>(state.versions.size());
    }
    s->metrics_->SetLoadedVersions(versions);
    s->SetModelHealth(snapshot);
  };
  absl::StatusOr<std::unique_ptr<ModelRepository>> repository =
      ModelRepository::Open(options.model_repository, repository_options, load_errors);
  if (!repository.ok()) return repository.status();
  server->repository_ = *std::move(repository);
  const std::shared_ptr<const RepositorySnapshot> first = server->repository_->snapshot();
  if (ServingVersions(*first) == 0) {
    return absl::NotFoundError(absl::StrCat("no loadable model in ", options.model_repository,
                                            " (expected <model>/<version>/ directories written by "
                                            "sparse-train)"));
  }
  server->pool_ = std::make_unique<WorkerPool>(workers, options.max_queue);
  repository_options.on_publish(*first);
  if (options.metrics_port >= 0) {
    try {
      server->exposer_ = std::make_unique<prometheus::Exposer>(
          absl::StrCat(options.address, ":", options.metrics_port));
    } catch (const std::exception& e) {
      return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", options.address, ":",
                                                 options.metrics_port, " (--metrics_port): ",
                                                 e.what()));
    }
    server->exposer_->RegisterCollectable(server->metrics_->registry());
    server->routing_collector_ = std::make_shared<RoutingCollector>(server->repository_.get());
    server->exposer_->RegisterCollectable(server->routing_collector_);
    const std::vector<int> ports = server->exposer_->GetListeningPorts();
    server->metrics_port_ = ports.empty() ? 0 : ports.front();
  }
  server->service_ = std::make_unique<InferenceService>(
      server->repository_.get(), server->pool_.get(),
      InferenceService::Options{.max_batch_rows = options.max_batch_rows,
                                .inline_max_flops = options.inline_max_flops,
                                .metrics = server->metrics_.get()});
  int64_t message_bytes = options.max_message_bytes;
  if (message_bytes <= 0) {
    // At least 64 MiB, so a wider model loaded later still fits.
    int64_t widest = 1;
    for (const auto& [name, state] : *first) {
      for (const auto& [number, servable] : state.versions) {
        widest = std::max({widest, servable->loaded.sparse->info().input_dim,
                           servable->loaded.sparse->info().output_dim});
      }
    }
    message_bytes = std::clamp<int64_t>(options.max_batch_rows * widest * 4 + (int64_t{1} << 20),
                                        int64_t{64} << 20, int64_t{1} << 30);
  }
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      ServerCredentials(options);
  if (!credentials.ok()) return credentials.status();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat(options.address, ":", options.port), *credentials,
                           &server->port_);
  builder.SetMaxReceiveMessageSize(static_cast<int>(message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(message_bytes));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_concurrent_streams);
  builder.RegisterService(server->service_.get());
  server->oip_service_ = std::make_unique<OipService>(server->repository_.get(), server->service_.get());
  builder.RegisterService(server->oip_service_.get());
  if (options.model_control) {
    server->control_service_ = std::make_unique<ModelControlService>(server->repository_.get());
    builder.RegisterService(server->control_service_.get());
  }
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    if (!options.tls_cert_file.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot start TLS on ", options.address, ":", options.port, ": check that --tls_cert=",
          options.tls_cert_file, " and --tls_key=", options.tls_key_file,
          " hold a valid certificate and its key (gRPC's log above says more), and that the "
          "port is free"));
    }
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.address, ":",
                                               options.port, " (in use or not permitted?)"));
  }
  if (options.health_port >= 0) {
    // Only the default health service, no plugins (reflection), and every
    // other method answered UNIMPLEMENTED: nothing else on this plaintext port.
    grpc::ServerBuilder health_builder;
    health_builder.SetOption(std::make_unique<NoPlugins>());
    server->refuse_others_ = std::make_unique<grpc::CallbackGenericService>();
    health_builder.RegisterCallbackGenericService(server->refuse_others_.get());
    health_builder.AddListeningPort(absl::StrCat(options.address, ":", options.health_port),
                                    grpc::InsecureServerCredentials(), &server->health_port_);
    server->health_server_ = health_builder.BuildAndStart();
    if (server->health_server_ == nullptr || server->health_port_ == 0) {
      return absl::UnavailableError(absl::StrCat("cannot listen on ", options.address, ":",
                                                 options.health_port, " (--health_port)"));
    }
  }
  {
    absl::MutexLock lock(&server->health_mu_);
    server->health_ready_ = true;
  }
  server->SetModelHealth(*server->repository_->snapshot());
  if (options.poll_seconds > 0) {
    server->repository_->StartPolling(std::chrono::milliseconds(
        std::max<int64_t>(1, static_cast<int64_t>(options.poll_seconds * 1000))));
  }
  return server;
}

void SparseServer::SetModelHealth(const RepositorySnapshot& snapshot) {
  absl::MutexLock lock(&health_mu_);
  if (!health_ready_) return;  // Start() sets it once the servers run
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
  Wait();
  // The pool drains before the service and repository it points to go.
  pool_.reset();
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
  service_->Drain(deadline);
  server_->Shutdown(deadline);
  if (health_server_ != nullptr) health_server_->Shutdown(deadline);
}

void SparseServer::Wait() {
  if (server_ != nullptr) server_->Wait();
  if (health_server_ != nullptr) health_server_->Wait();
}

}  // namespace sparse
