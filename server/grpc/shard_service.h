// ShardService: sparse.v1.ShardService, the internal RPC a sharded model's
// front calls on its shard servers (docs/deploy.md, "Sharded models"). A
// frontend over the serving core like the others: a call is admitted (its
// rows and its route checked), queued, deadlined, drained and measured as
// any request is, and fails alone.
//
// A call names the version and precision its front serves and the shard it
// means; the core's admission checks them (InferRequest::shard_call): a
// server holding another version answers NOT_FOUND, another precision or
// another shard index FAILED_PRECONDITION. Each call marks its version used,
// so the repository keeps a version while fronts still route with it.
// Thread-safe; the core must outlive the service.
#ifndef SPARSE_SERVER_GRPC_SHARD_SERVICE_H_
#define SPARSE_SERVER_GRPC_SHARD_SERVICE_H_

#include "server/core/inference_core.h"
#include "sparse/v1/shard.grpc.pb.h"

namespace sparse {

using ShardRawService =
    sparse::v1::ShardService::WithRawCallbackMethod_ComputePartial<sparse::v1::ShardService::Service>;

class ShardService final : public ShardRawService {
 public:
  explicit ShardService(InferenceCore* core);

  grpc::ServerUnaryReactor* ComputePartial(grpc::CallbackServerContext* context,
                                           const grpc::ByteBuffer* request,
                                           grpc::ByteBuffer* response) override;

 private:
  InferenceCore* const core_;
};

}  // namespace sparse

#endif  // SPARSE_SERVER_GRPC_SHARD_SERVICE_H_
