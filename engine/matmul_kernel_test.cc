#include "engine/matmul_kernel.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/matchers.h"
#include "tests/testing/random_models.h"

namespace sparse {
namespace {

using ::sparse::testing::AllNear;
using ::sparse::testing::RandomInputs;

// y = x·W (+bias) computed with plain loops; W given as [N, K] or [K, N].
std::vector<float> NaiveMatmul(const std::vector<float>& x, int64_t rows, const std::vector<float>& w,
                               const std::vector<float>& bias, const MatmulSpec& spec) {
  std::vector<float> y(rows * spec.n);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < spec.n; ++j) {
      double acc = spec.bias ? bias[j] : 0.0;
      for (int64_t i = 0; i < spec.k; ++i) {
        const float wij = spec.layout == MatmulSpec::WeightLayout::kOutputMajor
                              ? w[j * spec.k + i]
                              : w[i * spec.n + j];
        acc += double{x[r * spec.k + i]} * wij;
      }
      if (spec.relu && acc < 0) acc = 0;
      y[r * spec.n + j] = static_cast<float>(acc);
    }
  }
  return y;
}

// w in the layout Run() expects: packed when the kernel packs.
std::vector<float> LayoutForRun(const MatmulKernel& kernel, const std::vector<float>& w) {
  if (!kernel.packs()) return w;
  absl::StatusOr<PackedWeights> packed = kernel.PackAll(w.data(), 1);
  EXPECT_TRUE(packed.ok()) << packed.status();
  if (!packed.ok()) return {};
  return std::vector<float>(packed->data(), packed->data() + packed->size());
}

TEST(MatmulKernelTest, EveryRowCountMatchesNaiveAndCountsExactFlops) {
  for (auto layout : {MatmulSpec::WeightLayout::kOutputMajor, MatmulSpec::WeightLayout::kInputMajor}) {
    const MatmulSpec spec{.k = 13, .n = 5, .layout = layout, .bias = true, .relu = true};
    absl::StatusOr<MatmulKernel> kernel = MatmulKernel::Create(spec);
    ASSERT_TRUE(kernel.ok()) << kernel.status();
    const std::vector<float> w = RandomInputs(spec.n, spec.k, 1);
    const std::vector<float> w_run = LayoutForRun(*kernel, w);
    const std::vector<float> bias = RandomInputs(1, spec.n, 2);
    for (int64_t rows : {1, 2, 3, 7, 8, 31, 127, 128, 129, 300}) {
      const std::vector<float> x = RandomInputs(rows, spec.k, 100 + rows);
      std::vector<float> y(rows * spec.n, 123.0f);
      int64_t flops = 0, bytes = 0;
      ASSERT_OK(kernel->Run(x.data(), rows, w_run.data(), bias.data(), y.data(), &flops, &bytes));
      EXPECT_TRUE(AllNear(y, NaiveMatmul(x, rows, w, bias, spec))) << "rows=" << rows;
      EXPECT_EQ(flops, 2 * rows * spec.k * spec.n) << "rows=" << rows;
    }
  }
}

TEST(MatmulKernelTest, PacksLargeWeightsIntoBlockedLayoutAndStaysExact) {
  for (auto layout : {MatmulSpec::WeightLayout::kOutputMajor, MatmulSpec::WeightLayout::kInputMajor}) {
    const MatmulSpec spec{.k = 128, .n = 256, .layout = layout, .bias = true, .relu = true};
    absl::StatusOr<MatmulKernel> kernel = MatmulKernel::Create(spec);
    ASSERT_TRUE(kernel.ok()) << kernel.status();
    EXPECT_TRUE(kernel->packs());
    // Three matrices packed together, each used through its own offset.
    const std::vector<float> w = RandomInputs(3 * spec.n, spec.k, 5);
    absl::StatusOr<PackedWeights> packed = kernel->PackAll(w.data(), 3);
    ASSERT_TRUE(packed.ok()) << packed.status();
    ASSERT_EQ(packed->size(), static_cast<size_t>(3 * kernel->packed_floats()));
    const std::vector<float> bias = RandomInputs(1, spec.n, 6);
    for (int64_t i = 0; i < 3; ++i) {
      const std::vector<float> wi(w.begin() + i * spec.k * spec.n, w.begin() + (i + 1) * spec.k * spec.n);
      for (int64_t rows : {1, 5, 128, 133}) {
        const std::vector<float> x = RandomInputs(rows, spec.k, 7 + rows);
        std::vector<float> y(rows * spec.n);
        int64_t flops = 0, bytes = 0;
        ASSERT_OK(kernel->Run(x.data(), rows, packed->data() + i * kernel->packed_floats(),
                              bias.data(), y.data(), &flops, &bytes));
        EXPECT_TRUE(AllNear(y, NaiveMatmul(x, rows, wi, bias, spec))) << "matrix " << i << " rows " << rows;
      }
    }
  }
}

