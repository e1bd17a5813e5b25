// LshTableModel: LSH(d, s, m, Δ) of DESIGN.md §1.
//
// All s·m hash projections run as one matmul; each table then maps its key
// to a stored bucket through an open-addressing index (absl::flat_hash_map
// built at load from the checkpoint's sorted keys) or, on a miss, to the
// table's fallback. Δ=0 buckets add a constant; Δ=1 buckets run their
// o×(d+1) affine map as a matmul that accumulates into y. α_i is folded into
// the stored values at load.
// At BF16 and INT8 the bucket values are stored reduced and converted to
// float32 as a row reads them: bfloat16, or int8 with float32 scales (Δ=0:
// one per output per table; Δ=1: one per output row of each bucket's
// matrix). The hash projections stay FP32, so keys never change.
// FLOPs per row: 2smd + so (Δ=0) or 2smd + 2so(d+1) (Δ=1).
#ifndef SPARSE_ENGINE_LSH_TABLE_MODEL_H_
#define SPARSE_ENGINE_LSH_TABLE_MODEL_H_

#include <atomic>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "engine/matmul_kernel.h"
#include "engine/table_hasher.h"
#include "engine/model.h"
#include "engine/weights.h"

namespace sparse {

class LshTableModel : public Model {
 public:
  // A shard's part (weights.first_table / total_tables) holds tables
  // [first_table, first_table + s) and needs a given route
  // (ModelInfo::needs_given_route).
  static absl::StatusOr<std::unique_ptr<LshTableModel>> Create(
      const LshTableWeights& weights, Precision precision = Precision::kFp32);
  RoutingCounts Routing() const override;

  // A shard's part computes for the keys a front gives
  // (PredictOptions::given: [rows, s] keys of this shard's s tables): y =
  // Σ over its tables of α_i·ĝ_i, and route->bucket_missed says where a
  // table's fallback was used (docs/deploy.md, "Sharded models").
  absl::Status CheckGivenRoute(const Route& given, int64_t rows) const override;
  Route WarmupRoute(int64_t rows) const override;

 private:
  struct Table {
    absl::flat_hash_map<uint64_t, uint32_t> index;  // key -> bucket row
    // [n + 1, per_bucket], α-scaled; row n = fallback. One of the three,
    // by precision.
    std::vector<float> values;
    std::vector<uint16_t> bf16;
    std::vector<int8_t> int8;
    std::vector<float> scales;  // INT8: Δ=0 [o]; Δ=1 [n + 1, o]
  };
  // Bucket `b`'s values of `table` as float32, into out[per_bucket].
  void ReadBucket(const Table& table, int64_t b, float* out) const;
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
