// InferenceService: sparse.v1.SparseInference on gRPC's callback API.
//
// Predict / PredictDense look up the model and check the request's shape and
// every input value on the gRPC thread (so a bad request gets its own code,
// never occupies the queue and is never batched with others). A request whose cost is at most `inline_max_flops` (an LSH table,
// a small expert slice: a few microseconds) then runs right there, as a bare
// gRPC handler would answer: handing it to a worker would cost more than the
// model (a thread wake-up and two cache-cold cores, ~30 us measured, see
// docs/benchmarks.md). Anything dearer goes to the WorkerPool, whose worker
// runs the model and finishes the call, so a gRPC thread never blocks on a
// big GEMV. Queue, route and compute time are measured per request and
// returned in Cost. Thread-safe; the repository and pool must outlive the
// service.
#ifndef SPARSE_SERVER_INFERENCE_SERVICE_H_
#define SPARSE_SERVER_INFERENCE_SERVICE_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "server/metrics.h"
#include "server/model_repository.h"
#include "server/worker_pool.h"
#include "sparse/v1/inference.grpc.pb.h"

namespace sparse {

// Every method is registered raw and parses its own request body
// (server/raw_unary.h), so a body that does not parse gets INVALID_ARGUMENT.
using SparseInferenceRawService = sparse::v1::SparseInference::WithRawCallbackMethod_Predict<
    sparse::v1::SparseInference::WithRawCallbackMethod_PredictDense<
        sparse::v1::SparseInference::WithRawCallbackMethod_ListModels<
            sparse::v1::SparseInference::WithRawCallbackMethod_GetModel<
                sparse::v1::SparseInference::WithRawCallbackMethod_Echo<
                    sparse::v1::SparseInference::WithRawCallbackMethod_GetServerStats<
                        sparse::v1::SparseInference::Service>>>>>>;

class InferenceService final : public SparseInferenceRawService {
 public:
  struct Options {
    int64_t max_batch_rows = 1024;  // larger batches are INVALID_ARGUMENT
    // Requests costing at most this many FLOPs (rows x FLOPs per row of the
    // path asked for) run on the gRPC thread; 0 queues every request.
    int64_t inline_max_flops = 262144;
    ServerMetrics* metrics = nullptr;  // counts every answered request; may be null
  };
  InferenceService(const ModelRepository* repository, WorkerPool* pool, const Options& options);

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

  // The path behind Predict / PredictDense, for other front ends (the Open
  // Inference Protocol): admits `request`, runs it inline or on a worker,
  // fills `response` and calls `done` once, from a gRPC thread or a worker.
  // `request`, `response` and `context` must stay alive until then.
  // `context` may be null for an in-process caller: no deadline, no cancel.
  void Run(grpc::CallbackServerContext* context, const sparse::v1::PredictRequest* request,
           sparse::v1::PredictResponse* response, bool dense,
           std::function<void(grpc::Status)> done);

  // From now on Run() answers UNAVAILABLE ("shutting down", which clients
  // retry elsewhere); waits until every request already admitted is
  // answered, or until `deadline` (then false).
  bool Drain(std::chrono::system_clock::time_point deadline);

 private:
  // Queues an admitted request on its version's batcher.
  void Enqueue(std::shared_ptr<const Servable> servable, bool dense, PendingRequest pending);
  // Asks a worker to take a batch from the servable's batcher and run it.
  void ScheduleDrain(std::shared_ptr<const Servable> servable, bool dense);
  grpc::ServerUnaryReactor* Infer(grpc::CallbackServerContext* context,
                                  const grpc::ByteBuffer* request, grpc::ByteBuffer* response,
                                  bool dense);

  const ModelRepository* const repository_;
  WorkerPool* const pool_;
  const Options options_;
  const std::chrono::steady_clock::time_point start_;
  std::atomic<int64_t> in_flight_{0};
  std::atomic<bool> draining_{false};
};

// sparse.v1.ModelControl: LoadModel / UnloadModel on the repository. Only
// registered when sparse-server runs with --model_control.
class ModelControlService final
    : public sparse::v1::ModelControl::WithRawCallbackMethod_LoadModel<
          sparse::v1::ModelControl::WithRawCallbackMethod_UnloadModel<
              sparse::v1::ModelControl::Service>> {
 public:
  explicit ModelControlService(ModelRepository* repository);
  grpc::ServerUnaryReactor* LoadModel(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* UnloadModel(grpc::CallbackServerContext* context,
                                        const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* response) override;

 private:
  ModelRepository* const repository_;
};

}  // namespace sparse

#endif  // SPARSE_SERVER_INFERENCE_SERVICE_H_
