// Small test helpers shared by the suites.
#ifndef SPARSE_TESTS_TESTING_MATCHERS_H_
#define SPARSE_TESTS_TESTING_MATCHERS_H_

#include <algorithm>
#include <cmath>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sparse::testing {

// Passes when every |a_i - b_i| <= abs_tol + rel_tol * |b_i|; reports the
// first element that is not.
inline ::testing::AssertionResult AllNear(const std::vector<float>& a, const std::vector<float>& b,
                                          double abs_tol = 1e-4, double rel_tol = 1e-4) {
  if (a.size() != b.size()) {
    return ::testing::AssertionFailure() << "sizes differ: " << a.size() << " vs " << b.size();
  }
  for (size_t i = 0; i < a.size(); ++i) {
    const double diff = std::fabs(double{a[i]} - b[i]);
    if (!(diff <= abs_tol + rel_tol * std::fabs(double{b[i]}))) {
      return ::testing::AssertionFailure()
             << "element " << i << ": " << a[i] << " vs " << b[i] << " (diff " << diff << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

// Within `rel` of each other, relative to the larger of the two values or,
// for outputs near zero (where float sums in another order cancel
// differently), to the largest output of the batch: what a sharded model's
// sums of partial outputs must meet against the whole model's.
inline ::testing::AssertionResult RelativelyNear(const std::vector<float>& a,
                                                 const std::vector<float>& b, double rel) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << "sizes differ";
  float largest = 0;
  for (float v : b) largest = std::max(largest, std::fabs(v));
  for (size_t i = 0; i < a.size(); ++i) {
    const double scale = std::max({std::fabs(a[i]), std::fabs(b[i]), largest});
    if (std::fabs(a[i] - b[i]) > rel * scale) {
      return ::testing::AssertionFailure() << "at " << i << ": " << a[i] << " vs " << b[i];
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace sparse::testing

// Status assertions with the names Abseil uses elsewhere.
#define ASSERT_OK(expr)                                  \
  do {                                                   \
    const ::absl::Status sparse_assert_status_ = (expr); \
    ASSERT_TRUE(sparse_assert_status_.ok()) << sparse_assert_status_; \
  } while (0)
#define EXPECT_OK(expr)                                  \
  do {                                                   \
    const ::absl::Status sparse_expect_status_ = (expr); \
    EXPECT_TRUE(sparse_expect_status_.ok()) << sparse_expect_status_; \
  } while (0)

// `lhs` = the value of a StatusOr expression, or the test stops with its
// status. `lhs` may declare a variable: ASSERT_OK_AND_ASSIGN(Foo f, Make());
#define SPARSE_CONCAT_INNER_(a, b) a##b
#define SPARSE_CONCAT_(a, b) SPARSE_CONCAT_INNER_(a, b)
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ASSERT_OK_AND_ASSIGN_IMPL_(SPARSE_CONCAT_(sparse_statusor_, __LINE__), lhs, expr)
#define ASSERT_OK_AND_ASSIGN_IMPL_(statusor, lhs, expr)   \
  auto statusor = (expr);                                 \
  ASSERT_TRUE(statusor.ok()) << statusor.status();        \
  lhs = std::move(statusor).value()

#endif  // SPARSE_TESTS_TESTING_MATCHERS_H_
