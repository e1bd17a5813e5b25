#include "engine/dense_model.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/workspace.h"

namespace sparse {

absl::StatusOr<std::unique_ptr<DenseModel>> DenseModel::Create(const DenseWeights& weights,
                                                              Precision precision) {
  RETURN_IF_ERROR(weights.Validate());
  const bool relu = weights.activation == Activation::kRelu;
  ASSIGN_OR_RETURN(MatmulKernel bottom,
                   MatmulKernel::Create({.k = weights.input_dim, .n = weights.width,
                                         .layout = MatmulSpec::WeightLayout::kOutputMajor,
                                         .bias = true, .relu = relu, .precision = precision}));
  ASSIGN_OR_RETURN(MatmulKernel top,
                   MatmulKernel::Create({.k = weights.width, .n = weights.output_dim,
                                         .layout = MatmulSpec::WeightLayout::kOutputMajor,
                                         .bias = true, .precision = precision}));
  ASSIGN_OR_RETURN(PackedWeights bottom_weight, bottom.PackAll(weights.bottom_weight.data(), 1));
  ASSIGN_OR_RETURN(PackedWeights top_weight, top.PackAll(weights.top_weight.data(), 1));
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
  if (precision != Precision::kFp32) absl::StrAppend(&info.description, " ", PrecisionName(precision));
  info.precision = precision;
  info.weight_bytes_per_row = bottom.weight_bytes_per_read() + top.weight_bytes_per_read();
  info.resident_bytes = 4 * static_cast<int64_t>(bottom_weight.size() + top_weight.size() +
                                                 weights.bottom_bias.size() +
                                                 weights.top_bias.size());
  return std::unique_ptr<DenseModel>(new DenseModel(std::move(info), weights, std::move(bottom),
                                                    std::move(top), std::move(bottom_weight),
                                                    std::move(top_weight)));
}

DenseModel::DenseModel(ModelInfo info, const DenseWeights& weights, MatmulKernel bottom,
                       MatmulKernel top, PackedWeights bottom_weight, PackedWeights top_weight)
    : Model(std::move(info)), d_(weights.input_dim), t_(weights.width), o_(weights.output_dim),
      bottom_(std::move(bottom)), top_(std::move(top)), bottom_weight_(std::move(bottom_weight)),
      top_weight_(std::move(top_weight)), bottom_bias_(weights.bottom_bias),
      top_bias_(weights.top_bias) {}

absl::Status DenseModel::PredictValidated(const float* x, int64_t rows, float* y,
                                          PredictStats* stats, Route* /*route*/,
                                          const PredictOptions& /*options*/) const {
  const auto start = std::chrono::steady_clock::now();
  const int64_t d = d_, t = t_, o = o_;
  // Hidden activations are bounded to one 128-row chunk at a time.
  float* hidden = ScratchFloats(Scratch::kHidden,
                                static_cast<size_t>(std::min(rows, MatmulKernel::kMaxBucketRows) * t));
  for (int64_t r = 0; r < rows; r += MatmulKernel::kMaxBucketRows) {
    const int64_t n = std::min(MatmulKernel::kMaxBucketRows, rows - r);
    RETURN_IF_ERROR(bottom_.Run(x + r * d, n, bottom_weight_.data(), bottom_bias_.data(), hidden,
                                &stats->flops, &stats->weight_bytes));
    RETURN_IF_ERROR(top_.Run(hidden, n, top_weight_.data(), top_bias_.data(), y + r * o,
                             &stats->flops, &stats->weight_bytes));
  }
  stats->compute_ns += NanosSince(start);
  return absl::OkStatus();
}

}  // namespace sparse
