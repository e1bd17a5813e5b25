#include "engine/precision.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace sparse {

absl::string_view PrecisionName(Precision precision) {
  switch (precision) {
    case Precision::kFp32:
      return "FP32";
    case Precision::kBf16:
      return "BF16";
    case Precision::kInt8:
      return "INT8";
  }
  return "?";
}

absl::StatusOr<Precision> ParsePrecision(absl::string_view name) {
  const std::string upper = absl::AsciiStrToUpper(name);
  for (Precision p : {Precision::kFp32, Precision::kBf16, Precision::kInt8}) {
    if (upper == PrecisionName(p)) return p;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown precision \"", name, "\"; expected FP32, BF16 or INT8"));
}

int64_t PrecisionBytes(Precision precision) {
  switch (precision) {
    case Precision::kFp32:
      return 4;
    case Precision::kBf16:
      return 2;
    case Precision::kInt8:
      return 1;
  }
  return 4;
}

void ToBf16(const float* x, int64_t n, uint16_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = FloatToBf16(x[i]);
}

namespace {

// Round to nearest even for |v| < 2^22, with plain float additions the
// compiler vectorizes (std::nearbyint is a library call per value here).
inline float RoundNearest(float v) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  return (v + kMagic) - kMagic;
}

}  // namespace

float QuantizeInt8Strided(const float* x, int64_t n, int64_t stride, int8_t* q) {
  // Sixteen running maxima: independent chains the compiler can vectorize.
  float lanes[16] = {};
  int64_t i = 0;
  if (stride == 1) {
    for (; i + 16 <= n; i += 16) {
      for (int j = 0; j < 16; ++j) lanes[j] = std::max(lanes[j], std::fabs(x[i + j]));
    }
  }
  for (; i < n; ++i) lanes[0] = std::max(lanes[0], std::fabs(x[i * stride]));
  float max_abs = 0.0f;
  for (float v : lanes) max_abs = std::max(max_abs, v);
  if (max_abs == 0.0f) {
    for (int64_t j = 0; j < n; ++j) q[j * stride] = 0;
    return 0.0f;
  }
  const float inverse = 127.0f / max_abs;
  for (int64_t j = 0; j < n; ++j) {
    // |x·inverse| <= 127 up to rounding; the clamp keeps the edge in range.
    const float v = std::clamp(RoundNearest(x[j * stride] * inverse), -127.0f, 127.0f);
    q[j * stride] = static_cast<int8_t>(v);
  }
  return max_abs / 127.0f;
}

float QuantizeInt8(const float* x, int64_t n, int8_t* q) { return QuantizeInt8Strided(x, n, 1, q); }

}  // namespace sparse