TEST(MatmulKernelTest, KeepsPlainLayoutWhenPackingWouldPadOrIsDisallowed) {
  // N = 1 would pad to a 64-wide block: 64x the bytes for a memory-bound GEMV.
  absl::StatusOr<MatmulKernel> narrow = MatmulKernel::Create({.k = 256, .n = 1});
  ASSERT_TRUE(narrow.ok());
  EXPECT_FALSE(narrow->packs());
  EXPECT_EQ(narrow->packed_floats(), 256);
  absl::StatusOr<MatmulKernel> gathered =
      MatmulKernel::Create({.k = 128, .n = 256, .allow_packing = false});
  ASSERT_TRUE(gathered.ok());
  EXPECT_FALSE(gathered->packs());
}

TEST(MatmulKernelTest, KeepsWeightsBeyondTheCacheOnceBlockedAndIsExact) {
  // 1024 x 8448 floats = 33 MiB, more than the L3 holds: one blocked copy
  // (docs/benchmarks.md: a second, plain one did not pay for its memory),
  // exact at every row count.
  const MatmulSpec spec{.k = 1024, .n = 8448, .bias = true, .relu = true};
  absl::StatusOr<MatmulKernel> kernel = MatmulKernel::Create(spec);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  EXPECT_TRUE(kernel->packs());
  EXPECT_FALSE(kernel->runs_sgemm());
  EXPECT_EQ(kernel->packed_floats(), spec.k * spec.n);  // no padding, no second copy
  const std::vector<float> w = RandomInputs(spec.n, spec.k, 21);
  const std::vector<float> w_run = LayoutForRun(*kernel, w);
  const std::vector<float> bias = RandomInputs(1, spec.n, 22);
  for (int64_t rows : {1, 2, 5, 32}) {
    const std::vector<float> x = RandomInputs(rows, spec.k, 30 + rows);
    std::vector<float> y(rows * spec.n);
    int64_t flops = 0, bytes = 0;
    ASSERT_OK(kernel->Run(x.data(), rows, w_run.data(), bias.data(), y.data(), &flops, &bytes));
    EXPECT_TRUE(AllNear(y, NaiveMatmul(x, rows, w, bias, spec))) << "rows " << rows;
    EXPECT_EQ(flops, 2 * rows * spec.k * spec.n);
  }
}

