#include "engine/model.h"

#include <bit>
#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace sparse {

absl::string_view ModelKindName(ModelKind kind) {
  switch (kind) {
    case ModelKind::kLshTable: return "lsh_table";
    case ModelKind::kDsm: return "dsm";
    case ModelKind::kDense: return "dense";
  }
  return "unknown";
}

namespace {

// Whether every value is finite. Branch-free (a float is Inf or NaN exactly
// when its exponent bits are all ones; adding one to the exponent field then
// carries into bit 31), so the loop vectorises: every request's inputs pass
// through here, and a branch per value measured 0.56 ns per value, this loop
// 0.07 ns (2026-11-23).
bool AllFinite(absl::Span<const float> v) {
  uint32_t carry = 0;
  for (const float f : v) carry |= (std::bit_cast<uint32_t>(f) & 0x7f800000u) + 0x00800000u;
  return (carry & 0x80000000u) == 0;
}

}  // namespace

absl::Status ValidateBatch(absl::Span<const float> x, int64_t rows, int64_t d) {
  if (rows < 1) {
    return absl::InvalidArgumentError(absl::StrCat("batch must have at least 1 row, got ", rows));
  }
  const int64_t n = static_cast<int64_t>(x.size());
  if (n % d != 0 || n / d != rows) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input has ", n, " values, expected rows x d = ", rows, " x ", d));
  }
  if (AllFinite(x)) return absl::OkStatus();
  for (size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input row ", i / d, " column ", i % d, " is not finite (", x[i], ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckOutputs(absl::Span<const float> y, int64_t output_dim) {
  // Finite inputs can still overflow (|x| near FLT_MAX): answer with an
  // error, not with a NaN or Inf prediction.
  if (AllFinite(y)) return absl::OkStatus();
  for (size_t i = 0; i < y.size(); ++i) {
    if (!std::isfinite(y[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input row ", static_cast<int64_t>(i) / output_dim,
          " is too large in magnitude: the model's output overflows"));
    }
  }
  return absl::OkStatus();
}

absl::Status Model::CheckGivenRoute(const Route& /*given*/, int64_t /*rows*/) const {
  return absl::FailedPreconditionError(
      "this model routes its own rows; only a shard's part of a sharded model takes a route");
}

absl::Status Model::PredictAdmitted(absl::Span<const float> x, int64_t rows, absl::Span<float> y,
                                    PredictStats* stats, Route* route,
                                    const PredictOptions& options) const {
  if (rows < 1 || static_cast<int64_t>(x.size()) != rows * info_.input_dim) {
    return absl::InvalidArgumentError(absl::StrCat("input has ", x.size(), " values, expected rows x d = ",
                                                   rows, " x ", info_.input_dim));
  }
  if (static_cast<int64_t>(y.size()) / info_.output_dim != rows ||
      static_cast<int64_t>(y.size()) % info_.output_dim != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "output buffer has ", y.size(), " values, expected ", rows * info_.output_dim));
  }
  if (info_.needs_given_route != (options.given != nullptr)) {
    return absl::FailedPreconditionError(
        info_.needs_given_route
            ? "this is a shard's part of a sharded model: it computes the experts or tables a "
              "front routes to it, not whole predictions"
            : "this model routes its own rows; only a shard's part of a sharded model takes a route");
  }
  if (options.given != nullptr) RETURN_IF_ERROR(CheckGivenRoute(*options.given, rows));
  if (route != nullptr) *route = Route{};
  return PredictValidated(x.data(), rows, y.data(), stats, route, options);
}

absl::Status Model::Predict(absl::Span<const float> x, int64_t rows, absl::Span<float> y,
                            PredictStats* stats, Route* route,
                            const PredictOptions& options) const {
  RETURN_IF_ERROR(ValidateBatch(x, rows, info_.input_dim));
  RETURN_IF_ERROR(PredictAdmitted(x, rows, y, stats, route, options));
  return CheckOutputs(y, info_.output_dim);
}

}  // namespace sparse
