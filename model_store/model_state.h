// What the model life cycle serves: a loaded version (Servable), one model's
// state (its versions, config and failed loads) and the snapshot of every
// model that requests read. Shared by the source, the loader and the
// manager (model_store/model_repository.h).
#ifndef SPARSE_MODEL_STORE_MODEL_STATE_H_
#define SPARSE_MODEL_STORE_MODEL_STATE_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "engine/model.h"
#include "engine/precision.h"
#include "model_store/checkpoint.h"
#include "sparse/v1/model_config.pb.h"

namespace sparse {

// One loaded, validated and warmed-up version. Immutable once published;
// requests hold it by shared_ptr.
struct Servable {
  std::string model;
  int64_t version = 0;
  LoadedModel loaded;
  // The sparse model's routing counts after warm-up; metrics report what
  // came after.
  RoutingCounts warmup_routing;
  // config.pbtxt's precision it was loaded at (the engine models' own
  // ModelInfo::precision says what their matrices run at).
  Precision precision = Precision::kFp32;
  // The part of the version it holds (a sharded model's shard or front).
  ModelPart part;
  // How long its load took (read, verify, build or map, warm up), without
  // the wait for the load budget.
  double load_seconds = 0;
  // When a request last used it (steady clock, ns; 0 = never), for a shard
  // server that keeps a version its fronts still use
  // (ModelRepository::Options::retain_in_use). The one mutable field.
  mutable std::atomic<int64_t> last_used_ns{0};
  void MarkUsed() const {
    last_used_ns.store(std::chrono::steady_clock::now().time_since_epoch().count(),
                       std::memory_order_relaxed);
  }
};

// How a model's requests are scheduled, from its config.pbtxt as it is now
// (it can change without a reload).
struct Scheduling {
  std::optional<sparse::v1::DynamicBatching> batching;  // nullopt: no batching
  uint32_t priority_levels = 0;                         // 0: no levels
  uint32_t default_priority_level = 0;
  int32_t instance_count = 0;   // the most workers that run the model at once; 0: any
  sparse::v1::Limits limits;    // max_in_flight 0: no limit
};

struct ModelState {
  using Versions = std::map<int64_t, std::shared_ptr<const Servable>>;
  Versions versions;  // may be empty while every selected version fails
  sparse::v1::ModelConfig config;
  std::string config_text;   // as read, to notice changes
  std::string config_error;  // config.pbtxt did not parse; `config` is the previous one
  struct Failure {
    std::string error;
    std::string fingerprint;  // the files as they were; retried at once when they change
    // When it was last tried and how many times in a row it failed with
    // these files: a rescan tries it again after a back-off that doubles per
    // attempt (ModelRepository::Options::failed_retry_*); LoadModel always does.
    std::chrono::steady_clock::time_point attempted;
    int attempts = 1;
  };
  std::map<int64_t, Failure> failures;
};
using RepositorySnapshot = std::map<std::string, ModelState>;

// Bytes a version holds for its weights, both paths (ModelInfo::resident_bytes).
int64_t ResidentBytes(const Servable& servable);

// Versions serving across every model of `snapshot`.
size_t ServingVersions(const RepositorySnapshot& snapshot);

}  // namespace sparse

#endif  // SPARSE_MODEL_STORE_MODEL_STATE_H_
