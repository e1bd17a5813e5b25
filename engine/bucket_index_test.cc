// BucketIndex: every stored key finds its row, every other key misses,
// whatever the keys (0, all ones, keys that collide in the low bits).
#include "engine/bucket_index.h"

#include <cstdint>
#include <random>
#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace sparse {
namespace {

void ExpectFindsExactly(const std::vector<uint64_t>& keys, const std::vector<uint64_t>& absent) {
  std::vector<uint8_t> bytes(BucketIndex::BytesFor(static_cast<int64_t>(keys.size())));
  BucketIndex::Build(keys, bytes.data());
  const BucketIndex index(bytes.data(), BucketIndex::SlotsFor(static_cast<int64_t>(keys.size())));
  for (size_t i = 0; i < keys.size(); ++i) EXPECT_EQ(index.Find(keys[i]), static_cast<int64_t>(i));
  for (uint64_t k : absent) EXPECT_EQ(index.Find(k), -1) << k;
}

TEST(BucketIndexTest, SlotsAreAPowerOfTwoAtLeastTwiceTheKeys) {
  EXPECT_EQ(BucketIndex::SlotsFor(0), 1);
  EXPECT_EQ(BucketIndex::SlotsFor(1), 2);
  EXPECT_EQ(BucketIndex::SlotsFor(3), 8);
  EXPECT_EQ(BucketIndex::SlotsFor(4), 8);
  EXPECT_EQ(BucketIndex::BytesFor(4), 96);
}

TEST(BucketIndexTest, AnEmptyTableMissesEveryKey) { ExpectFindsExactly({}, {0, 1, ~0ull}); }

TEST(BucketIndexTest, ExtremeAndCollidingKeysAreFound) {
  // Keys equal in their low 32 bits, 0 and all ones.
  std::vector<uint64_t> keys = {0, ~0ull, 1ull << 32, 2ull << 32, 3ull << 32, 0xffffffffull};
  ExpectFindsExactly(keys, {1, 4ull << 32, ~0ull - 1});
}

TEST(BucketIndexTest, ManyRandomKeys) {
  std::mt19937_64 rng(7);
  std::set<uint64_t> unique;
  while (unique.size() < 5000) unique.insert(rng() & 0xfffff);  // 20-bit codes, as hash keys are
  std::vector<uint64_t> keys(unique.begin(), unique.end());
  std::vector<uint64_t> absent;
  while (absent.size() < 5000) {
    const uint64_t k = rng() & 0xfffff;
    if (unique.count(k) == 0) absent.push_back(k);
  }
  ExpectFindsExactly(keys, absent);
}

}  // namespace
}  // namespace sparse
