// SparseInferenceService: sparse.v1.SparseInference on gRPC's callback API, a
// frontend over the serving core (server/core/inference_core.h).
//
// Predict / PredictDense translate the request into the core's InferRequest
// (the inputs are not copied), hand it to InferenceCore::Infer, and translate
// the answer back; the core admits it, runs it inline or on a worker, and
// measures its cost. The model listing reads the core's read API
// (server/core/model_reads.h). Thread-safe; the core must outlive the service.
#ifndef SPARSE_SERVER_GRPC_SPARSE_INFERENCE_SERVICE_H_
#define SPARSE_SERVER_GRPC_SPARSE_INFERENCE_SERVICE_H_

#include <chrono>
#include <cstdint>

#include "absl/status/status.h"
#include "server/core/inference_core.h"
#include "sparse/v1/inference.grpc.pb.h"

namespace sparse {

// Every method is registered raw and parses its own request body
// (server/grpc/raw_unary.h), so a body that does not parse gets INVALID_ARGUMENT.
using SparseInferenceRawService = sparse::v1::SparseInference::WithRawCallbackMethod_Predict<
    sparse::v1::SparseInference::WithRawCallbackMethod_PredictDense<
        sparse::v1::SparseInference::WithRawCallbackMethod_ListModels<
            sparse::v1::SparseInference::WithRawCallbackMethod_GetModel<
                sparse::v1::SparseInference::WithRawCallbackMethod_Echo<
                    sparse::v1::SparseInference::WithRawCallbackMethod_GetServerStats<
                        sparse::v1::SparseInference::Service>>>>>>;

class SparseInferenceService final : public SparseInferenceRawService {
 public:
  explicit SparseInferenceService(InferenceCore* core);

  // sparse.v1.SparseInference; each body is parsed as the method's request.
  grpc::ServerUnaryReactor* Predict(grpc::CallbackServerContext* context,
                                    const grpc::ByteBuffer* request,
                                    grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* PredictDense(grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetModel(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* context,
                                 const grpc::ByteBuffer* request,
                                 grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetServerStats(grpc::CallbackServerContext* context,
                                           const grpc::ByteBuffer* request,
                                           grpc::ByteBuffer* response) override;

 private:
  grpc::ServerUnaryReactor* Infer(grpc::CallbackServerContext* context,
                                  const grpc::ByteBuffer* request, grpc::ByteBuffer* response,
                                  bool dense);

  InferenceCore* const core_;
  const std::chrono::steady_clock::time_point start_;
};

}  // namespace sparse

#endif  // SPARSE_SERVER_GRPC_SPARSE_INFERENCE_SERVICE_H_
