// DenseModel: the full-width baseline y = A·σ(Bx + c) + a0 (DESIGN.md §1).
// FLOPs per row: 2td + 2to. Thread-safe as every Model.
#ifndef SPARSE_ENGINE_DENSE_MODEL_H_
#define SPARSE_ENGINE_DENSE_MODEL_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/matmul_kernel.h"
#include "engine/model.h"
#include "engine/weights.h"

namespace sparse {

class DenseModel : public Model {
 public:
  // Validates `weights`, copies them and creates the kernels; both layers
  // run at `precision` (a narrow top layer stays FP32, matmul_kernel.h).
  static absl::StatusOr<std::unique_ptr<DenseModel>> Create(
      const DenseWeights& weights, Precision precision = Precision::kFp32);

 private:
  DenseModel(ModelInfo info, const DenseWeights& weights, MatmulKernel bottom, MatmulKernel top,
             PackedWeights bottom_weight, PackedWeights top_weight);
  absl::Status PredictValidated(const float* x, int64_t rows, float* y, PredictStats* stats,
                                Route* route,
                                const PredictOptions& options) const override;

  const int64_t d_, t_, o_;
  const MatmulKernel bottom_;  // relu(x·Bᵀ + c) or x·Bᵀ + c
  const MatmulKernel top_;     // h·Aᵀ + a0
  const PackedWeights bottom_weight_;  // B in bottom_'s layout
  const PackedWeights top_weight_;     // A in top_'s layout
  const std::vector<float> bottom_bias_, top_bias_;
};

}  // namespace sparse

#endif  // SPARSE_ENGINE_DENSE_MODEL_H_