TEST(MatmulKernelTest, KeepsNarrowWeightsPlainInTheLayoutSgemmRunsFastest) {
  struct Case {
    MatmulSpec spec;
    bool packs;  // whether the plain layout chosen differs from spec.layout
  };
  // K >= N: output-major (dot products along K); K < N: input-major.
  const Case cases[] = {
      {{.k = 512, .n = 6, .layout = MatmulSpec::WeightLayout::kOutputMajor, .bias = true}, false},
      {{.k = 512, .n = 6, .layout = MatmulSpec::WeightLayout::kInputMajor, .bias = true}, true},
      {{.k = 8, .n = 88, .layout = MatmulSpec::WeightLayout::kOutputMajor, .bias = true,
        .relu = true}, true},
      {{.k = 64, .n = 1, .layout = MatmulSpec::WeightLayout::kInputMajor, .accumulate = true},
       false},
  };
  for (const Case& c : cases) {
    const MatmulSpec& spec = c.spec;
    absl::StatusOr<MatmulKernel> kernel = MatmulKernel::Create(spec);
    ASSERT_TRUE(kernel.ok()) << kernel.status();
    EXPECT_EQ(kernel->packs(), c.packs) << "K=" << spec.k << " N=" << spec.n;
    EXPECT_EQ(kernel->packed_floats(), spec.k * spec.n);
    const std::vector<float> w = RandomInputs(spec.n, spec.k, 8);
    const std::vector<float> w_run = LayoutForRun(*kernel, w);
    const std::vector<float> bias = RandomInputs(1, spec.n, 9);
    // 1 and 2 rows run on sgemm, 3 on sgemm and a primitive, 32 on a
    // primitive (all on sgemm when N = 1).
    for (int64_t rows : {1, 2, 3, 32}) {
      const std::vector<float> x = RandomInputs(rows, spec.k, 10 + rows);
      std::vector<float> y(rows * spec.n, 0.25f);
      int64_t flops = 0, bytes = 0;
      ASSERT_OK(kernel->Run(x.data(), rows, w_run.data(), bias.data(), y.data(), &flops, &bytes));
      std::vector<float> expected = NaiveMatmul(x, rows, w, bias, spec);
      if (spec.accumulate) {
        for (float& v : expected) v += 0.25f;
      }
      EXPECT_TRUE(AllNear(y, expected)) << "K=" << spec.k << " N=" << spec.n << " rows " << rows;
      EXPECT_EQ(flops, 2 * rows * spec.k * spec.n);
    }
  }
}

TEST(MatmulKernelTest, AccumulateAddsIntoOutput) {
  const MatmulSpec spec{.k = 4, .n = 3, .accumulate = true};
  absl::StatusOr<MatmulKernel> kernel = MatmulKernel::Create(spec);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  const std::vector<float> w = RandomInputs(spec.n, spec.k, 3);
  const std::vector<float> w_run = LayoutForRun(*kernel, w);
  const std::vector<float> x = RandomInputs(5, spec.k, 4);
  std::vector<float> y(5 * spec.n, 1.5f);
  int64_t flops = 0, bytes = 0;
  ASSERT_OK(kernel->Run(x.data(), 5, w_run.data(), nullptr, y.data(), &flops, &bytes));
  std::vector<float> expected = NaiveMatmul(x, 5, w, {}, spec);
  for (float& v : expected) v += 1.5f;
  EXPECT_TRUE(AllNear(y, expected));
}

// Hot reloads create and destroy kernels for as long as the server runs:
// a destroyed kernel's per-thread state must go too.
TEST(MatmulKernelTest, ADestroyedKernelLeavesNothingInTheThreadsCache) {
  const MatmulSpec spec{.k = 4, .n = 3};
  const int64_t before = ThreadArgCacheEntriesForTesting();
  for (int round = 0; round < 3; ++round) {
    std::vector<MatmulKernel> kernels;
    for (int i = 0; i < 10; ++i) {
      absl::StatusOr<MatmulKernel> kernel = MatmulKernel::Create(spec);
      ASSERT_TRUE(kernel.ok()) << kernel.status();
      kernels.push_back(*std::move(kernel));  // moved-from kernels retire nothing
    }
    const std::vector<float> w = LayoutForRun(kernels[0], RandomInputs(spec.n, spec.k, 3));
    const std::vector<float> x = RandomInputs(8, spec.k, 4);
    std::vector<float> y(8 * spec.n);
    int64_t flops = 0, bytes = 0;
    for (const MatmulKernel& k : kernels) {
      ASSERT_OK(k.Run(x.data(), 8, w.data(), nullptr, y.data(), &flops, &bytes));  // one 8-row bucket
    }
    EXPECT_EQ(ThreadArgCacheEntriesForTesting(), before + 10);
  }
  EXPECT_EQ(ThreadArgCacheEntriesForTesting(), before);
}

