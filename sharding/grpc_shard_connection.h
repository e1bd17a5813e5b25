// ShardConnection over gRPC: what a front's ShardSet uses for each shard
// index (docs/deploy.md, "Sharded models").
//
// One channel per target, shared by the two services' stubs. A target may
// resolve to several replicas of its index (a DNS name of a Kubernetes
// Service, or "ipv4:host:port,host:port"): gRPC's round_robin balancer
// spreads calls over them and its client-side health checking
// (grpc.health.v1, the server's overall status, which turns NOT_SERVING
// when a replica drains) takes a replica out until it serves again. A call
// refused UNAVAILABLE or CANCELLED is retried twice (10-50 ms apart). A
// shard that went away is reconnected with a back-off of at most
// `max_reconnect_backoff`.
#ifndef SPARSE_SHARDING_GRPC_SHARD_CONNECTION_H_
#define SPARSE_SHARDING_GRPC_SHARD_CONNECTION_H_

#include <memory>
#include <string>

#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "sharding/shard_connection.h"
#include "sparse/v1/inference.grpc.pb.h"
#include "sparse/v1/shard.grpc.pb.h"

namespace sparse {

class GrpcShardConnection : public ShardConnection {
 public:
  // A channel to `target` from `args` (e.g. TLS's server name) and
  // `credentials`, with the front's service config and back-off. Nothing
  // connects until the first call.
  GrpcShardConnection(const std::string& target,
                      const std::shared_ptr<grpc::ChannelCredentials>& credentials,
                      grpc::ChannelArguments args, absl::Duration max_reconnect_backoff);

  void StartComputePartial(const sparse::v1::PartialRequest* request, absl::Time deadline,
                           sparse::v1::PartialResponse* response,
                           std::function<void(absl::Status)> done) override;
  absl::Status ComputePartial(const sparse::v1::PartialRequest& request, absl::Time deadline,
                              sparse::v1::PartialResponse* response) override;
  absl::Status GetModel(const sparse::v1::GetModelRequest& request, absl::Time deadline,
                        sparse::v1::ModelStatus* status) override;

 private:
  std::unique_ptr<sparse::v1::ShardService::Stub> shard_;
  std::unique_ptr<sparse::v1::SparseInference::Stub> inference_;
};

}  // namespace sparse

#endif  // SPARSE_SHARDING_GRPC_SHARD_CONNECTION_H_
