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
#include "engine/expert_router.h"
#include "engine/matmul_kernel.h"
#include "engine/model.h"
#include "engine/weight_store.h"
#include "engine/weights.h"

namespace sparse {

class DsmModel : public Model {
 public:
  // The expert slices (or all of B for topk) and the routed top slices run
  // at `precision`; routers and topk's gathered top layer stay FP32.
  // A shard's part (weights.IsShard()) makes a model that needs a given
  // route (ModelInfo::needs_given_route).
  // The large arrays (each expert slice of B, of Aᵀ and of c) come from
  // `store` (weight_store.h; null: process memory). From a prebuilt store
  // only `weights`' dimensions, router and a0 are read.
  static absl::StatusOr<std::unique_ptr<DsmModel>> Create(
      const DsmWeights& weights, Precision precision = Precision::kFp32,
      WeightStore* store = nullptr);
  RoutingCounts Routing() const override;
  // Per expert slice (topk: one part), its bytes of B, Aᵀ and c in memory.
  WeightResidency Residency() const override;

  // A shard's part (weights.IsShard()) computes for the route a front
  // gives (PredictOptions::given: expert ids of the whole model, [rows, L]):
  // y = the sum, over the blocks l whose expert experts[r * L + l] this
  // shard holds, of that expert's slice output; other blocks add nothing,
  // and there is no a0 (docs/deploy.md, "Sharded models").
  absl::Status CheckGivenRoute(const Route& given, int64_t rows) const override;
  Route WarmupRoute(int64_t rows) const override;
  // Experts [first_expert(), first_expert() + E) of every block are held.
  int64_t first_expert() const { return first_expert_; }

 private:
  struct Kernels {
    std::optional<ExpertRouter> router;  // routed kinds, unless a shard's part
    std::optional<MatmulKernel> bottom;  // one slice (routed) or all of B (topk)
    MatmulKernel top;                    // accumulates into its output
  };
  // Weights in the kernels' layouts. Routed kinds: slice i (of L·E) of B at
  // bottom + i·bottom.packed_floats(), of Aᵀ at top + i·top.packed_floats().
  // topk: all of B packed, and Aᵀ [t, o] plain for gathering.
  // Arrays "bottom", "top" and "bottom_bias" of the store.
  struct Weights {
    PackedWeights bottom, top;
    PackedWeights bottom_bias;  // c [t]: slice i at i·k (topk: one part)
  };
  DsmModel(ModelInfo info, const DsmWeights& w, Kernels kernels, Weights weights);
  absl::Status PredictValidated(const float* x, int64_t rows, float* y, PredictStats* stats,
                                Route* route,
                                                              const PredictOptions& options) const override;
  // Adds the slices of experts[r * L + l] (ids of this model's E; -1: not
  // held here) into y.
  absl::Status ComputeRouted(const float* x, int64_t n, const int32_t* experts, float* y,
                             PredictStats* stats) const;
  absl::Status ComputeTopk(const float* x, int64_t n, float* y, PredictStats* stats) const;

  const int64_t d_, o_, t_, L_, E_, k_;
  const int64_t first_expert_, total_experts_;  // a shard's range of the whole model's
  const RouterKind router_;
  const bool relu_;
  const std::vector<float> top_bias_;       // a0 [o]
  const Kernels kernels_;
  const Weights weights_;
  // Rows routed to expert e of block l at [l * E + e] (routed kinds only).
  const std::unique_ptr<std::atomic<int64_t>[]> expert_rows_;
};

}  // namespace sparse

#endif  // SPARSE_ENGINE_DSM_MODEL_H_
