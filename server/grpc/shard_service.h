// ShardService: sparse.v1.ShardService, the internal RPC a sharded model's
// front calls on its shard servers (docs/deploy.md, "Sharded models"). A
// frontend over the serving core like the others: a call is admitted (its
// rows and its route checked), queued, deadlined, drained and measured as
// any request is, and fails alone.
//
// A call names the version and precision its front serves and the shard it
// means; a server holding another version answers NOT_FOUND, another
// precision or another shard index FAILED_PRECONDITION. Each call marks its
// version used, so the repository keeps a version while fronts still route
// with it (ModelRepository::Options::retain_in_use).
// Thread-safe; the repository and the core must outlive the service.
#ifndef SPARSE_SERVER_GRPC_SHARD_SERVICE_H_
#define SPARSE_SERVER_GRPC_SHARD_SERVICE_H_

#include "engine/sharding.h"
#include "model_store/model_repository.h"
#include "server/core/inference_core.h"
#include "sparse/v1/shard.grpc.pb.h"

namespace sparse {

using ShardRawService =
    sparse::v1::ShardService::WithRawCallbackMethod_ComputePartial<sparse::v1::ShardService::Service>;

class ShardService final : public ShardRawService {
 public:
  ShardService(const ModelRepository* repository, InferenceCore* core, ShardSpec shard);

  grpc::ServerUnaryReactor* ComputePartial(grpc::CallbackServerContext* context,
                                           const grpc::ByteBuffer* request,
                                           grpc::ByteBuffer* response) override;

 private:
  const ModelRepository* const repository_;
  InferenceCore* const core_;
  const ShardSpec shard_;
};

}  // namespace sparse

#endif  // SPARSE_SERVER_GRPC_SHARD_SERVICE_H_
