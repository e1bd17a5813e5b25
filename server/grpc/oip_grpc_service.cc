#include "server/grpc/oip_grpc_service.h"

#include <chrono>

#include "server/grpc/raw_unary.h"

namespace sparse {

// The calls that answer at once: parse, OipProtocol::Method, serialize.
#define SPARSE_OIP_NOW(Method)                                                              \
  grpc::ServerUnaryReactor* OipGrpcService::Method(grpc::CallbackServerContext* context,        \
                                               const grpc::ByteBuffer* request,             \
                                               grpc::ByteBuffer* response) {                \
    return ServeUnaryNow<inference::Method##Request, inference::Method##Response>(          \
        context, request, response,                                                         \
        [this](const inference::Method##Request& r, inference::Method##Response* out) {     \
          return api_->Method(r, out);                                                      \
        });                                                                                 \
  }
SPARSE_OIP_NOW(ServerLive)
SPARSE_OIP_NOW(ServerReady)
SPARSE_OIP_NOW(ModelReady)
SPARSE_OIP_NOW(ServerMetadata)
SPARSE_OIP_NOW(ModelMetadata)
SPARSE_OIP_NOW(ModelConfig)
SPARSE_OIP_NOW(ModelStatistics)
SPARSE_OIP_NOW(RepositoryIndex)
SPARSE_OIP_NOW(RepositoryModelUnload)
#undef SPARSE_OIP_NOW

grpc::ServerUnaryReactor* OipGrpcService::ModelInfer(grpc::CallbackServerContext* context,
                                                 const grpc::ByteBuffer* request,
                                                 grpc::ByteBuffer* response) {
  return ServeUnary<inference::ModelInferRequest, inference::ModelInferResponse>(
      context, request, response,
      [this, context](const inference::ModelInferRequest& r, inference::ModelInferResponse* out,
                      UnaryDone done, std::chrono::steady_clock::time_point received) {
        api_->ModelInfer(
            r, OipEncoding::kProtobuf, out,
            [context, received](InferRequest* q) { BindToCall(context, received, q); },
            std::move(done));
      });
}

grpc::ServerUnaryReactor* OipGrpcService::RepositoryModelLoad(grpc::CallbackServerContext* context,
                                                          const grpc::ByteBuffer* request,
                                                          grpc::ByteBuffer* response) {
  return ServeUnary<inference::RepositoryModelLoadRequest, inference::RepositoryModelLoadResponse>(
      context, request, response,
      [this](const inference::RepositoryModelLoadRequest& r,
             inference::RepositoryModelLoadResponse*, UnaryDone done) {
        api_->RepositoryModelLoad(r, std::move(done));
      });
}

}  // namespace sparse
