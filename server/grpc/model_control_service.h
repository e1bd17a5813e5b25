// sparse.v1.ModelControl: a frontend of the model life cycle's explicit
// control (server/core/model_control.h).
#ifndef SPARSE_SERVER_GRPC_MODEL_CONTROL_SERVICE_H_
#define SPARSE_SERVER_GRPC_MODEL_CONTROL_SERVICE_H_

#include "server/core/model_control.h"
#include "sparse/v1/inference.grpc.pb.h"

namespace sparse {

// sparse.v1.ModelControl: LoadModel / UnloadModel. Only registered when
// sparse-server runs with --model_control. Loads run on ModelControl's
// loader threads, never on one of gRPC's.
class ModelControlService final
    : public sparse::v1::ModelControl::WithRawCallbackMethod_LoadModel<
          sparse::v1::ModelControl::WithRawCallbackMethod_UnloadModel<
              sparse::v1::ModelControl::Service>> {
 public:
  explicit ModelControlService(ModelControl* control);
  grpc::ServerUnaryReactor* LoadModel(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* UnloadModel(grpc::CallbackServerContext* context,
                                        const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* response) override;

 private:
  ModelControl* const control_;
};

}  // namespace sparse

#endif  // SPARSE_SERVER_GRPC_MODEL_CONTROL_SERVICE_H_
