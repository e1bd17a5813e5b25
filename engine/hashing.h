// Bucket keys and the input hash. These functions define the checkpoint's
// key space (docs/checkpoint-format.md), so a trainer, a PyTorch exporter and
// the engine must compute them identically; changing one is a format change.
#ifndef SPARSE_ENGINE_HASHING_H_
#define SPARSE_ENGINE_HASHING_H_

#include <cstdint>

namespace sparse {

// Hyperplane family: bit j of the key is [z_j >= 0], z_j = a_j·x + b_j.
// REQUIRES: m <= 64.
uint64_t HyperplaneKey(const float* z, int64_t m);

// Euclidean (p-stable) family: h_j = floor(z_j / w), clamped to
// [-2^62, 2^62] (NaN counts as 2^62), folded into 64 bits with FNV-1a over the 8-byte
// little-endian two's-complement value of each h_j (see FoldKey).
uint64_t EuclideanKey(const float* z, int64_t m, float w);

// FNV-1a (64-bit) over the little-endian bytes of each value, in order.
uint64_t FoldKey(const int64_t* h, int64_t m);

// The random-hash router of the paper's appendix D.1: a fixed hash of the
// input's bytes. FNV-1a over the `d` floats' bytes, seeded by XOR-ing `seed`
// into the FNV offset basis, then the splitmix64 finaliser. The same x and
// seed always give the same value.
uint64_t InputHash(const float* x, int64_t d, uint64_t seed);

}  // namespace sparse

#endif  // SPARSE_ENGINE_HASHING_H_
