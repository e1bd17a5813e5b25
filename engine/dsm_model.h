// DsmModel: DSM(d, t, k) of DESIGN.md §1 with the lsh, hash, kmeans and topk
// routers and L blocks whose outputs add.
//
// Routed kinds (lsh, hash, kmeans) compute, per block, only the expert slice
// the router picked: rows of a batch are grouped by expert and each group
// runs one bottom matmul on the slice's k rows of B and one top matmul on
// the slice's k rows of Aᵀ (both contiguous; Aᵀ is reordered once at load).
// topk computes all of Bx + c, keeps the k largest per block and runs the
// top layer on those k units only.
// FLOPs per row: lsh L(2rd + 2kd + 2ko), hash L(2kd + 2ko),
// kmeans L(2Ed + 2kd + 2ko), topk 2td + L·2ko. Weight bytes: see
// docs/checkpoint-format.md.
#ifndef SPARSE_ENGINE_DSM_MODEL_H_
#define SPARSE_ENGINE_DSM_MODEL_H_

#include <atomic>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/matmul_kernel.h"
#include "engine/model.h"
#include "engine/weights.h"

namespace sparse {

class DsmModel : public Model {
 public:
  // The expert slices (or all of B for topk) and the routed top slices run
  // at `precision`; routers and topk's gathered top layer stay FP32.
  static absl::StatusOr<std::unique_ptr<DsmModel>> Create(
      const DsmWeights& weights, Precision precision = Precision::kFp32);
  RoutingCounts Routing() const override;

 private:
  struct Kernels {
    std::optional<MatmulKernel> router;  // lsh (r > 0) and kmeans
    std::optional<MatmulKernel> bottom;  // one slice (routed) or all of B (topk)
    MatmulKernel top;                    // accumulates into its output
  };
  // Weights in the kernels' layouts. Routed kinds: slice i (of L·E) of B at
  // bottom + i·bottom.packed_floats(), of Aᵀ at top + i·top.packed_floats().
  // topk: all of B packed, and Aᵀ [t, o] plain for gathering.
  struct Weights {
    PackedWeights router, bottom, top;
    std::vector<float> router_bias;  // lsh offsets; kmeans see CentredCentroids
  };
  DsmModel(ModelInfo info, const DsmWeights& w, Kernels kernels, Weights weights);
  absl::Status PredictValidated(const float* x, int64_t rows, float* y, PredictStats* stats,
                                Route* route) const override;
  // Fills experts[r * L + l] for the n rows of x.
  absl::Status RouteRows(const float* x, int64_t n, int32_t* experts, PredictStats* stats) const;
  absl::Status ComputeRouted(const float* x, int64_t n, const int32_t* experts, float* y,
                             PredictStats* stats) const;
  absl::Status ComputeTopk(const float* x, int64_t n, float* y, PredictStats* stats) const;

  const int64_t d_, o_, t_, L_, E_, k_, bits_;
  const RouterKind router_;
  const bool relu_;
  const uint64_t hash_seed_;
  const std::vector<float> bottom_bias_;    // c [t]
  const std::vector<float> top_bias_;       // a0 [o]
  const Kernels kernels_;
  const Weights weights_;
  // Rows routed to expert e of block l at [l * E + e] (routed kinds only).
  const std::unique_ptr<std::atomic<int64_t>[]> expert_rows_;
};

}  // namespace sparse

#endif  // SPARSE_ENGINE_DSM_MODEL_H_
