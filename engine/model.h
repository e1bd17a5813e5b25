// Model: the interface every servable model kind implements.
//
// A Model is immutable after creation, but for the routing counters it keeps
// for metrics (atomics, see Routing()). Predict() is const and safe to call
// from any number of threads at once (per-thread scratch, workspace.h).
// Ownership: callers own inputs, outputs, stats and route; the model keeps
// no pointer to them after Predict() returns.
#ifndef SPARSE_ENGINE_MODEL_H_
#define SPARSE_ENGINE_MODEL_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "engine/precision.h"

namespace sparse {

enum class ModelKind { kLshTable, kDsm, kDense };
absl::string_view ModelKindName(ModelKind kind);

struct ModelInfo {
  ModelKind kind = ModelKind::kDense;
  int64_t input_dim = 0;
  int64_t output_dim = 0;
  int64_t flops_per_row = 0;  // DESIGN.md §1 formula for this model
  int64_t parameters = 0;     // stored floats (weights, biases, bucket values)
  std::string description;    // e.g. "dsm router=lsh d=8 t=1024 E=16 k=64 L=1"
  Precision precision = Precision::kFp32;  // of the large matrices (precision.h)
  // Weight bytes a one-row request reads (docs/checkpoint-format.md).
  int64_t weight_bytes_per_row = 0;
  // Bytes the model holds for its weights in its own memory: every packed
  // copy, biases, tables and their indexes.
  int64_t resident_bytes = 0;
  // Bytes of its weights it reads from a file mapping instead
  // (engine/weight_store.h, docs/weight-cache.md); Model::Residency() says
  // how much of them is in memory.
  int64_t mapped_bytes = 0;
  // A shard's part of a sharded model (docs/deploy.md): it computes only
  // for a route a front gives it (PredictOptions::given).
  bool needs_given_route = false;
  // Computes on other servers (a sharded model's front, of `shards`
  // shards): Predict blocks on the network, so callers run it off their
  // protocol threads.
  bool remote = false;
  int64_t shards = 0;
};

// What one Predict call did. FLOPs and weight bytes are counted by the
// kernels as they run: a matrix counts once per kernel execution over it, so
// rows that share an expert in a batch share its bytes.
struct PredictStats {
  int64_t flops = 0;
  int64_t weight_bytes = 0;
  int64_t route_ns = 0;    // hashing / routing
  int64_t compute_ns = 0;  // the selected slice, bucket values, dense layers
  // A sharded model's front: the shards it called, and the wall time from
  // the first call sent to the last answer (FLOPs, bytes and compute_ns
  // above include the shards' own).
  int64_t shards = 0;
  int64_t fanout_ns = 0;
};

// How much of a model's mapped weights is in memory (mincore), now.
struct WeightResidency {
  int64_t mapped_bytes = 0;
  int64_t resident_bytes = 0;
  // Per part (a DSM's expert slice [l * E + e] with its B, Aᵀ and c): bytes
  // in memory, of part_bytes each. Empty when nothing is mapped.
  std::vector<int64_t> part_resident_bytes;
  int64_t part_bytes = 0;
};

// Where each row went. Filled only when the caller passes a Route.
struct Route {
  int64_t keys_per_row = 0;             // LSH: s tables
  std::vector<uint64_t> bucket_keys = {};   // [rows, keys_per_row]
  std::vector<uint8_t> bucket_missed = {};  // [rows, keys_per_row]; 1 = fallback used
  int64_t experts_per_row = 0;              // DSM routed: L blocks
  std::vector<int32_t> expert_ids = {};     // [rows, experts_per_row]
  // DSM, given by a front: the rows of each of its batch's 128-row chunks
  // (PartialRequest.chunk_rows); empty: chunks of 128.
  std::vector<int32_t> chunk_rows = {};
};

// What a caller asks of one Predict call beyond its rows.
struct PredictOptions {
  // When the answer is no longer wanted. A model that calls other servers
  // (a sharded front) gives them this deadline; local models ignore it.
  absl::Time deadline = absl::InfiniteFuture();
  // The route a front computed, for a shard's part of a model: expert ids
  // of the whole model, [rows, experts_per_row] (DSM), or the keys of this
  // shard's tables, [rows, keys_per_row] (LSH). Null: route locally.
  const Route* given = nullptr;
};

// What a model's router has done since the model was created, for metrics:
// rows sent to each expert (DSM with a router) and bucket lookups and misses
// (LSH tables). Counted with relaxed atomics as requests run, so a read
// while requests run sees each counter a moment apart.
struct RoutingCounts {
  int64_t blocks = 0, experts = 0;  // DSM: L blocks of E experts
  std::vector<int64_t> expert_rows;  // [blocks * experts]
  int64_t lookups = 0, misses = 0;   // LSH: row x table probes, and those that missed
};

class Model {
 public:
  virtual ~Model() = default;

