// Serving precision: the number format a model's large weight matrices are
// kept and multiplied in, and the conversions between it and float32.
//
//  - FP32: float32 weights and activations (the checkpoint's own values).
//  - BF16: bfloat16 weights (float32 rounded to nearest even, 8 significant
//    bits: within 2^-8 of the value); each input row is rounded to bfloat16 the same way before the
//    product, which accumulates in float32. oneDNN 2.6's matmul has no
//    float32-input/bfloat16-weight mode, hence the rounded inputs.
//  - INT8: int8 weights with one float32 scale per output channel
//    (w ≈ q·s, s = max|w| / 127 over the channel), and inputs quantized per
//    row the same way when the request runs (dynamic quantization); the
//    product accumulates in int32 and both scales are applied after it.
//
// Outputs, biases, routers (LSH hyperplanes, k-means centroids) and LSH hash
// projections stay float32 at every precision, so a request is routed exactly
// as at FP32. docs/checkpoint-format.md gives the bytes each precision reads.
#ifndef SPARSE_ENGINE_PRECISION_H_
#define SPARSE_ENGINE_PRECISION_H_

#include <cstdint>
#include <cstring>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sparse {

enum class Precision { kFp32, kBf16, kInt8 };

// "FP32", "BF16", "INT8": the spelling of config.pbtxt and the CLIs.
absl::string_view PrecisionName(Precision precision);
// Accepts those names in any case.
absl::StatusOr<Precision> ParsePrecision(absl::string_view name);

// Bytes one weight element takes at `precision`.
int64_t PrecisionBytes(Precision precision);

// float32 -> bfloat16, rounding to nearest even. Finite inputs only (the
// engine validates weights and inputs before converting them); a value
// beyond bfloat16's range rounds to infinity, which the callers check.
inline uint16_t FloatToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float Bf16ToFloat(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// Whether a bfloat16 value is finite (not the infinity a value beyond
// bfloat16's range rounds to, nor a NaN).
inline bool Bf16IsFinite(uint16_t b) { return (b & 0x7f80u) != 0x7f80u; }

// Rounds n floats to bfloat16.
void ToBf16(const float* x, int64_t n, uint16_t* out);

// Quantizes n values to int8 with one symmetric scale: returns s =
// max|x| / 127 (0 when every value is 0) and writes q = round(x / s), in
// [-127, 127], so that x ≈ q·s.
float QuantizeInt8(const float* x, int64_t n, int8_t* q);

// The same over a strided channel: values x[i * stride], written to
// q[i * stride], for i < n.
float QuantizeInt8Strided(const float* x, int64_t n, int64_t stride, int8_t* q);

}  // namespace sparse

#endif  // SPARSE_ENGINE_PRECISION_H_
