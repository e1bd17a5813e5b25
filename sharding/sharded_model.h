// The front of a sharded model (docs/deploy.md, "Sharded models").
//
// ShardSet holds one ShardConnection per shard index (shard_connection.h):
// in a server a gRPC channel each (grpc_shard_connection.h: round robin
// over a target's replicas, health checking, retries, reconnect back-off),
// in tests in-process fakes.
//
// ShardedModel is the Model a front serves: it routes every row with the
// model's own router (or hash functions) and kernels, so routes equal an
// unsharded server's, calls the shards that hold the rows' experts (a DSM
// row touches at most L shards; an LSH row all N) in parallel with the
// request's deadline, and adds their partial outputs and a0. A shard that
// is down or draining fails the call UNAVAILABLE, one past the deadline
// DEADLINE_EXCEEDED; the serving core then runs each request of the batch
// alone, so only the requests that needed that shard fail. The shards'
// FLOPs, bytes and compute time go into the PredictStats; their major page
// faults (Cost.major_faults) are reported on the calling thread with
// AddMajorFaultsTakenElsewhere (common/page_faults.h), where the core's
// MajorFaultCounter around the compute counts them.
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
#include "sharding/shard_connection.h"
#include "sparse/v1/inference.pb.h"
#include "sparse/v1/shard.pb.h"

namespace sparse {

class ShardSet {
 public:
  // Every field has a default, so that designated initializers may name
  // only some.
  struct Options {
    // One gRPC target per shard index, in order.
    std::vector<std::string> targets = {};
    // Credentials for the calls (TLS when the shards serve TLS).
    std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr;
    // Arguments every shard channel starts from (e.g. TLS's server name).
    grpc::ChannelArguments channel_args = {};
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
    std::function<void(const std::string&)> log = nullptr;
    // Told of every answered shard call (any thread; may be empty): the
    // shard index, gRPC's code and the seconds from sent to answered.
    std::function<void(int shard, int code, double seconds)> on_call = nullptr;
    // Told of every shard call as it is sent (any thread; may be empty);
    // on_call follows once for each.
    std::function<void(int shard)> on_send = nullptr;
  };
  // A gRPC channel per target (GrpcShardConnection); no credentials:
  // plaintext.
  explicit ShardSet(Options options);
  // Shards reached through `connections`, one per index (tests' fakes);
  // options.targets names them (each index without a target is named
  // "connection i"). The gRPC options are not used.
  ShardSet(Options options, std::vector<std::unique_ptr<ShardConnection>> connections);

  // A ShardSet whose channels use `tls` (--shard_tls*), read now. Errors
  // name the --shard_ flag whose file is missing or not PEM.
  static absl::StatusOr<std::unique_ptr<ShardSet>> Create(Options options, const ClientTls& tls);

  int count() const { return static_cast<int>(shards_.size()); }
  const std::string& target(int i) const { return options_.targets[i]; }
  ShardConnection& shard(int i) const { return *shards_[i]; }
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
  // Asks shard `i` for its versions of `model` (WaitForVersion): sets
  // *found to its status of `version` when that counts (the precision, the
  // files and the index match), and returns what it answered, for the
  // error when it does not.
  std::string AskForVersion(int i, const std::string& model, int64_t version,
                             Precision precision, const std::string& model_sha256,
                             sparse::v1::VersionStatus* found) const;

  Options options_;
  std::vector<std::unique_ptr<ShardConnection>> shards_;  // one per index
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
  using Calls = std::vector<std::unique_ptr<Call>>;
  absl::Status PredictValidated(const float* x, int64_t rows, float* y, PredictStats* stats,
                                Route* route, const PredictOptions& options) const override;
  // A call to shard `shard` of this version, with no rows yet.
  sparse::v1::PartialRequest CallTo(int shard) const;
  // (*calls)[shard], made with CallTo when it is still null.
  Call& CallFor(int shard, Calls* calls) const;
  // Routes every row and gives each shard, in (*calls)[shard] (one per
  // index), the rows whose experts it holds with their expert ids (DSM).
  absl::Status PlanDsm(const float* x, int64_t rows, PredictStats* stats, Route* route,
                       Calls* calls) const;
  // Hashes every row and gives each shard every row with the keys of its
  // tables (LSH).
  absl::Status PlanLsh(const float* x, int64_t rows, PredictStats* stats, Route* route,
                       Calls* calls) const;
  // y = a0 plus the answered calls' partial outputs; an LSH route gets the
  // shards' misses.
  absl::Status AddPartials(const Calls& calls, int64_t rows, float* y, PredictStats* stats,
                           Route* route) const;
  // Calls every shard with no rows each options().keepalive until stop_.
  void KeepAlive();
  // One burst of keep-alive calls to shard index `i`; (*failing)[i] says
  // whether the last one failed (logged when that changes).
  void KeepAliveRound(int i, std::vector<bool>* failing);
  // Sends the calls in parallel and waits for every answer.
  absl::Status Fanout(const Calls& calls, absl::Time deadline, PredictStats* stats) const;
  // What the request fails with when call `c` failed.
  absl::Status CallError(const Call& c) const;

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
