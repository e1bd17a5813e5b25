// Training-time linear algebra: large float GEMMs on oneDNN (created per
// call; this is never on the request path) and ridge regression solved in
// double precision with Eigen.
#ifndef SPARSE_TRAINER_LINEAR_ALGEBRA_H_
#define SPARSE_TRAINER_LINEAR_ALGEBRA_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace sparse {

// C[m, n] = op(A) · op(B), all row-major; op(A) is [m, k] (A stored [k, m]
// when trans_a), op(B) is [k, n] (B stored [n, k] when trans_b).
absl::Status Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a,
                  const float* b, float* c);

// h[n, t] = σ(x[n, d] · wᵀ + bias), w stored [t, d]. relu selects σ.
absl::Status RandomFeatures(const float* x, int64_t n, int64_t d, const float* w,
                            const float* bias, int64_t t, bool relu, float* h);

// Normal equations of a least-squares problem with p features and o
// targets, accumulated in double: gram = HᵀH [p, p], rhs = HᵀY [p, o].
struct NormalEquations {
  int64_t p = 0, o = 0;
  std::vector<double> gram, rhs;
};

// Adds the rows of h [n, p] and y [n, o] to `eq` (which must have matching
// p, o; empty vectors are initialised).
absl::Status Accumulate(const float* h, const float* y, int64_t n, NormalEquations* eq);

// Solves (HᵀH + λI) W = HᵀY with λ = ridge · trace(HᵀH) / p (a relative
// ridge, so the same flag works for any feature scale). Returns W [p, o].
absl::StatusOr<std::vector<double>> SolveRidge(const NormalEquations& eq, double ridge);

// A ridge fit that picks λ when the data are too few to trust a fixed one.
// Rows are accumulated into `fit` or `holdout` (about one in ten held out).
// With at least kWellDetermined·p rows the fixed `ridge` is used on all rows;
// otherwise each relative ridge in ridge·{1, 10, 100, 1e3, 1e4} is fitted on
// `fit`, scored by squared error on `holdout`, and the best is refitted on
// all rows (the strongest when there is no holdout). *chosen receives the
// relative ridge used and *validated whether validation chose it.
inline constexpr int64_t kWellDetermined = 8;
absl::StatusOr<std::vector<double>> SolveRidgeChoosingLambda(const NormalEquations& fit,
                                                             const NormalEquations& holdout,
                                                             int64_t rows, double ridge,
                                                             double* chosen, bool* validated);

}  // namespace sparse

#endif  // SPARSE_TRAINER_LINEAR_ALGEBRA_H_
