// The front of a sharded model (docs/deploy.md, "Sharded models").
//
// ShardSet holds one gRPC channel per shard index. A target may resolve to
// several replicas of that index (a DNS name of a Kubernetes Service, or
// "ipv4:host:port,host:port"): gRPC's round_robin balancer spreads calls
// over them and its client-side health checking (grpc.health.v1, the
// server's overall status, which turns NOT_SERVING when a replica drains)
// takes a replica out until it serves again. A shard that went away is
// reconnected with a back-off of at most `max_reconnect_backoff`.
//
// ShardedModel is the Model a front serves: it routes every row with the
// model's own router (or hash functions) and kernels, so routes equal an
// unsharded server's, calls the shards that hold the rows' experts (a DSM
// row touches at most L shards; an LSH row all N) in parallel with the
// request's deadline, and adds their partial outputs and a0. A shard that
// is down or draining fails the call UNAVAILABLE, one past the deadline
// DEADLINE_EXCEEDED; the serving core then runs each request of the batch
// alone, so only the requests that needed that shard fail.
//
// Thread-safe: Predict from many threads (each blocks on its calls).
#ifndef SPARSE_SHARDING_SHARDED_MODEL_H_
#define SPARSE_SHARDING_SHARDED_MODEL_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/client_tls.h"
#include "engine/expert_router.h"
#include "engine/model.h"
#include "engine/table_hasher.h"
#include "grpcpp/grpcpp.h"
#include "model_store/checkpoint.h"
#include "sparse/v1/inference.grpc.pb.h"
#include "sparse/v1/shard.grpc.pb.h"

namespace sparse {

class ShardSet {
 public:
  struct Options {
    // One gRPC target per shard index, in order.
    std::vector<std::string> targets;
    // Credentials for the calls (TLS when the shards serve TLS).
    std::shared_ptr<grpc::ChannelCredentials> credentials;
    // Arguments every shard channel starts from (e.g. TLS's server name).
    grpc::ChannelArguments channel_args;
    // A lost shard is retried after at most this long (gRPC's reconnect
    // back-off: initial and minimum 100 ms, doubling).
    absl::Duration max_reconnect_backoff = absl::Seconds(2);
    // How long a front's load waits for every shard to serve its version.
    absl::Duration wait_for_shards = absl::Seconds(120);
    // A request without a deadline gives its shard calls this one.
    absl::Duration default_deadline = absl::Seconds(30);
    // Each version a front serves calls every shard with no rows about
    // this often (0.8-1x), a burst of 8 per shard index that round robin
    // spreads over its replicas, so the shards keep it while the front
    // serves it, busy or idle (it must be well under the shards'
    // --shard_retain_seconds: each round may miss a replica when other
    // calls interleave, and the next ones cover it).
    absl::Duration keepalive = absl::Seconds(10);
    // Log lines (keep-alives that fail and work again); default stderr.
    std::function<void(const std::string&)> log;
    // Told of every answered shard call (any thread; may be empty): the
    // shard index, gRPC's code and the seconds from sent to answered.
    std::function<void(int shard, int code, double seconds)> on_call;
  };
  explicit ShardSet(Options options);  // no credentials: plaintext

  // A ShardSet whose channels use `tls` (--shard_tls*), read now. Errors
  // name the --shard_ flag whose file is missing or not PEM.
  static absl::StatusOr<std::unique_ptr<ShardSet>> Create(Options options, const ClientTls& tls);

  int count() const { return static_cast<int>(shards_.size()); }
  const std::string& target(int i) const { return options_.targets[i]; }
  sparse::v1::ShardService::Stub& shard(int i) const { return *shards_[i]; }
  const Options& options() const { return options_; }

  // Waits (up to options().wait_for_shards) until every shard serves
  // `model` version `version` at `precision`, and returns their statuses of
  // it. UNAVAILABLE naming the shards that do not, and why.
  // A shard serving other files under that version (another
  // model.safetensors SHA-256 than `model_sha256`) does not count.
  absl::StatusOr<std::vector<sparse::v1::VersionStatus>> WaitForVersion(
      const std::string& model, int64_t version, Precision precision,
      const std::string& model_sha256) const;

  // A FrontFactory (model_store/model_loader.h) over these shards.
  absl::StatusOr<std::unique_ptr<Model>> MakeFront(const std::string& model, int64_t version,
                                                   Precision precision,
                                                   const Checkpoint& front) const;

 private:
  Options options_;
  // One channel per shard index, held by its two stubs.
  std::vector<std::unique_ptr<sparse::v1::ShardService::Stub>> shards_;
  std::vector<std::unique_ptr<sparse::v1::SparseInference::Stub>> inference_;
};

class ShardedModel : public Model {
 public:
  // Stops the keep-alive calls (waiting for one in flight, at most 1 s).
  ~ShardedModel() override;

  // `shards` must outlive the model. `shard_versions` are the shards'
  // statuses of this version (ShardSet::WaitForVersion).
  static absl::StatusOr<std::unique_ptr<ShardedModel>> Create(
      const ShardSet* shards, const std::string& model, int64_t version, Precision precision,
      const Checkpoint& front, const std::vector<sparse::v1::VersionStatus>& shard_versions);

 private:
  struct Call;
  ShardedModel(ModelInfo info, const ShardSet* shards, std::string model, std::string model_sha256,
               int64_t version, Precision precision, std::optional<ExpertRouter> router,
               std::optional<TableHasher> hasher, std::vector<float> top_bias);
  absl::Status PredictValidated(const float* x, int64_t rows, float* y, PredictStats* stats,
                                Route* route, const PredictOptions& options) const override;
  // A call to shard `shard` of this version, with no rows yet.
  sparse::v1::PartialRequest CallTo(int shard) const;
  // Calls every shard with no rows each options().keepalive until stop_.
  void KeepAlive();
  // One burst of keep-alive calls to shard index `i`; (*failing)[i] says
  // whether the last one failed (logged when that changes).
  void KeepAliveRound(int i, std::vector<bool>* failing);
  // Sends the calls in parallel and waits for every answer.
  absl::Status Fanout(std::vector<std::unique_ptr<Call>>& calls, absl::Time deadline,
                      PredictStats* stats) const;

  const ShardSet* const shards_;
  const std::string model_;
  const std::string model_sha256_;
  const int64_t version_;
  const Precision precision_;
  const std::optional<ExpertRouter> router_;  // DSM
  const std::optional<TableHasher> hasher_;   // LSH
  const std::vector<float> top_bias_;         // a0 (DSM)
  const int64_t d_, o_;
  absl::Notification stop_;
  std::thread keepalive_;  // last: it starts once the rest is built
};

}  // namespace sparse

#endif  // SPARSE_SHARDING_SHARDED_MODEL_H_