  const ModelInfo& info() const { return info_; }

  // Counts since creation; empty for kinds without a router (dense, top-k
  // DSM). These counters are the one thing Predict() changes in a model.
  virtual RoutingCounts Routing() const { return {}; }
  // Of mapped weights (ModelInfo::mapped_bytes): what is in memory. Costs a
  // mincore call per part: for status pages and metrics, not requests.
  virtual WeightResidency Residency() const {
    WeightResidency r;
    r.mapped_bytes = info().mapped_bytes;
    return r;
  }

  // Computes y [rows, o] from x [rows, d], both row-major.
  // Errors (INVALID_ARGUMENT): rows < 1, x or y of the wrong size, a NaN or
  // Inf input, an input so large that an output overflows. On error y is
  // unspecified and nothing else changes.
  // `stats` is required; `route` may be null.
  absl::Status Predict(absl::Span<const float> x, int64_t rows, absl::Span<float> y,
                       PredictStats* stats, Route* route,
                       const PredictOptions& options = {}) const;

  // Predict() for rows the caller has already admitted (the serving core
  // checks every input with ValidateBatch() once, when a request arrives):
  // sizes are checked, values are not. An output that overflows is not an
  // error here either, since in a batch of several requests' rows it belongs
  // to one request only: each row's outputs depend on that row alone, so the
  // caller checks each request's own rows with CheckOutputs() and fails only
  // the requests whose rows overflowed.
  // REQUIRES: every value of x is finite.
  absl::Status PredictAdmitted(absl::Span<const float> x, int64_t rows, absl::Span<float> y,
                               PredictStats* stats, Route* route,
                               const PredictOptions& options = {}) const;

  // Checks a route a front gives for `rows` rows (PredictOptions::given):
  // its sizes and ids. INVALID_ARGUMENT naming what was expected and what
  // came; FAILED_PRECONDITION for a model that routes itself.
  virtual absl::Status CheckGivenRoute(const Route& given, int64_t rows) const;
  // A valid route for `rows` rows, to warm up a model that
  // needs_given_route; empty for others.
  virtual Route WarmupRoute(int64_t /*rows*/) const { return {}; }

 protected:
  explicit Model(ModelInfo info) : info_(std::move(info)) {}

  // Called by Predict() after the input is validated. Overwrites y, adds to
  // *stats, fills *route when non-null. options.given is non-null only for
  // a model that needs_given_route, and has passed CheckGivenRoute().
  virtual absl::Status PredictValidated(const float* x, int64_t rows, float* y,
                                        PredictStats* stats, Route* route,
                                        const PredictOptions& options) const = 0;

 private:
  ModelInfo info_;
};

// Nanoseconds elapsed since `start` on the steady clock.
inline int64_t NanosSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now() - start).count();
}

// Checks a row-major batch: rows >= 1, x.size() == rows * d, all finite.
// The error names the first bad row, counted from 0 within `x`.
absl::Status ValidateBatch(absl::Span<const float> x, int64_t rows, int64_t d);

// Checks outputs [rows, output_dim]: INVALID_ARGUMENT naming the first row
// (counted from 0 within `y`) whose output is not finite, i.e. whose input
// was so large in magnitude that the model's output overflowed.
absl::Status CheckOutputs(absl::Span<const float> y, int64_t output_dim);

}  // namespace sparse

#endif  // SPARSE_ENGINE_MODEL_H_
