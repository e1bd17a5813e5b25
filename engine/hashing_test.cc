#include "engine/hashing.h"

#include <vector>

#include "gtest/gtest.h"

namespace sparse {
namespace {

TEST(HashingTest, HyperplaneKeySetsBitJWhenProjectionIsNonNegative) {
  const float z[] = {0.5f, -0.1f, 0.0f, -3.0f, 2.0f};
  EXPECT_EQ(HyperplaneKey(z, 5), 0b10101u);
}

TEST(HashingTest, HyperplaneKeyUsesAll64Bits) {
  std::vector<float> z(64, -1.0f);
  z[63] = 1.0f;
  EXPECT_EQ(HyperplaneKey(z.data(), 64), uint64_t{1} << 63);
}

// Known values of FNV-1a 64 so that other writers (docs/checkpoint-format.md)
// can check their implementation against the same numbers.
TEST(HashingTest, FoldKeyIsFnv1aOverLittleEndianInt64s) {
  EXPECT_EQ(FoldKey(nullptr, 0), 14695981039346656037ull);
  const int64_t zero[] = {0};
  // FNV-1a of eight zero bytes.
  uint64_t h = 14695981039346656037ull;
  for (int i = 0; i < 8; ++i) h *= 1099511628211ull;
  EXPECT_EQ(FoldKey(zero, 1), h);
  const int64_t a[] = {1, -2}, b[] = {-2, 1};
  EXPECT_NE(FoldKey(a, 2), FoldKey(b, 2));
}

TEST(HashingTest, EuclideanKeyFloorsAndFolds) {
  const float z[] = {0.74f, -0.01f, 1.5f};
  const int64_t h[] = {1, -1, 3};  // floor(z / 0.5)
  EXPECT_EQ(EuclideanKey(z, 3, 0.5f), FoldKey(h, 3));
}

TEST(HashingTest, EuclideanKeyClampsHugeProjections) {
  const float z[] = {3e30f, -3e30f};
  const int64_t h[] = {int64_t{1} << 62, -(int64_t{1} << 62)};
  EXPECT_EQ(EuclideanKey(z, 2, 1e-3f), FoldKey(h, 2));
}

TEST(HashingTest, InputHashIsDeterministicAndSeeded) {
  const float x[] = {0.1f, 0.2f, -0.3f};
  EXPECT_EQ(InputHash(x, 3, 7), InputHash(x, 3, 7));
  EXPECT_NE(InputHash(x, 3, 7), InputHash(x, 3, 8));
  const float y[] = {0.1f, 0.2f, -0.30001f};
  EXPECT_NE(InputHash(x, 3, 7), InputHash(y, 3, 7));
}

}  // namespace
}  // namespace sparse
