#include "engine/dense_model.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"
#include "engine/workspace.h"

namespace sparse {

absl::StatusOr<std::unique_ptr<DenseModel>> DenseModel::Create(const DenseWeights& weights) {
  RETURN_IF_ERROR(weights.Validate());
  const bool relu = weights.activation == Activation::kRelu;
  ASSIGN_OR_RETURN(MatmulKernel bottom,
                   MatmulKernel::Create({.k = weights.input_dim, .n = weights.width,
                                         .layout = MatmulSpec::WeightLayout::kOutputMajor,
                                         .bias = true, .relu = relu}));
  ASSIGN_OR_RETURN(MatmulKernel top,
                   MatmulKernel::Create({.k = weights.width, .n = weights.output_dim,
                                         .layout = MatmulSpec::WeightLayout::kOutputMajor,
                                         .bias = true}));
  ModelInfo info;
  info.kind = ModelKind::kDense;
  info.input_dim = weights.input_dim;
  info.output_dim = weights.output_dim;
  info.flops_per_row = DenseFlopsPerRow(weights);
  info.parameters = static_cast<int64_t>(weights.bottom_weight.size() + weights.bottom_bias.size() +
                                         weights.top_weight.size() + weights.top_bias.size());
  info.description = absl::StrCat("dense d=", weights.input_dim, " t=", weights.width,
                                  " o=", weights.output_dim, " ",
                                  ActivationName(weights.activation));
  return std::unique_ptr<DenseModel>(
      new DenseModel(std::move(info), weights, std::move(bottom), std::move(top)));
}

DenseModel::DenseModel(ModelInfo info, DenseWeights weights, MatmulKernel bottom,
                       MatmulKernel top)
    : Model(std::move(info)), w_(std::move(weights)), bottom_(std::move(bottom)),
      top_(std::move(top)) {}

absl::Status DenseModel::PredictValidated(const float* x, int64_t rows, float* y,
                                          PredictStats* stats, Route* /*route*/) const {
  const auto start = std::chrono::steady_clock::now();
  const int64_t d = w_.input_dim, t = w_.width, o = w_.output_dim;
  // Hidden activations are bounded to one 128-row chunk at a time.
  float* hidden = ScratchFloats(Scratch::kHidden,
                                static_cast<size_t>(std::min(rows, MatmulKernel::kMaxBucketRows) * t));
  for (int64_t r = 0; r < rows; r += MatmulKernel::kMaxBucketRows) {
    const int64_t n = std::min(MatmulKernel::kMaxBucketRows, rows - r);
    RETURN_IF_ERROR(bottom_.Run(x + r * d, n, w_.bottom_weight.data(), w_.bottom_bias.data(),
                                hidden, &stats->flops));
    RETURN_IF_ERROR(top_.Run(hidden, n, w_.top_weight.data(), w_.top_bias.data(), y + r * o,
                             &stats->flops));
  }
  stats->compute_ns += NanosSince(start);
  return absl::OkStatus();
}

}  // namespace sparse