// The float64 reference for BF16 and INT8 kernels, with the bound on the
// error each precision may add, per output:
//  - BF16: weights and inputs are each rounded to 8 significant bits (off
//    by at most 2^-8 of their magnitude), so a product is off by at most
//    (1 + 2^-8)^2 - 1 < 2^-7 + 2^-15 of its magnitude:
//    |y - ref| <= (2^-7 + 2^-15) · Σ_i |x_i·w_i|  (+ float32 accumulation, 1e-5).
//  - INT8: x_i and w_ij are off by at most half their scale (s_x for the
//    row, s_j for the output channel), so
//    |y - ref| <= Σ_i (|x_i|·s_j/2 + |w_ij|·s_x/2 + s_x·s_j/4)  (+ 1e-5).
// ReLU and accumulation do not widen either bound.
struct Reference {
  std::vector<double> y, bound;
};
Reference ReducedReference(const std::vector<float>& x, int64_t rows, const std::vector<float>& w,
                           const std::vector<float>& bias, const std::vector<float>& y0,
                           const MatmulSpec& spec) {
  auto weight = [&](int64_t i, int64_t j) -> double {
    return spec.layout == MatmulSpec::WeightLayout::kOutputMajor ? w[j * spec.k + i]
                                                                 : w[i * spec.n + j];
  };
  std::vector<double> channel_scale(spec.n, 0.0);
  for (int64_t j = 0; j < spec.n; ++j) {
    for (int64_t i = 0; i < spec.k; ++i) {
      channel_scale[j] = std::max(channel_scale[j], std::fabs(weight(i, j)) / 127.0);
    }
  }
  Reference ref;
  for (int64_t r = 0; r < rows; ++r) {
    double row_scale = 0;
    for (int64_t i = 0; i < spec.k; ++i) {
      row_scale = std::max(row_scale, std::fabs(double{x[r * spec.k + i]}) / 127.0);
    }
    for (int64_t j = 0; j < spec.n; ++j) {
      double acc = spec.bias ? bias[j] : 0.0, magnitude = 0.0, int8_bound = 0.0;
      for (int64_t i = 0; i < spec.k; ++i) {
        const double xi = x[r * spec.k + i], wij = weight(i, j);
        acc += xi * wij;
        magnitude += std::fabs(xi * wij);
        int8_bound += std::fabs(xi) * channel_scale[j] / 2 + std::fabs(wij) * row_scale / 2 +
                      row_scale * channel_scale[j] / 4;
      }
      if (spec.relu && acc < 0) acc = 0;
      if (spec.accumulate) acc += y0[r * spec.n + j];
      ref.y.push_back(acc);
      ref.bound.push_back(1e-5 + (spec.precision == Precision::kBf16 ? magnitude * (0x1p-7 + 0x1p-15)
                                                                     : int8_bound));
    }
  }
  return ref;
}

TEST(MatmulKernelTest, Bf16AndInt8AreWithinTheirBoundOfTheFloat64Reference) {
  using Layout = MatmulSpec::WeightLayout;
  for (Precision precision : {Precision::kBf16, Precision::kInt8}) {
    for (const MatmulSpec& shape :
         {MatmulSpec{.k = 1024, .n = 256, .layout = Layout::kOutputMajor, .bias = true,
                     .relu = true},
          MatmulSpec{.k = 256, .n = 64, .layout = Layout::kInputMajor, .accumulate = true},
          MatmulSpec{.k = 240, .n = 64, .layout = Layout::kOutputMajor, .bias = true}}) {
      MatmulSpec spec = shape;
      spec.precision = precision;
      ASSERT_OK_AND_ASSIGN(MatmulKernel kernel, MatmulKernel::Create(spec));
      EXPECT_EQ(kernel.precision(), precision);
      EXPECT_FALSE(kernel.runs_sgemm());
      // Two matrices, the second used through its offset.
      const std::vector<float> w = RandomInputs(2 * spec.n, spec.k, 41);
      ASSERT_OK_AND_ASSIGN(PackedWeights packed, kernel.PackAll(w.data(), 2));
      const std::vector<float> w1(w.begin() + spec.k * spec.n, w.end());
      const std::vector<float> bias = RandomInputs(1, spec.n, 42);
      for (int64_t rows : {1, 2, 3, 5, 32, 128, 130}) {
        std::vector<float> x = RandomInputs(rows, spec.k, 50 + rows);
        if (rows == 5) std::fill(x.begin() + spec.k, x.begin() + 2 * spec.k, 0.0f);  // a zero row
        std::vector<float> y(rows * spec.n, 0.5f);
        const std::vector<float> y0 = y;
        int64_t flops = 0, bytes = 0;
        ASSERT_OK(kernel.Run(x.data(), rows, packed.data() + kernel.packed_floats(), bias.data(),
                             y.data(), &flops, &bytes));
        const Reference ref = ReducedReference(x, rows, w1, bias, y0, spec);
        for (size_t i = 0; i < y.size(); ++i) {
          ASSERT_LE(std::fabs(y[i] - ref.y[i]), ref.bound[i])
              << PrecisionName(precision) << " K=" << spec.k << " N=" << spec.n << " rows "
              << rows << " element " << i << ": " << y[i] << " vs " << ref.y[i];
        }
        EXPECT_EQ(flops, 2 * rows * spec.k * spec.n);
      }
    }
  }
}

