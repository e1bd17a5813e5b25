// ExpertRouter: the router of a routed DSM (DESIGN.md §1: lsh, hash,
// kmeans), on its own, so that a front server can route rows to the shards
// that hold their experts without holding the experts (docs/deploy.md).
//
// Immutable after Create; Route() is const and safe from many threads
// (per-thread scratch, workspace.h).
#ifndef SPARSE_ENGINE_EXPERT_ROUTER_H_
#define SPARSE_ENGINE_EXPERT_ROUTER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/matmul_kernel.h"
#include "engine/model.h"
#include "engine/weights.h"

namespace sparse {

class ExpertRouter {
 public:
  // From the router fields of `w` (DsmWeights::ValidateRouting checks
  // them; the network's matrices are not needed). REQUIRES: a routed kind
  // (not topk) and not a shard's part.
  static absl::StatusOr<ExpertRouter> Create(const DsmWeights& w);

  // Fills experts[r * L + l], the expert of block l for row r, for the n
  // rows of x [n, d] (n <= MatmulKernel::kMaxBucketRows). Adds the router's
  // FLOPs, weight bytes and time to *stats.
  absl::Status Route(const float* x, int64_t n, int32_t* experts, PredictStats* stats) const;

  int64_t blocks() const { return L_; }
  int64_t experts() const { return E_; }
  // FLOPs and weight bytes one row costs (0 for the hash router).
  int64_t flops_per_row() const;
  int64_t weight_bytes_per_row() const;
  int64_t resident_bytes() const;

 private:
  ExpertRouter(const DsmWeights& w, std::optional<MatmulKernel> kernel, PackedWeights weights,
               std::vector<float> bias);

  int64_t d_, L_, E_, bits_;
  RouterKind router_;
  uint64_t hash_seed_;
  std::optional<MatmulKernel> kernel_;  // lsh (r > 0) and kmeans
  PackedWeights weights_;
  std::vector<float> bias_;  // lsh offsets; kmeans see CentredCentroids
};

}  // namespace sparse

#endif  // SPARSE_ENGINE_EXPERT_ROUTER_H_
