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
  // Validates `weights`, copies them and creates the kernels.
  static absl::StatusOr<std::unique_ptr<DenseModel>> Create(const DenseWeights& weights);

 private:
  DenseModel(ModelInfo info, DenseWeights weights, MatmulKernel bottom, MatmulKernel top);
  absl::Status PredictValidated(const float* x, int64_t rows, float* y, PredictStats* stats,
                                Route* route) const override;

  const DenseWeights w_;
  const MatmulKernel bottom_;  // relu(x·Bᵀ + c) or x·Bᵀ + c
  const MatmulKernel top_;     // h·Aᵀ + a0
};

}  // namespace sparse

#endif  // SPARSE_ENGINE_DENSE_MODEL_H_