// One row at BF16 and INT8 runs on the kernel's own code (matmul_kernel.cc,
// "One-row kernels"), which reads oneDNN's packed layout: its outputs must
// be the primitive's, bit for bit, at every shape and epilogue.
TEST(MatmulKernelTest, OneRowAtBf16AndInt8IsThePrimitivesResultBitForBit) {
  using Layout = MatmulSpec::WeightLayout;
  struct Shape {
    int64_t k, n;
  };
  for (Precision precision : {Precision::kBf16, Precision::kInt8}) {
    for (const Shape shape : {Shape{1024, 256}, Shape{100, 100}, Shape{37, 70}, Shape{64, 64},
                              Shape{4096, 64}, Shape{1000, 300}, Shape{33, 129}, Shape{2048, 16},
                              Shape{3, 200}, Shape{16384, 128}, Shape{600, 64}, Shape{1536, 64},
                              Shape{1025, 64}}) {
      for (int flags = 0; flags < 8; ++flags) {
        MatmulSpec spec{.k = shape.k,
                        .n = shape.n,
                        .layout = flags % 2 == 0 ? Layout::kOutputMajor : Layout::kInputMajor,
                        .bias = (flags & 1) != 0,
                        .relu = (flags & 2) != 0,
                        .accumulate = (flags & 4) != 0,
                        .precision = precision};
        SetRowKernelsForTesting(false);
        absl::StatusOr<MatmulKernel> primitive = MatmulKernel::Create(spec);
        SetRowKernelsForTesting(true);
        ASSERT_OK_AND_ASSIGN(MatmulKernel own, MatmulKernel::Create(spec));
        ASSERT_OK(primitive.status());
        if (own.precision() != precision) continue;  // too narrow: stays FP32
        ASSERT_EQ(own.packed_floats(), primitive->packed_floats());
        const int64_t seed = 100 * flags + shape.k + shape.n;
        std::vector<float> w = RandomInputs(2 * spec.n, spec.k, seed);
        for (int64_t i = 0; i < spec.k; ++i) w[spec.k * spec.n + i] = 0.0f;  // zero weights
        ASSERT_OK_AND_ASSIGN(PackedWeights packed, own.PackAll(w.data(), 2));
        ASSERT_OK_AND_ASSIGN(PackedWeights packed_too, primitive->PackAll(w.data(), 2));
        ASSERT_EQ(std::memcmp(packed.data(), packed_too.data(), packed.size() * sizeof(float)), 0);
        std::vector<float> bias = RandomInputs(1, spec.n, seed + 1);
        bias[0] = 0.0f;
        std::vector<float> x = RandomInputs(4, spec.k, seed + 2);
        std::fill(x.begin() + spec.k, x.begin() + 2 * spec.k, 0.0f);  // a zero row
        for (int64_t i = 0; i < spec.k; i += 3) x[2 * spec.k + i] *= 1e6f;  // a wide row
        for (int m = 0; m < 2; ++m) {
          const float* matrix = packed.data() + m * own.packed_floats();
          for (int64_t r = 0; r < 4; ++r) {
            std::vector<float> y = RandomInputs(1, spec.n, seed + 3 + r), y_too = y;
            int64_t flops = 0, bytes = 0, flops_too = 0, bytes_too = 0;
            ASSERT_OK(own.Run(x.data() + r * spec.k, 1, matrix, bias.data(), y.data(), &flops,
                              &bytes));
            ASSERT_OK(primitive->Run(x.data() + r * spec.k, 1, matrix, bias.data(),
                                     y_too.data(), &flops_too, &bytes_too));
            EXPECT_EQ(flops, flops_too);
            EXPECT_EQ(bytes, bytes_too);
            for (int64_t j = 0; j < spec.n; ++j) {
              uint32_t a, b;
              std::memcpy(&a, &y[j], 4);
              std::memcpy(&b, &y_too[j], 4);
              ASSERT_EQ(a, b) << PrecisionName(precision) << " K=" << spec.k << " N=" << spec.n
                              << " flags " << flags << " matrix " << m << " row " << r
                              << " output " << j << ": " << y[j] << " vs " << y_too[j];
            }
          }
        }
      }
    }
  }
}

