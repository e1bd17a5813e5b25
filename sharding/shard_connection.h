// The calls a sharded model's front makes to one shard index
// (docs/deploy.md, "Sharded models"). ShardSet (sharded_model.h) holds one
// per index and ShardedModel makes every call through it: over gRPC in a
// server (GrpcShardConnection, grpc_shard_connection.h), to in-process fake
// shards in tests (sharded_model_test.cc).
//
// Errors are the shard's answer as its transport gave it, with gRPC's codes
// (absl::StatusCode uses the same numbers): UNAVAILABLE for a shard that
// cannot be reached or is draining, DEADLINE_EXCEEDED past the deadline,
// and whatever the shard itself answered (NOT_FOUND for a version it does
// not serve, FAILED_PRECONDITION for other files under that version).
//
// Thread-safe: any number of calls at once, from any thread.
#ifndef SPARSE_SHARDING_SHARD_CONNECTION_H_
#define SPARSE_SHARDING_SHARD_CONNECTION_H_

#include <functional>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "sparse/v1/inference.pb.h"
#include "sparse/v1/shard.pb.h"

namespace sparse {

class ShardConnection {
 public:
  virtual ~ShardConnection() = default;

  // sparse.v1.ShardService.ComputePartial, started: returns at once and
  // runs `done` once, on any thread (possibly this one, before returning),
  // when `response` holds the answer or the call failed. `request` and
  // `response` must live until `done` has run.
  virtual void StartComputePartial(const sparse::v1::PartialRequest* request, absl::Time deadline,
                                   sparse::v1::PartialResponse* response,
                                   std::function<void(absl::Status)> done) = 0;

  // The same call, blocking (the keep-alive's calls with no rows).
  virtual absl::Status ComputePartial(const sparse::v1::PartialRequest& request,
                                      absl::Time deadline,
                                      sparse::v1::PartialResponse* response) = 0;

  // sparse.v1.SparseInference.GetModel, blocking: the shard's versions of a
  // model (ShardSet::WaitForVersion). Not waiting for the shard to become
  // reachable: one that cannot be reached fails at once with the reason.
  virtual absl::Status GetModel(const sparse::v1::GetModelRequest& request, absl::Time deadline,
                                sparse::v1::ModelStatus* status) = 0;
};

}  // namespace sparse

#endif  // SPARSE_SHARDING_SHARD_CONNECTION_H_
