#include "engine/dense_model.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/workspace.h"

namespace sparse {

absl::StatusOr<std::unique_ptr<DenseModel>> DenseModel::Create(const DenseWeights& weights,
                                                              Precision precision,
                                                              WeightStore* store) {
  WeightStore& arrays = store != nullptr ? *store : CopyIn();
  if (arrays.Prebuilt()) {
    // Only the dimensions are read; the arrays exist.
    if (weights.input_dim < 1 || weights.width < 1 || weights.output_dim < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "dense network dimensions must be >= 1, got d=", weights.input_dim,
          " t=", weights.width, " o=", weights.output_dim));
    }
  } else {
    RETURN_IF_ERROR(weights.Validate());
  }
  const bool relu = weights.activation == Activation::kRelu;
  const int64_t d = weights.input_dim, t = weights.width, o = weights.output_dim;
  ASSIGN_OR_RETURN(MatmulKernel bottom,
                   MatmulKernel::Create({.k = d, .n = t,
                                         .layout = MatmulSpec::WeightLayout::kOutputMajor,
                                         .bias = true, .relu = relu, .precision = precision}));
  ASSIGN_OR_RETURN(MatmulKernel top,
                   MatmulKernel::Create({.k = t, .n = o,
                                         .layout = MatmulSpec::WeightLayout::kOutputMajor,
                                         .bias = true, .precision = precision}));
  Arrays a;
  ASSIGN_OR_RETURN(a.bottom, bottom.PackInto(arrays, "bottom", 1, [&](int64_t, float*) {
    return weights.bottom_weight.data();
  }));
  ASSIGN_OR_RETURN(a.top, top.PackInto(arrays, "top", 1, [&](int64_t, float*) {
    return weights.top_weight.data();
  }));
  auto copy = [](const std::vector<float>& v) {
    return [&v](int64_t, float* out) {
      std::copy(v.begin(), v.end(), out);
      return absl::OkStatus();
    };
  };
  ASSIGN_OR_RETURN(a.bottom_bias, arrays.Array("bottom_bias", 1, t, copy(weights.bottom_bias)));
  ASSIGN_OR_RETURN(a.top_bias, arrays.Array("top_bias", 1, o, copy(weights.top_bias)));
  ModelInfo info;
  info.kind = ModelKind::kDense;
  info.input_dim = d;
  info.output_dim = o;
  info.flops_per_row = DenseFlopsPerRow(weights);
  info.parameters = t * d + t + o * t + o;
  info.description = absl::StrCat("dense d=", d, " t=", t, " o=", o, " ",
                                  ActivationName(weights.activation));
  if (precision != Precision::kFp32) absl::StrAppend(&info.description, " ", PrecisionName(precision));
  info.precision = precision;
  info.weight_bytes_per_row = bottom.weight_bytes_per_read() + top.weight_bytes_per_read();
  for (const PackedWeights* array : {&a.bottom, &a.top, &a.bottom_bias, &a.top_bias}) {
    (array->mapped() ? info.mapped_bytes : info.resident_bytes) +=
        4 * static_cast<int64_t>(array->size());
  }
  return std::unique_ptr<DenseModel>(new DenseModel(std::move(info), weights, std::move(bottom),
                                                    std::move(top), std::move(a)));
}

DenseModel::DenseModel(ModelInfo info, const DenseWeights& weights, MatmulKernel bottom,
                       MatmulKernel top, Arrays arrays)
    : Model(std::move(info)), d_(weights.input_dim), t_(weights.width), o_(weights.output_dim),
      bottom_(std::move(bottom)), top_(std::move(top)), a_(std::move(arrays)) {}

WeightResidency DenseModel::Residency() const {
  WeightResidency r;
  r.mapped_bytes = info().mapped_bytes;
  for (const PackedWeights* array : {&a_.bottom, &a_.top, &a_.bottom_bias, &a_.top_bias}) {
    if (array->mapped()) r.resident_bytes += array->ResidentBytes(0, 4 * array->size());
  }
  return r;
}

absl::Status DenseModel::PredictValidated(const float* x, int64_t rows, float* y,
                                          PredictStats* stats, Route* /*route*/,
                                          const PredictOptions& /*options*/) const {
  const auto start = std::chrono::steady_clock::now();
  const int64_t d = d_, t = t_, o = o_;
  // Hidden activations are bounded to one 128-row chunk at a time.
  float* hidden = ScratchFloats(Scratch::kHidden,
                                static_cast<size_t>(std::min(rows, MatmulKernel::kMaxBucketRows) * t));
  // A mapped array is checked on its first touch (weight_store.h).
  for (const PackedWeights* array : {&a_.bottom, &a_.top, &a_.bottom_bias, &a_.top_bias}) {
    RETURN_IF_ERROR(array->Touch(0));
  }
  for (int64_t r = 0; r < rows; r += MatmulKernel::kMaxBucketRows) {
    const int64_t n = std::min(MatmulKernel::kMaxBucketRows, rows - r);
    RETURN_IF_ERROR(bottom_.Run(x + r * d, n, a_.bottom.data(), a_.bottom_bias.data(), hidden,
                                &stats->flops, &stats->weight_bytes));
    RETURN_IF_ERROR(top_.Run(hidden, n, a_.top.data(), a_.top_bias.data(), y + r * o,
                             &stats->flops, &stats->weight_bytes));
  }
  stats->compute_ns += NanosSince(start);
  return absl::OkStatus();
}

}  // namespace sparse
