#include "server/server.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace sparse {

absl::StatusOr<std::unique_ptr<SparseServer>> SparseServer::Start(
    const ServerOptions& options, std::vector<std::string>* load_errors) {
  auto server = std::unique_ptr<SparseServer>(new SparseServer());
  absl::StatusOr<std::unique_ptr<ModelRepository>> repository =
      ModelRepository::Load(options.model_repository, load_errors);
  if (!repository.ok()) return repository.status();
  server->repository_ = *std::move(repository);
  if (server->repository_->models().empty()) {
    return absl::NotFoundError(absl::StrCat("no loadable model in ", options.model_repository,
                                            " (expected <model>/<version>/ directories written by "
                                            "sparse-train)"));
  }
  const int workers = options.workers > 0
                          ? options.workers
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  server->pool_ = std::make_unique<WorkerPool>(workers, options.max_queue);
  server->service_ = std::make_unique<InferenceService>(
      server->repository_.get(), server->pool_.get(),
      InferenceService::Options{.max_batch_rows = options.max_batch_rows,
                                .inline_max_flops = options.inline_max_flops});
  int64_t message_bytes = options.max_message_bytes;
  if (message_bytes <= 0) {
    int64_t widest = 1;
    for (const auto& [name, versions] : server->repository_->models()) {
      for (const auto& [number, servable] : versions) {
        widest = std::max({widest, servable->loaded.sparse->info().input_dim,
                           servable->loaded.sparse->info().output_dim});
      }
    }
    message_bytes = std::min<int64_t>(options.max_batch_rows * widest * 4 + (int64_t{1} << 20),
                                      int64_t{1} << 30);
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat(options.address, ":", options.port),
                           grpc::InsecureServerCredentials(), &server->port_);
  builder.SetMaxReceiveMessageSize(static_cast<int>(message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(message_bytes));
  builder.RegisterService(server->service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.address, ":",
                                               options.port, " (in use or not permitted?)"));
  }
  grpc::HealthCheckServiceInterface* health = server->server_->GetHealthCheckService();
  health->SetServingStatus("", true);
  for (const auto& [name, unused] : server->repository_->models()) {
    health->SetServingStatus(name, true);
  }
  return server;
}

SparseServer::~SparseServer() {
  Shutdown();
  Wait();
  // The pool drains before the service and repository it points to go.
  pool_.reset();
}

void SparseServer::Shutdown(int64_t grace_ms) {
  if (server_ == nullptr) return;
  server_->GetHealthCheckService()->Shutdown();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(grace_ms));
}

void SparseServer::Wait() {
  if (server_ != nullptr) server_->Wait();
}

}  // namespace sparse