TEST(MatmulKernelTest, CountsWeightBytesOncePerExecution) {
  for (Precision precision : {Precision::kFp32, Precision::kBf16, Precision::kInt8}) {
    const MatmulSpec spec{.k = 512, .n = 128, .bias = true, .precision = precision};
    ASSERT_OK_AND_ASSIGN(MatmulKernel kernel, MatmulKernel::Create(spec));
    // K·N elements at the precision's width, N scales at INT8, N biases.
    const int64_t expected = spec.k * spec.n * PrecisionBytes(precision) +
                             (precision == Precision::kInt8 ? 4 * spec.n : 0) + 4 * spec.n;
    EXPECT_EQ(kernel.weight_bytes_per_read(), expected) << PrecisionName(precision);
    const std::vector<float> w = RandomInputs(spec.n, spec.k, 1);
    ASSERT_OK_AND_ASSIGN(PackedWeights packed, kernel.PackAll(w.data(), 1));
    const std::vector<float> bias(spec.n, 0.0f);
    // 1 row: one execution; 3 = 2 + 1 and 130 = 128 + 2: two each.
    for (const auto& [rows, reads] : {std::pair<int64_t, int64_t>{1, 1}, {3, 2}, {130, 2}}) {
      const std::vector<float> x = RandomInputs(rows, spec.k, 2);
      std::vector<float> y(rows * spec.n);
      int64_t flops = 0, bytes = 0;
      ASSERT_OK(kernel.Run(x.data(), rows, packed.data(), bias.data(), y.data(), &flops, &bytes));
      EXPECT_EQ(bytes, reads * expected) << PrecisionName(precision) << " rows " << rows;
    }
  }
}

TEST(MatmulKernelTest, ANarrowMatrixStaysFp32AndAHugeWeightIsRefusedAtBf16) {
  ASSERT_OK_AND_ASSIGN(MatmulKernel narrow,
                       MatmulKernel::Create({.k = 256, .n = 1, .precision = Precision::kInt8}));
  EXPECT_EQ(narrow.precision(), Precision::kFp32);
  EXPECT_EQ(narrow.weight_bytes_per_read(), 256 * 4);
  EXPECT_FALSE(MatmulKernel::Create({.k = 64, .n = 64, .allow_packing = false,
                                     .precision = Precision::kBf16})
                   .ok());
  ASSERT_OK_AND_ASSIGN(MatmulKernel kernel,
                       MatmulKernel::Create({.k = 64, .n = 64, .precision = Precision::kBf16}));
  std::vector<float> w(64 * 64, 1.0f);
  w[100] = 3.4e38f;  // rounds beyond bfloat16's largest finite value
  const absl::StatusOr<PackedWeights> packed = kernel.PackAll(w.data(), 1);
  ASSERT_FALSE(packed.ok());
  EXPECT_NE(packed.status().message().find("overflows bfloat16"), std::string::npos)
      << packed.status();
}

TEST(MatmulKernelTest, RejectsEmptyShape) {
  EXPECT_FALSE(MatmulKernel::Create({.k = 0, .n = 3}).ok());
}

}  // namespace
}  // namespace sparse
