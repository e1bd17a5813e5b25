// LshTableModel: LSH(d, s, m, Δ) of DESIGN.md §1.
//
// All s·m hash projections run as one matmul; each table then maps its key
// to a stored bucket through an open-addressing index (absl::flat_hash_map
// built at load from the checkpoint's sorted keys) or, on a miss, to the
// table's fallback. Δ=0 buckets add a constant; Δ=1 buckets run their
// o×(d+1) affine map as a matmul that accumulates into y. α_i is folded into
// the stored values at load.
// FLOPs per row: 2smd + so (Δ=0) or 2smd + 2so(d+1) (Δ=1).
#ifndef SPARSE_ENGINE_LSH_TABLE_MODEL_H_
#define SPARSE_ENGINE_LSH_TABLE_MODEL_H_

#include <atomic>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "engine/matmul_kernel.h"
#include "engine/model.h"
#include "engine/weights.h"

namespace sparse {

class LshTableModel : public Model {
 public:
  static absl::StatusOr<std::unique_ptr<LshTableModel>> Create(const LshTableWeights& weights);
  RoutingCounts Routing() const override;

 private:
  struct Table {
    absl::flat_hash_map<uint64_t, uint32_t> index;  // key -> bucket row
    std::vector<float> values;    // [n + 1, per_bucket], α-scaled; row n = fallback
  };
  LshTableModel(ModelInfo info, const LshTableWeights& w, std::vector<Table> tables,
                MatmulKernel projection, PackedWeights projection_weight,
                std::unique_ptr<MatmulKernel> affine);
  absl::Status PredictValidated(const float* x, int64_t rows, float* y, PredictStats* stats,
                                Route* route) const override;

  const int64_t d_, o_, s_, m_, degree_;
  const HashFamily family_;
  const float bucket_width_;
  const PackedWeights projection_;       // [s*m, d] in projection_kernel_'s layout
  const std::vector<float> offset_;      // [s*m]
  const std::vector<Table> tables_;
  const MatmulKernel projection_kernel_;
  const std::unique_ptr<MatmulKernel> affine_kernel_;  // Δ=1 only
  mutable std::atomic<int64_t> lookups_{0}, misses_{0};  // see Model::Routing
};

}  // namespace sparse

#endif  // SPARSE_ENGINE_LSH_TABLE_MODEL_H_
