// OipService: the Open Inference Protocol on gRPC
// (inference.GRPCInferenceService, proto/inference/grpc_service.proto): each
// RPC parses its body and hands the message to OpenInference
// (server/open_inference.h), which does the work, on the same port, models
// and request path as sparse.v1 (DESIGN.md §4).
#ifndef SPARSE_SERVER_OIP_SERVICE_H_
#define SPARSE_SERVER_OIP_SERVICE_H_

#include "inference/grpc_service.grpc.pb.h"
#include "server/open_inference.h"

namespace sparse {

// Every method is registered raw and parses its own request body
// (server/raw_unary.h), so a body that does not parse gets INVALID_ARGUMENT.
using OipRawService = inference::GRPCInferenceService::WithRawCallbackMethod_ServerLive<
    inference::GRPCInferenceService::WithRawCallbackMethod_ServerReady<
        inference::GRPCInferenceService::WithRawCallbackMethod_ModelReady<
            inference::GRPCInferenceService::WithRawCallbackMethod_ServerMetadata<
                inference::GRPCInferenceService::WithRawCallbackMethod_ModelMetadata<
                    inference::GRPCInferenceService::WithRawCallbackMethod_ModelInfer<
                        inference::GRPCInferenceService::WithRawCallbackMethod_ModelConfig<
                            inference::GRPCInferenceService::WithRawCallbackMethod_ModelStatistics<
                                inference::GRPCInferenceService::WithRawCallbackMethod_RepositoryIndex<
                                    inference::GRPCInferenceService::
                                        WithRawCallbackMethod_RepositoryModelLoad<
                                            inference::GRPCInferenceService::
                                                WithRawCallbackMethod_RepositoryModelUnload<
                                                    inference::GRPCInferenceService::
                                                        Service>>>>>>>>>>>;

class OipService final : public OipRawService {
 public:
  explicit OipService(OpenInference* api) : api_(api) {}

#define SPARSE_OIP_RPC(Method)                                                        \
  grpc::ServerUnaryReactor* Method(grpc::CallbackServerContext* context,              \
                                   const grpc::ByteBuffer* request,                   \
                                   grpc::ByteBuffer* response) override;
  SPARSE_OIP_RPC(ServerLive)
  SPARSE_OIP_RPC(ServerReady)
  SPARSE_OIP_RPC(ModelReady)
  SPARSE_OIP_RPC(ServerMetadata)
  SPARSE_OIP_RPC(ModelMetadata)
  SPARSE_OIP_RPC(ModelInfer)
  SPARSE_OIP_RPC(ModelConfig)
  SPARSE_OIP_RPC(ModelStatistics)
  SPARSE_OIP_RPC(RepositoryIndex)
  SPARSE_OIP_RPC(RepositoryModelLoad)
  SPARSE_OIP_RPC(RepositoryModelUnload)
#undef SPARSE_OIP_RPC

 private:
  OpenInference* const api_;
};

}  // namespace sparse

#endif  // SPARSE_SERVER_OIP_SERVICE_H_
