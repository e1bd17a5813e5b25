#include "engine/precision.h"

// GCC 12 reports the AVX-512 intrinsics' undefined pass-through operands as
// "(may be) used uninitialized" wherever they are inlined (a known false
// positive); the diagnostic is about the header's code, so it is turned off
// before the header, in this file only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

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

namespace {

// The request path converts every input row: with AVX-512 (which the BF16
// and INT8 kernels need anyway to be fast) 16 values at a time, with
// exactly the scalar code's results. 1024 values measured 0.59 -> ~0.1 us
// (bf16) and 1.22 -> ~0.2 us (int8) on this machine kind.
const bool kAvx512 = __builtin_cpu_supports("avx512f");

__attribute__((target("avx512f"))) void ToBf16Avx512(const float* x, int64_t n, uint16_t* out) {
  int64_t i = 0;
  const __m512i bias = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1);
  for (; i + 16 <= n; i += 16) {
    const __m512i u = _mm512_castps_si512(_mm512_loadu_ps(x + i));
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), one);
    const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, bias), odd), 16);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), _mm512_cvtepi32_epi16(rounded));
  }
  for (; i < n; ++i) out[i] = FloatToBf16(x[i]);
}

}  // namespace

void ToBf16(const float* x, int64_t n, uint16_t* out) {
  if (kAvx512) return ToBf16Avx512(x, n, out);
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

namespace {

// QuantizeInt8 with AVX-512: the same maximum, the same float32 products
// and the same round-to-nearest-even (the default MXCSR mode of cvtps2dq),
// so the same q and scale as the portable loop.
__attribute__((target("avx512f"))) float QuantizeInt8Avx512(const float* x, int64_t n, int8_t* q) {
  __m512 top = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) top = _mm512_max_ps(top, _mm512_abs_ps(_mm512_loadu_ps(x + i)));
  float max_abs = _mm512_reduce_max_ps(top);
  for (int64_t j = i; j < n; ++j) max_abs = std::max(max_abs, std::fabs(x[j]));
  if (max_abs == 0.0f) {
    std::fill(q, q + n, int8_t{0});
    return 0.0f;
  }
  const float inverse = 127.0f / max_abs;
  const __m512 scale = _mm512_set1_ps(inverse);
  const __m512i low = _mm512_set1_epi32(-127), high = _mm512_set1_epi32(127);
  for (i = 0; i + 16 <= n; i += 16) {
    __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i), scale));
    v = _mm512_min_epi32(_mm512_max_epi32(v, low), high);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), _mm512_cvtepi32_epi8(v));
  }
  for (; i < n; ++i) {
    q[i] = static_cast<int8_t>(std::clamp(RoundNearest(x[i] * inverse), -127.0f, 127.0f));
  }
  return max_abs / 127.0f;
}

}  // namespace

float QuantizeInt8(const float* x, int64_t n, int8_t* q) {
  if (kAvx512) return QuantizeInt8Avx512(x, n, q);
  return QuantizeInt8Strided(x, n, 1, q);
}

}  // namespace sparse
