// InferenceCore: the serving core, free of any protocol (DESIGN.md §2, §5).
//
// Every frontend (sparse.v1 and the Open Inference Protocol on gRPC, and
// in-process callers) sends each prediction through Infer():
//
//   1. Admission, once: the model and version exist (the repository's
//      snapshot), the path exists (a dense twin for `dense`), the shape is
//      right, the batch within max_batch_rows, every input finite. A bad
//      request gets its own error here, never occupies a queue and never
//      joins a batch.
//   2. A request costing at most `inline_max_flops` (an LSH table, a small
//      expert slice: a few microseconds) runs on the caller's thread: handing
//      it to a worker would cost more than the model (~30 us measured,
//      docs/benchmarks.md).
//   3. Anything dearer goes to the worker pool: through its version's
//      dynamic batcher when the model's config.pbtxt asks for batching,
//      alone otherwise. The batching state is the core's, one Batcher per
//      servable and path, created on first use.
//   4. Whatever path it took, one function runs it (RunBatch) and one
//      builds its answer, with its cost (FLOPs, dense FLOPs, queue, route and
//      compute time).
//
// `done` runs once per request, with an absl::Status; a frontend turns it
// into its protocol's status in one place. Drain() stops admitting and
// waits (on a condition, not a poll) for what was admitted.
//
// Thread-safe. The repository must outlive the core; the destructor finishes
// every queued request.
#ifndef SPARSE_SERVER_CORE_INFERENCE_CORE_H_
#define SPARSE_SERVER_CORE_INFERENCE_CORE_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "engine/sharding.h"
#include "server/core/admission_gate.h"
#include "server/core/batcher.h"
#include "server/core/infer.h"
#include "server/core/model_reads.h"
#include "server/core/statistics.h"
#include "server/core/worker_pool.h"

namespace sparse {

class ModelRepository;  // model_store/model_repository.h

class InferenceCore {
 public:
  struct Options {
    int workers = 1;           // threads that run inference (>= 1)
    int64_t max_queue = 1024;  // tasks waiting for a worker; beyond it UNAVAILABLE
    int64_t max_batch_rows = 1024;  // larger requests are INVALID_ARGUMENT
    // Requests costing at most this many FLOPs (rows x FLOPs per row of the
    // path asked for) run on the caller's thread; 0 queues every request.
    int64_t inline_max_flops = 262144;
    // Called once per answered request, just before `done` (metrics). The
    // response is filled only when the status is OK. May be empty.
    std::function<void(const InferRequest&, const absl::Status&, const InferResponse&)> observe;
    // The part of its models this server serves when it is a shard
    // (--shard): what InferRequest::shard_call is checked against.
    std::optional<ShardSpec> shard = std::nullopt;
  };

  InferenceCore(const ModelRepository* repository, const Options& options);
  ~InferenceCore();
  InferenceCore(const InferenceCore&) = delete;
  InferenceCore& operator=(const InferenceCore&) = delete;

  // Admits `request`, runs it on this thread or a worker, fills `response`
  // and calls `done` once. `request` (and the inputs it points to) and
  // `response` must stay alive until then.
  // Errors: NOT_FOUND (model, version or dense twin), UNAVAILABLE (no
  // version loads, queue full, draining), FAILED_PRECONDITION (no dense twin
  // for a routed model), INVALID_ARGUMENT (shape, size, a value not finite,
  // an output that overflows), DEADLINE_EXCEEDED / CANCELLED while queued.
  void Infer(const InferRequest& request, InferResponse* response, InferDone done);

  // From now on Infer() answers UNAVAILABLE ("shutting down", which clients
  // retry elsewhere); waits until every request already admitted is
  // answered (true), or until `deadline` (false).
  bool Drain(absl::Time deadline);

  // Requests admitted and not yet answered.
  int64_t in_flight() const;
  // Whether Drain() has been called: every new request is refused.
  bool draining() const;

  // --- Reads (server/core/model_reads.h), each from the current snapshot.

