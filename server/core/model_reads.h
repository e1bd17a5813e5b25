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
struct ModelState;
struct VersionStatus;

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
  // The model's dynamic_batching settings when it was resolved (nullopt: none).
  const std::optional<sparse::v1::DynamicBatching>& batching() const { return batching_; }

 private:
  friend class InferenceCore;
  friend VersionStatus ToVersionStatus(std::shared_ptr<const Servable> servable);
  ModelHandle(std::shared_ptr<const Servable> servable, bool dense,
              std::optional<sparse::v1::DynamicBatching> batching)
      : servable_(std::move(servable)), dense_(dense), batching_(std::move(batching)) {}

  std::shared_ptr<const Servable> servable_;
  bool dense_ = false;
  std::optional<sparse::v1::DynamicBatching> batching_;
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
  int64_t resident_bytes = 0;              // weights of both paths
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
  int64_t resident_bytes = 0;
  RoutingCounts since_warmup;
};

// For the core: the read structs of a loaded version and of a model's state.
VersionStatus ToVersionStatus(std::shared_ptr<const Servable> servable);
ModelStatus ToModelStatus(const std::string& name, const ModelState& state);

}  // namespace sparse

#endif  // SPARSE_SERVER_CORE_MODEL_READS_H_
