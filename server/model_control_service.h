// sparse.v1.ModelControl: the frontend of the model life cycle's explicit
// control (model_store/model_repository.h: LoadModel, UnloadModel).
#ifndef SPARSE_SERVER_MODEL_CONTROL_SERVICE_H_
#define SPARSE_SERVER_MODEL_CONTROL_SERVICE_H_

#include "model_store/model_repository.h"
#include "server/core/worker_pool.h"
#include "sparse/v1/inference.grpc.pb.h"

namespace sparse {

// sparse.v1.ModelControl: LoadModel / UnloadModel on the repository. Only
// registered when sparse-server runs with --model_control. A load (seconds
// for a big checkpoint) runs on one of the service's own loader threads,
// never on one of gRPC's: two models load side by side (each model has its
// own lock in the repository), and the destructor finishes the loads asked
// for and joins the threads.
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
  WorkerPool loader_{2, 64};  // loads waiting beyond 64: UNAVAILABLE
};

}  // namespace sparse

#endif  // SPARSE_SERVER_MODEL_CONTROL_SERVICE_H_
