// InferenceService: sparse.v1.SparseInference on gRPC's callback API.
//
// A call never blocks a gRPC thread: Predict / PredictDense look up the
// model and check the request's shape on the gRPC thread (so bad requests
// get their own code and never occupy the queue), then hand it to the
// WorkerPool, whose worker runs the model and finishes the call. Queue, route and compute time are measured
// per request and returned in Cost. Thread-safe; the repository and pool
// must outlive the service.
#ifndef SPARSE_SERVER_INFERENCE_SERVICE_H_
#define SPARSE_SERVER_INFERENCE_SERVICE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "server/model_repository.h"
#include "server/worker_pool.h"
#include "sparse/v1/inference.grpc.pb.h"

namespace sparse {

class InferenceService final : public sparse::v1::SparseInference::CallbackService {
 public:
  // `max_batch_rows`: larger batches are INVALID_ARGUMENT.
  InferenceService(const ModelRepository* repository, WorkerPool* pool, int64_t max_batch_rows);

  grpc::ServerUnaryReactor* Predict(grpc::CallbackServerContext* context,
                                    const sparse::v1::PredictRequest* request,
                                    sparse::v1::PredictResponse* response) override;
  grpc::ServerUnaryReactor* PredictDense(grpc::CallbackServerContext* context,
                                         const sparse::v1::PredictRequest* request,
                                         sparse::v1::PredictResponse* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const sparse::v1::ListModelsRequest* request,
                                       sparse::v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* GetModel(grpc::CallbackServerContext* context,
                                     const sparse::v1::GetModelRequest* request,
                                     sparse::v1::ModelStatus* response) override;
  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* context,
                                 const sparse::v1::EchoRequest* request,
                                 sparse::v1::EchoResponse* response) override;

 private:
  grpc::ServerUnaryReactor* Infer(grpc::CallbackServerContext* context,
                                  const sparse::v1::PredictRequest* request,
                                  sparse::v1::PredictResponse* response, bool dense);

  const ModelRepository* const repository_;
  WorkerPool* const pool_;
  const int64_t max_batch_rows_;
};

}  // namespace sparse

#endif  // SPARSE_SERVER_INFERENCE_SERVICE_H_
