#include "server/grpc/model_control_service.h"

#include <memory>

#include "server/grpc/sparse_v1_messages.h"
#include "server/grpc/raw_unary.h"

namespace sparse {

ModelControlService::ModelControlService(ModelControl* control) : control_(control) {}

grpc::ServerUnaryReactor* ModelControlService::LoadModel(grpc::CallbackServerContext* context,
                                                         const grpc::ByteBuffer* request,
                                                         grpc::ByteBuffer* response) {
  return ServeUnary<sparse::v1::LoadModelRequest, sparse::v1::ModelStatus>(
      context, request, response,
      [this](const sparse::v1::LoadModelRequest& r, sparse::v1::ModelStatus* out, UnaryDone done) {
        control_->Load(r.model(), [out, done = std::move(done)](absl::StatusOr<ModelStatus> state) {
          if (state.ok()) ToModelStatusProto(*state, out);
          done(state.status());
        });
      });
}

grpc::ServerUnaryReactor* ModelControlService::UnloadModel(grpc::CallbackServerContext* context,
                                                           const grpc::ByteBuffer* request,
                                                           grpc::ByteBuffer* response) {
  return ServeUnaryNow<sparse::v1::UnloadModelRequest, sparse::v1::UnloadModelResponse>(
      context, request, response,
      [this](const sparse::v1::UnloadModelRequest& r, sparse::v1::UnloadModelResponse*) {
        return control_->Unload(r.model());
      });
}

}  // namespace sparse
