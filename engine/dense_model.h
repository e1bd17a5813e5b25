// DenseModel: the full-width baseline y = A·σ(Bx + c) + a0 (DESIGN.md §1).
// FLOPs per row: 2td + 2to. Thread-safe as every Model.
#ifndef SPARSE_ENGINE_DENSE_MODEL_H_
#define SPARSE_ENGINE_DENSE_MODEL_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/matmul_kernel.h"
#include "engine/model.h"
#include "engine/weight_store.h"
#include "engine/weights.h"

namespace sparse {

class DenseModel : public Model {
 public:
  // Validates `weights`, copies them and creates the kernels; both layers
  // run at `precision` (a narrow top layer stays FP32, matmul_kernel.h).
  // The arrays "bottom", "top", "bottom_bias" and "top_bias" come from
  // `store` (weight_store.h; null: process memory); from a prebuilt store
  // only `weights`' dimensions and activation are read.
  static absl::StatusOr<std::unique_ptr<DenseModel>> Create(
      const DenseWeights& weights, Precision precision = Precision::kFp32,
      WeightStore* store = nullptr);
  WeightResidency Residency() const override;

 private:
  struct Arrays {
    PackedWeights bottom;  // B in bottom_'s layout
    PackedWeights top;     // A in top_'s layout
    PackedWeights bottom_bias, top_bias;
  };
  DenseModel(ModelInfo info, const DenseWeights& weights, MatmulKernel bottom, MatmulKernel top,
             Arrays arrays);
  absl::Status PredictValidated(const float* x, int64_t rows, float* y, PredictStats* stats,
                                Route* route,
                                const PredictOptions& options) const override;

  const int64_t d_, t_, o_;
  const MatmulKernel bottom_;  // relu(x·Bᵀ + c) or x·Bᵀ + c
  const MatmulKernel top_;     // h·Aᵀ + a0
  const Arrays a_;
};

}  // namespace sparse

#endif  // SPARSE_ENGINE_DENSE_MODEL_H_
