// LshTableModel: LSH(d, s, m, Δ) of DESIGN.md §1.
//
// All s·m hash projections run as one matmul; each table then maps its key
// to a stored bucket through its BucketIndex or, on a miss, to the table's
// fallback. Δ=0 buckets add a constant; Δ=1 buckets run their o×(d+1)
// affine map as a matmul that accumulates into y. α_i is folded into the
// stored values at load.
// At BF16 and INT8 the bucket values are stored reduced and converted to
// float32 as a row reads them: bfloat16, or int8 with float32 scales (Δ=0:
// one per output per table; Δ=1: one per output row of each bucket's
// matrix). The hash projections stay FP32, so keys never change.
// Each table's index, values and scales are arrays of a WeightStore
// (engine/weight_store.h): process memory, or views of a mapped weight
// cache file; values and scales in parts of kBucketsPerPart-aligned groups
// of buckets, so that a request touches (and, on first touch, verifies)
// only the groups its buckets are in.
// FLOPs per row: 2smd + so (Δ=0) or 2smd + 2so(d+1) (Δ=1).
#ifndef SPARSE_ENGINE_LSH_TABLE_MODEL_H_
#define SPARSE_ENGINE_LSH_TABLE_MODEL_H_

#include <atomic>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/matmul_kernel.h"
#include "engine/table_hasher.h"
#include "engine/model.h"
#include "engine/weight_store.h"
#include "engine/weights.h"

namespace sparse {

class LshTableModel : public Model {
 public:
  // A shard's part (weights.first_table / total_tables) holds tables
  // [first_table, first_table + s) and needs a given route
  // (ModelInfo::needs_given_route).
  // `store` (null: process memory) holds the tables' arrays; from a
  // prebuilt store `weights` is a skeleton (LshTableWeights::
  // ValidateSkeleton).
  static absl::StatusOr<std::unique_ptr<LshTableModel>> Create(
      const LshTableWeights& weights, Precision precision = Precision::kFp32,
      WeightStore* store = nullptr);
  RoutingCounts Routing() const override;
  WeightResidency Residency() const override;

  // A shard's part computes for the keys a front gives
  // (PredictOptions::given: [rows, s] keys of this shard's s tables): y =
  // Σ over its tables of α_i·ĝ_i, and route->bucket_missed says where a
  // table's fallback was used (docs/deploy.md, "Sharded models").
  absl::Status CheckGivenRoute(const Route& given, int64_t rows) const override;
  Route WarmupRoute(int64_t rows) const override;

 private:
  struct Table {
    int64_t buckets = 0;  // n stored; row n is the fallback
    int64_t buckets_per_part = 0;
    int64_t index_slots = 0;
    PackedWeights index;  // BucketIndex, one part
    // [n + 1, per_bucket], α-scaled, as float32, bfloat16 or int8 by
    // precision, in parts of buckets_per_part rows.
    PackedWeights values;
    PackedWeights scales;  // INT8: Δ=0 [o], one part; Δ=1 [n + 1, o], by parts as values
  };
  // Bucket `b`'s values of `table` as float32, into out[per_bucket].
  void ReadBucket(const Table& table, int64_t b, float* out) const;
  // The row of `key` in `table` (its fallback's when not stored), its
  // arrays' parts checked first (PackedWeights::Touch).
  absl::StatusOr<int64_t> Lookup(const Table& table, uint64_t key, bool* missed) const;
  LshTableModel(ModelInfo info, const LshTableWeights& w, Precision precision,
                std::vector<Table> tables, TableHasher hasher,
                std::unique_ptr<MatmulKernel> affine);
  absl::Status PredictValidated(const float* x, int64_t rows, float* y, PredictStats* stats,
                                Route* route,
                                                              const PredictOptions& options) const override;
  // Adds the n rows' buckets (keys [n, s]) into y [n, o], which it does not
  // clear; missed [n, s] may be null. x is read for Δ=1 only.
  absl::Status AddBuckets(const float* x, int64_t n, const uint64_t* keys, float* y,
                          uint8_t* missed, PredictStats* stats) const;

  const int64_t d_, o_, s_, degree_;
  const Precision precision_;
  const std::vector<Table> tables_;
  const TableHasher hasher_;
  const std::unique_ptr<MatmulKernel> affine_kernel_;  // Δ=1 only
  mutable std::atomic<int64_t> lookups_{0}, misses_{0};  // see Model::Routing
};

}  // namespace sparse

#endif  // SPARSE_ENGINE_LSH_TABLE_MODEL_H_
