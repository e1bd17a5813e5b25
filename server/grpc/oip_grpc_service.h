// OipGrpcService: the Open Inference Protocol on gRPC
// (inference.GRPCInferenceService, proto/inference/grpc_service.proto): each
// RPC parses its body and hands the message to OipProtocol
// (server/oip/oip_protocol.h), which does the work, on the same port, models
// and request path as sparse.v1 (DESIGN.md §4).
#ifndef SPARSE_SERVER_GRPC_OIP_GRPC_SERVICE_H_
#define SPARSE_SERVER_GRPC_OIP_GRPC_SERVICE_H_

#include "inference/grpc_service.grpc.pb.h"
#include "server/oip/oip_protocol.h"

namespace sparse {

// Every method is registered raw and parses its own request body
// (server/grpc/raw_unary.h), so a body that does not parse gets INVALID_ARGUMENT.
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

class OipGrpcService final : public OipRawService {
 public:
  explicit OipGrpcService(OipProtocol* api) : api_(api) {}

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
  OipProtocol* const api_;
};

}  // namespace sparse

#endif  // SPARSE_SERVER_GRPC_OIP_GRPC_SERVICE_H_
