#include "engine/hashing.h"

#include <cmath>
#include <cstring>

namespace sparse {
namespace {

constexpr uint64_t kFnvOffset = 14695981039346656037ull;
constexpr uint64_t kFnvPrime = 1099511628211ull;
constexpr double kKeyClamp = 4611686018427387904.0;  // 2^62

inline uint64_t FnvBytes(uint64_t h, const unsigned char* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= kFnvPrime;
  }
  return h;
}

inline uint64_t FnvInt64(uint64_t h, int64_t v) {
  const uint64_t u = static_cast<uint64_t>(v);
  for (int b = 0; b < 8; ++b) {
    h ^= (u >> (8 * b)) & 0xff;
    h *= kFnvPrime;
  }
  return h;
}

inline uint64_t SplitMix64Finalize(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

uint64_t HyperplaneKey(const float* z, int64_t m) {
  uint64_t key = 0;
  for (int64_t j = 0; j < m; ++j) key |= static_cast<uint64_t>(z[j] >= 0.0f) << j;
  return key;
}

uint64_t EuclideanKey(const float* z, int64_t m, float w) {
  uint64_t key = kFnvOffset;
  for (int64_t j = 0; j < m; ++j) {
    double h = std::floor(static_cast<double>(z[j]) / static_cast<double>(w));
    if (!(h <= kKeyClamp)) h = kKeyClamp;  // also NaN (inf - inf from a huge input)
    if (h < -kKeyClamp) h = -kKeyClamp;
    key = FnvInt64(key, static_cast<int64_t>(h));
  }
  return key;
}

uint64_t FoldKey(const int64_t* h, int64_t m) {
  uint64_t key = kFnvOffset;
  for (int64_t j = 0; j < m; ++j) key = FnvInt64(key, h[j]);
  return key;
}

uint64_t InputHash(const float* x, int64_t d, uint64_t seed) {
  const uint64_t h = FnvBytes(kFnvOffset ^ seed, reinterpret_cast<const unsigned char*>(x),
                              static_cast<size_t>(d) * sizeof(float));
  return SplitMix64Finalize(h);
}

}  // namespace sparse
