// The serving core's read API (DESIGN.md §2): what a frontend may know of
// the models, as plain structs the core fills from the repository's current
// snapshot, the way Triton's core API answers ModelMetadata, ModelConfig,
// ModelStatistics and RepositoryIndex. Frontends (native gRPC, OIP on gRPC
// and REST, model control, the shard service, metrics) read models only
// through these and InferenceCore's read calls, never through model_store/.
//
// A ModelHandle is one version resolved for one path (the routed sparse
// model or its dense twin): what a frontend needs to decode a request (the
// input width), and what it hands to InferenceCore::Infer in
// InferRequest::resolved so the model is looked up once per request. It
// keeps its version alive while held.
#ifndef SPARSE_SERVER_CORE_MODEL_READS_H_
#define SPARSE_SERVER_CORE_MODEL_READS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/model.h"
#include "engine/precision.h"
#include "sparse/v1/model_config.pb.h"

namespace sparse {

// model_store/model_state.h: the core's types, never a frontend's.
struct Servable;
struct Scheduling;  // model_store/model_state.h
struct ModelState;
struct VersionStatus;

// What a read measures besides the loaded version's fixed figures.
enum class ModelReads {
  kFixed,      // no system calls: what the version was loaded with
  kResidency,  // also mincore over the mapped weights (mapped_resident_bytes,
               // expert_resident_bytes): three calls per expert slice (B, Aᵀ,
               // c), 6-7 µs each measured on this VM, so ~45 ms for 2,048
               // experts. For GetModel, ListModels and metrics scrapes, not
               // for per-request reads (OIP metadata uses kFixed).
};

class ModelHandle {
 public:
  ModelHandle() = default;  // resolves nothing: empty()

  bool empty() const { return servable_ == nullptr; }
  // REQUIRES for the rest: !empty().
  const std::string& model() const;
  int64_t version() const;
  bool dense() const { return dense_; }
  // Whether the version has a dense path (a trained twin, or the DSM's
  // cost-only one).
  bool has_dense() const;
  // The path's model (its input and output widths, FLOPs per row, kind).
  const ModelInfo& info() const;
  // The same version's other path. REQUIRES: has_dense() when `dense`.
  ModelHandle Path(bool dense) const;

 private:
  friend class InferenceCore;
  friend VersionStatus ToVersionStatus(std::shared_ptr<const Servable> servable,
                                       ModelReads reads);
  ModelHandle(std::shared_ptr<const Servable> servable, bool dense,
              std::shared_ptr<const Scheduling> scheduling)
      : servable_(std::move(servable)), dense_(dense), scheduling_(std::move(scheduling)) {}

  std::shared_ptr<const Servable> servable_;
  bool dense_ = false;
  // The model's batching and priority settings when it was resolved.
  std::shared_ptr<const Scheduling> scheduling_;
};

// One loaded version.
struct VersionStatus {
  int64_t version = 0;
  ModelInfo sparse;                // the routed path
  std::optional<ModelInfo> dense;  // the dense path, when there is one
  // The dense path runs the DSM's own weights unmasked (no trained twin):
  // its cost is the baseline's, its outputs are not a baseline model's.
  bool dense_cost_only = false;
  Precision precision = Precision::kFp32;  // config.pbtxt's, as loaded
  // Weights of both paths in process memory (packed copies, biases,
  // tables, indexes); mapped weights are not counted here.
  int64_t resident_bytes = 0;
  // Weights of both paths read from the version's weight cache file
  // (model_store/weight_cache.h); 0 when they were copied in.
  int64_t mapped_bytes = 0;
  // The mapped file (its path on the server) and when its parts' sums are
  // checked ("load" or "touch"); both empty when the weights were copied in.
  std::string weight_cache_file;
  std::string weight_verify;
  // Filled only when asked for (ModelReads::kResidency): what mincore says
  // is in memory now. Of mapped_bytes, both paths:
  int64_t mapped_resident_bytes = 0;
  // A mapped routed DSM's sparse path, per expert slice (its rows of B, Aᵀ
  // and c) [block * experts + expert]: bytes in memory of expert_bytes
  // each. Empty otherwise (copied in, a topk router, an LSH table).
  int64_t experts = 0;
  int64_t expert_bytes = 0;
  std::vector<int64_t> expert_resident_bytes;
  std::string model_sha256;                // of its model.safetensors
  int64_t shards = 0;                      // a sharded model's front: its shard count
  std::string shard;                       // a shard's part: "i/n"; else empty
  // The checkpoint's hyperparameters and training record (__metadata__).
  std::map<std::string, std::string> info;
  ModelHandle handle;  // the sparse path; handle.Path(true) the dense one
};

// One model the repository knows: the versions that serve, the ones that
// failed, and its config.pbtxt.
struct ModelStatus {
  std::string name;
  std::vector<VersionStatus> versions;      // ascending; may be empty
  std::map<int64_t, std::string> failures;  // version -> why it did not load
  std::string config_error;                 // config.pbtxt did not parse (the previous serves)
  sparse::v1::ModelConfig config;
};

// The sparse path's routing since warm-up (metrics): rows per expert of
// each block (a DSM), and bucket lookups and misses (an LSH table model).
struct VersionRouting {
  std::string model;
  int64_t version = 0;
  ModelKind kind = ModelKind::kDense;
  Precision precision = Precision::kFp32;
  int64_t resident_bytes = 0;  // process memory, mapped weights excluded
  // Of the weight cache file's mapping (VersionStatus's fields of the same
  // names), measured with mincore at the call.
  int64_t mapped_bytes = 0;
  int64_t mapped_resident_bytes = 0;
  int64_t expert_bytes = 0;
  std::vector<int64_t> expert_resident_bytes;  // [block * experts + expert]; may be empty
  RoutingCounts since_warmup;
};

// The load on one path of a loaded version now (InferenceCore::Load).
struct PathLoad {
  std::string model;
  int64_t version = 0;
  bool dense = false;
  int64_t in_flight = 0;  // admitted, not yet answered (inline ones included)
  int64_t queued = 0;     // of those, waiting for a worker
  // Requests that may wait on this path before the next is refused with
  // UNAVAILABLE: its dynamic_batching.max_queue_size when the path batches,
  // else the worker queue's --max_queue (shared by every path).
  int64_t queue_capacity = 0;
};
// The load on the whole server now.
struct ServerLoad {
  std::vector<PathLoad> paths;  // every serving version's sparse path, and dense when it has one
  int workers = 0;
  int64_t busy_workers = 0;        // running a task now
  int64_t worker_queue = 0;        // tasks waiting for a worker
  int64_t worker_queue_capacity = 0;
  // Per model the repository knows: versions that failed to load (and are
  // retried when their files change), 0 for a model whose versions all load.
  std::map<std::string, int64_t> failed_versions;
};

// For the core: the read structs of a loaded version and of a model's state.
VersionStatus ToVersionStatus(std::shared_ptr<const Servable> servable,
                              ModelReads reads = ModelReads::kFixed);
ModelStatus ToModelStatus(const std::string& name, const ModelState& state,
                          ModelReads reads = ModelReads::kFixed);

}  // namespace sparse

#endif  // SPARSE_SERVER_CORE_MODEL_READS_H_
