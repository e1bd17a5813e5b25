#include "server/model_control_service.h"

#include <memory>

#include "server/inference_service.h"
#include "server/raw_unary.h"

namespace sparse {

ModelControlService::ModelControlService(ModelRepository* repository) : repository_(repository) {}

grpc::ServerUnaryReactor* ModelControlService::LoadModel(grpc::CallbackServerContext* context,
                                                         const grpc::ByteBuffer* request,
                                                         grpc::ByteBuffer* response) {
  return ServeUnary<sparse::v1::LoadModelRequest, sparse::v1::ModelStatus>(
      context, request, response,
      [this](const sparse::v1::LoadModelRequest& r, sparse::v1::ModelStatus* out, UnaryDone done) {
        // Loading reads, validates and warms up whole checkpoints (seconds
        // for a big one): on the service's loader thread, never on one of
        // gRPC's. The server's shutdown waits for the call.
        auto load = std::make_shared<UnaryDone>(std::move(done));
        const bool queued = loader_.Submit([this, &r, out, load] {
          absl::StatusOr<ModelState> state = repository_->LoadModel(r.model());
          if (state.ok()) FillModelStatus(r.model(), *state, out);
          (*load)(state.status());
        });
        if (!queued) {
          (*load)(absl::UnavailableError(
              "too many LoadModel calls wait already; retry when they are done"));
        }
      });
}

grpc::ServerUnaryReactor* ModelControlService::UnloadModel(grpc::CallbackServerContext* context,
                                                           const grpc::ByteBuffer* request,
                                                           grpc::ByteBuffer* response) {
  return ServeUnaryNow<sparse::v1::UnloadModelRequest, sparse::v1::UnloadModelResponse>(
      context, request, response,
      [this](const sparse::v1::UnloadModelRequest& r, sparse::v1::UnloadModelResponse*) {
        return repository_->UnloadModel(r.model());
      });
}

}  // namespace sparse
