// BucketIndex: an LSH table's map from a bucket key to its row, laid out
// as a flat array of slots, so that it can live where the table's values
// live: in process memory, or in a read-only mapping of the weight cache
// file (docs/weight-cache.md). absl::flat_hash_map cannot be mapped (its
// layout and hash seed belong to the process); this is open addressing
// with linear probing over a fixed, process-independent hash.
//
// Slot s is 12 bytes at 12·s: the key (u64) and its row (u32; kEmpty for
// an empty slot). The slot count is a power of two at least twice the
// keys, so a probe sequence is short (1.5 slots for a key stored, 2.5 for
// a key that is not, on average) and always reaches an empty slot.
#ifndef SPARSE_ENGINE_BUCKET_INDEX_H_
#define SPARSE_ENGINE_BUCKET_INDEX_H_

#include <cstdint>
#include <cstring>

#include "absl/types/span.h"

namespace sparse {

class BucketIndex {
 public:
  static constexpr int64_t kSlotBytes = 12;
  static constexpr uint32_t kEmpty = 0xffffffffu;
  // The most keys an index holds (rows are u32, kEmpty excluded).
  static constexpr int64_t kMaxKeys = int64_t{1} << 31;

  // Slots for `keys` keys: a power of two >= 2·keys, at least 1.
  static int64_t SlotsFor(int64_t keys);
  static int64_t BytesFor(int64_t keys) { return kSlotBytes * SlotsFor(keys); }
  // Writes the index of `keys` (distinct; row i = keys[i]) into `out`,
  // BytesFor(keys.size()) bytes.
  static void Build(absl::Span<const uint64_t> keys, uint8_t* out);

  // An index of `slots` slots at `bytes` (built by Build).
  BucketIndex(const uint8_t* bytes, int64_t slots) : bytes_(bytes), mask_(slots - 1) {}
  // The row of `key`, or -1 when it is not stored.
  int64_t Find(uint64_t key) const {
    for (uint64_t s = Hash(key) & mask_;; s = (s + 1) & mask_) {
      const uint8_t* slot = bytes_ + kSlotBytes * s;
      uint32_t row;
      std::memcpy(&row, slot + 8, 4);
      if (row == kEmpty) return -1;
      uint64_t stored;
      std::memcpy(&stored, slot, 8);
      if (stored == key) return row;
    }
  }

 private:
  // splitmix64's finaliser: bucket keys are bit codes, far from uniform.
  static uint64_t Hash(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }

  const uint8_t* bytes_;
  uint64_t mask_;
};

}  // namespace sparse

#endif  // SPARSE_ENGINE_BUCKET_INDEX_H_
