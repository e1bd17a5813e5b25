#include "engine/model.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"

namespace sparse {

absl::string_view ModelKindName(ModelKind kind) {
  switch (kind) {
    case ModelKind::kLshTable: return "lsh_table";
    case ModelKind::kDsm: return "dsm";
    case ModelKind::kDense: return "dense";
  }
  return "unknown";
}

absl::Status ValidateBatch(absl::Span<const float> x, int64_t rows, int64_t d) {
  if (rows < 1) {
    return absl::InvalidArgumentError(absl::StrCat("batch must have at least 1 row, got ", rows));
  }
  const int64_t n = static_cast<int64_t>(x.size());
  if (n % d != 0 || n / d != rows) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input has ", n, " values, expected rows x d = ", rows, " x ", d));
  }
  for (size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input row ", i / d, " column ", i % d, " is not finite (", x[i], ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status Model::Predict(absl::Span<const float> x, int64_t rows, absl::Span<float> y,
                            PredictStats* stats, Route* route) const {
  RETURN_IF_ERROR(ValidateBatch(x, rows, info_.input_dim));
  if (static_cast<int64_t>(y.size()) / info_.output_dim != rows ||
      static_cast<int64_t>(y.size()) % info_.output_dim != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "output buffer has ", y.size(), " values, expected ", rows * info_.output_dim));
  }
  if (route != nullptr) *route = Route{};
  RETURN_IF_ERROR(PredictValidated(x.data(), rows, y.data(), stats, route));
  // Finite inputs can still overflow (|x| near FLT_MAX): answer with an
  // error, not with a NaN or Inf prediction.
  for (size_t i = 0; i < y.size(); ++i) {
    if (!std::isfinite(y[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input row ", i / info_.output_dim,
          " is too large in magnitude: the model's output overflows"));
    }
  }
  return absl::OkStatus();
}

}  // namespace sparse