  // The version `version` of `model` (0: the newest loaded), its sparse
  // path. NOT_FOUND names the model or version asked for and what is
  // loaded; UNAVAILABLE when the model is known but no version of it loads.
  absl::StatusOr<ModelHandle> Resolve(absl::string_view model, int64_t version) const;
  // Every model the repository knows, by name, and one of them (NOT_FOUND
  // as Resolve words it). With ModelReads::kResidency each mapped
  // version's residency is measured (mincore; see model_reads.h for the cost).
  std::vector<ModelStatus> Models(ModelReads reads = ModelReads::kFixed) const;
  absl::StatusOr<ModelStatus> Model(absl::string_view model,
                                    ModelReads reads = ModelReads::kFixed) const;
  // Versions serving across every model (0: the server is not ready).
  size_t ServingVersions() const;
  // The widest input (d) of the loaded versions of `model`; 0 when none is
  // loaded. Cheap (no status is built): a frontend bounds a body with it.
  int64_t WidestInput(absl::string_view model) const;
  // The model directories under the repository's root, loaded or not (a
  // repository index); *ec is set when the listing stopped part way.
  std::vector<std::string> ModelDirectories(std::error_code* ec) const;
  // Model directories that serve nothing, and why: "no version directory
  // to serve ..." or a refused name (ending in ".dense"). Not in Models().
  std::map<std::string, std::string> NotServed() const;
  // Every serving version's sparse-path routing since its warm-up, and the
  // residency of its mapped weights now (mincore, as ModelReads::kResidency).
  std::vector<VersionRouting> Routing() const;
  // The statistics of one path of a loaded version: zeros until a request
  // for it is admitted (server/core/statistics.h).
  PathStatistics Statistics(const ModelHandle& path) const;
  // Requests in flight and queued per serving version and path, the
  // workers' use, and the versions that failed to load: what metrics
  // export for autoscalers and alerts. Cheap (atomic reads, no residency).
  ServerLoad Load() const;

  // The threads that run inference: for work that must share them, and for
  // tests that hold a worker to make requests queue.
  WorkerPool& pool() { return pool_; }
  int workers() const { return pool_.threads(); }
  // The most rows one request may carry.
  int64_t max_batch_rows() const { return options_.max_batch_rows; }
  // The error for a request of `rows` rows over max_batch_rows(), as every
  // protocol words it: INVALID_ARGUMENT with both counts and the flag that
  // sets the limit (sparse-server --max_batch_rows).
  absl::Status TooManyRows(int64_t rows) const;

 private:
  struct ServableState;  // per servable: one Batcher per path, the statistics
  // A request past admission, with what it runs on and how it is scheduled.
  struct Admitted {
    PendingRequest pending;
    std::shared_ptr<const Servable> servable;
    std::shared_ptr<ServableState> state;
    std::optional<sparse::v1::DynamicBatching> batching;
    WorkerPool::Share share;
    int workers = 1;  // the most that run its model at once (instance_count)
  };

  // Runs an admitted request: here when it is cheap (or this is a worker
  // and it is not batched), else on its batcher or alone on a worker.
  void Dispatch(Admitted admitted, bool on_worker);
  // Takes a place under the model's limits.max_in_flight, then dispatches;
  // or waits for one (DELAY), or is refused (REJECT).
  void EnterGate(Admitted admitted, const sparse::v1::Limits& limits);
  // Runs `batch` (requests of one servable and path) on a worker.
  void Submit(std::shared_ptr<const Servable> servable, bool dense,
              const WorkerPool::Share& share, std::vector<PendingRequest> batch);
  // Queues an admitted request on its servable's batcher.
  void Enqueue(std::shared_ptr<const Servable> servable, std::shared_ptr<ServableState> queues,
               bool dense, const BatchingOptions& options, const WorkerPool::Share& share,
               PendingRequest pending);
  // Asks a worker to take a batch from the servable's batcher and run it.
  void ScheduleDrain(std::shared_ptr<const Servable> servable,
                     std::shared_ptr<ServableState> queues, bool dense,
                     const WorkerPool::Share& share);
  std::shared_ptr<ServableState> StateFor(const std::shared_ptr<const Servable>& servable);
  // The live state of `servable`, or null. REQUIRES: states_mu_, shared.
  std::shared_ptr<ServableState> FindState(const Servable& servable) const
      ABSL_SHARED_LOCKS_REQUIRED(states_mu_);
  // Answers one request: the observe hook, `done`, its statistics, then it
  // leaves the in-flight count.
  void FinishPending(PendingRequest& p, const absl::Status& status);
  bool Idle() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return in_flight_ == 0; }

  const ModelRepository* const repository_;
  const Options options_;

  mutable absl::Mutex mu_;
  int64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;

  mutable absl::Mutex states_mu_;
  // Keyed by the servable's address; an entry whose servable is gone (its
  // weak pointer expired) is dropped when the next one is added.
  absl::flat_hash_map<const Servable*, std::shared_ptr<ServableState>> states_
      ABSL_GUARDED_BY(states_mu_);

  // Per-model limits of requests in flight; destroyed after the pool, whose
  // last tasks may free places, and before the rest of the core, which the
  // requests still waiting are answered with.
  AdmissionGates gates_;
  // Declared last: destroyed first, so queued tasks finish while the rest
  // of the core is still there.
  WorkerPool pool_;
};

// The batching settings of one path under `config`'s dynamic_batching
// (absent: off), for a server with `workers` workers.
BatchingOptions ToBatchingOptions(const std::optional<sparse::v1::DynamicBatching>& config,
                                  int workers, bool dense);

}  // namespace sparse

#endif  // SPARSE_SERVER_CORE_INFERENCE_CORE_H_
