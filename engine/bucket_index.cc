#include "engine/bucket_index.h"

#include <cstring>

namespace sparse {

int64_t BucketIndex::SlotsFor(int64_t keys) {
  int64_t slots = 1;
  while (slots < 2 * keys) slots *= 2;
  return slots;
}

void BucketIndex::Build(absl::Span<const uint64_t> keys, uint8_t* out) {
  const int64_t slots = SlotsFor(static_cast<int64_t>(keys.size()));
  std::memset(out, 0xff, static_cast<size_t>(kSlotBytes * slots));  // every row kEmpty
  const uint64_t mask = static_cast<uint64_t>(slots - 1);
  for (size_t i = 0; i < keys.size(); ++i) {
    uint64_t s = Hash(keys[i]) & mask;
    for (;; s = (s + 1) & mask) {
      uint32_t row;
      std::memcpy(&row, out + kSlotBytes * s + 8, 4);
      if (row == kEmpty) break;
    }
    const uint32_t row = static_cast<uint32_t>(i);
    std::memcpy(out + kSlotBytes * s, &keys[i], 8);
    std::memcpy(out + kSlotBytes * s + 8, &row, 4);
  }
}

}  // namespace sparse
