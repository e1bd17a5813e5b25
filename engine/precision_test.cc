#include "engine/precision.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/matchers.h"

namespace sparse {
namespace {

TEST(PrecisionTest, NamesParseInAnyCaseAndUnknownOnesSayWhatIsExpected) {
  for (Precision p : {Precision::kFp32, Precision::kBf16, Precision::kInt8}) {
    ASSERT_OK_AND_ASSIGN(Precision parsed, ParsePrecision(PrecisionName(p)));
    EXPECT_EQ(parsed, p);
  }
  ASSERT_OK_AND_ASSIGN(Precision lower, ParsePrecision("bf16"));
  EXPECT_EQ(lower, Precision::kBf16);
  const absl::StatusOr<Precision> bad = ParsePrecision("FP16");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "unknown precision \"FP16\"; expected FP32, BF16 or INT8");
  EXPECT_EQ(PrecisionBytes(Precision::kFp32), 4);
  EXPECT_EQ(PrecisionBytes(Precision::kBf16), 2);
  EXPECT_EQ(PrecisionBytes(Precision::kInt8), 1);
}

TEST(PrecisionTest, Bf16RoundsToNearestEven) {
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.0f)), 1.0f);
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(-2.5f)), -2.5f);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even one, 1.
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.0f + 0x1p-8f)), 1.0f);
  // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: even is 1 + 2^-6.
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.0f + 3 * 0x1p-8f)), 1.0f + 0x1p-6f);
  // Anything else is within half a unit: 2^-8 of the value (8 significant bits).
  for (float v : {0.1f, 3.14159f, -1234.567f, 6.02e23f, 1e-30f}) {
    EXPECT_LE(std::fabs(Bf16ToFloat(FloatToBf16(v)) - v), std::fabs(v) * 0x1p-8f) << v;
  }
}

TEST(PrecisionTest, Int8QuantizationUsesTheLargestMagnitudeAndRoundsToNearest) {
  std::vector<float> x = {0.5f, -2.0f, 1.0f, 0.01f};
  for (int i = 0; i < 40; ++i) x.push_back(0.03f * i - 0.6f);  // past the 16-wide loop
  std::vector<int8_t> q(x.size());
  const float scale = QuantizeInt8(x.data(), static_cast<int64_t>(x.size()), q.data());
  EXPECT_FLOAT_EQ(scale, 2.0f / 127.0f);
  EXPECT_EQ(q[1], -127);
  EXPECT_EQ(q[2], 64);  // 63.5 rounds to the even 64
  EXPECT_EQ(q[3], 1);   // 0.635 -> 1
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_LE(std::fabs(q[i] * scale - x[i]), scale / 2 + 1e-7f) << i;
  }
  std::vector<float> zeros(5, 0.0f);
  std::vector<int8_t> qz(5, 9);
  EXPECT_EQ(QuantizeInt8(zeros.data(), 5, qz.data()), 0.0f);
  EXPECT_EQ(qz, std::vector<int8_t>(5, 0));
  // A strided channel (a column of a [3, 2] matrix) leaves the other column.
  std::vector<float> m = {1.0f, 9.0f, -4.0f, 9.0f, 2.0f, 9.0f};
  std::vector<int8_t> qm(6, 7);
  EXPECT_FLOAT_EQ(QuantizeInt8Strided(m.data(), 3, 2, qm.data()), 4.0f / 127.0f);
  EXPECT_EQ(qm, (std::vector<int8_t>{32, 7, -127, 7, 64, 7}));
}

// The vectorized conversions (AVX-512 where the CPU has it) give exactly
// the portable code's values, ties and tiny values included.
TEST(PrecisionTest, FastConversionsEqualThePortableOnes) {
  std::vector<float> x;
  for (int i = 0; i < 1000; ++i) x.push_back(std::sin(i * 0.37f) * (1 + i % 7));
  x.push_back(1e-39f);         // a float32 denormal
  x.push_back(-3e-41f);
  x.push_back(1.0f + 0x1p-8f);  // a bf16 tie
  x.push_back(7.0f);            // the maximum: 127 exactly
  std::vector<uint16_t> fast(x.size());
  ToBf16(x.data(), static_cast<int64_t>(x.size()), fast.data());
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(fast[i], FloatToBf16(x[i])) << i;
  std::vector<int8_t> q(x.size()), portable(x.size());
  const float scale = QuantizeInt8(x.data(), static_cast<int64_t>(x.size()), q.data());
  const float portable_scale =
      QuantizeInt8Strided(x.data(), static_cast<int64_t>(x.size()), 1, portable.data());
  EXPECT_EQ(scale, portable_scale);
  EXPECT_EQ(q, portable);
  // 63.5 · k: products that land on .5 round to even in both.
  std::vector<float> ties = {127.0f};
  for (int k = -60; k <= 60; ++k) ties.push_back(k + 0.5f);
  std::vector<int8_t> a(ties.size()), b(ties.size());
  QuantizeInt8(ties.data(), static_cast<int64_t>(ties.size()), a.data());
  QuantizeInt8Strided(ties.data(), static_cast<int64_t>(ties.size()), 1, b.data());
  EXPECT_EQ(a, b);
}

}  // namespace
}  // namespace sparse
