#include "trainer/linear_algebra.h"

#include <algorithm>

#include "Eigen/Dense"
#include "absl/strings/str_cat.h"
#include "engine/workspace.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace sparse {

absl::Status Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a,
                  const float* b, float* c) {
  using dnnl::memory;
  if (m == 0 || n == 0) return absl::OkStatus();
  if (k == 0) {
    std::fill(c, c + m * n, 0.0f);
    return absl::OkStatus();
  }
  try {
    const memory::desc a_md({m, k}, memory::data_type::f32,
                            trans_a ? memory::dims{1, m} : memory::dims{k, 1});
    const memory::desc b_md({k, n}, memory::data_type::f32,
                            trans_b ? memory::dims{1, k} : memory::dims{n, 1});
    const memory::desc c_md({m, n}, memory::data_type::f32, memory::dims{n, 1});
    const dnnl::engine& engine = CpuEngine();
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), engine);
    memory am(a_md, engine, const_cast<float*>(a));
    memory bm(b_md, engine, const_cast<float*>(b));
    memory cm(c_md, engine, c);
    dnnl::stream stream(engine);
    dnnl::matmul(pd).execute(stream, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
    stream.wait();
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("oneDNN GEMM ", m, "x", n, "x", k, " failed: ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status RandomFeatures(const float* x, int64_t n, int64_t d, const float* w,
                            const float* bias, int64_t t, bool relu, float* h) {
  if (absl::Status s = Gemm(false, true, n, t, d, x, w, h); !s.ok()) return s;
  for (int64_t r = 0; r < n; ++r) {
    float* row = h + r * t;
    for (int64_t j = 0; j < t; ++j) {
      const float v = row[j] + bias[j];
      row[j] = relu && v < 0.0f ? 0.0f : v;
    }
  }
  return absl::OkStatus();
}

absl::Status Accumulate(const float* h, const float* y, int64_t n, NormalEquations* eq) {
  const int64_t p = eq->p, o = eq->o;
  if (eq->gram.empty()) eq->gram.assign(p * p, 0.0);
  if (eq->rhs.empty()) eq->rhs.assign(p * o, 0.0);
  if (n == 0) return absl::OkStatus();
  // Float GEMMs over chunks, summed in double: a chunk bounds the float
  // rounding error, the double sum keeps it from growing with n.
  constexpr int64_t kChunk = 8192;
  std::vector<float> gram(p * p), rhs(p * o);
  for (int64_t r = 0; r < n; r += kChunk) {
    const int64_t rows = std::min(kChunk, n - r);
    if (absl::Status s = Gemm(true, false, p, p, rows, h + r * p, h + r * p, gram.data()); !s.ok()) {
      return s;
    }
    if (absl::Status s = Gemm(true, false, p, o, rows, h + r * p, y + r * o, rhs.data()); !s.ok()) {
      return s;
    }
    for (int64_t i = 0; i < p * p; ++i) eq->gram[i] += gram[i];
    for (int64_t i = 0; i < p * o; ++i) eq->rhs[i] += rhs[i];
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<double>> SolveRidge(const NormalEquations& eq, double ridge) {
  const int64_t p = eq.p, o = eq.o;
  Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> gram(
      eq.gram.data(), p, p);
  Eigen::MatrixXd a = gram;
  double trace = a.trace();
  const double lambda = std::max(ridge * trace / static_cast<double>(p), 1e-12);
  a.diagonal().array() += lambda;
  Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> rhs(
      eq.rhs.data(), p, o);
  Eigen::LDLT<Eigen::MatrixXd> ldlt(a);
  if (ldlt.info() != Eigen::Success) {
    return absl::InternalError("ridge regression: the regularised system could not be factorised");
  }
  Eigen::MatrixXd w = ldlt.solve(Eigen::MatrixXd(rhs));
  if (!w.allFinite()) {
    return absl::InternalError(
        "ridge regression produced non-finite weights; try a larger --ridge");
  }
  std::vector<double> out(p * o);
  for (int64_t i = 0; i < p; ++i) {
    for (int64_t j = 0; j < o; ++j) out[i * o + j] = w(i, j);
  }
  return out;
}

absl::StatusOr<std::vector<double>> SolveRidgeChoosingLambda(const NormalEquations& fit,
                                                             const NormalEquations& holdout,
                                                             int64_t rows, double ridge,
                                                             double* chosen, bool* validated) {
  const int64_t p = fit.p, o = fit.o;
  NormalEquations all = fit;
  if (!holdout.gram.empty()) {
    for (size_t i = 0; i < all.gram.size(); ++i) all.gram[i] += holdout.gram[i];
    for (size_t i = 0; i < all.rhs.size(); ++i) all.rhs[i] += holdout.rhs[i];
  }
  *validated = false;
  *chosen = ridge;
  if (rows >= kWellDetermined * p) return SolveRidge(all, ridge);
  constexpr double kSteps[] = {1, 10, 100, 1e3, 1e4};
  if (holdout.gram.empty() || fit.gram.empty()) {
    *chosen = ridge * kSteps[4];
    return SolveRidge(all, *chosen);
  }
  using Matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Eigen::Map<const Matrix> gram_h(holdout.gram.data(), p, p);
  Eigen::Map<const Matrix> rhs_h(holdout.rhs.data(), p, o);
  double best = INFINITY;
  for (double step : kSteps) {
    absl::StatusOr<std::vector<double>> w = SolveRidge(fit, ridge * step);
    if (!w.ok()) continue;
    Eigen::Map<const Matrix> wm(w->data(), p, o);
    // Held-out squared error up to the constant yᵀy: tr(WᵀGW) - 2 tr(WᵀB).
    const double err = (wm.transpose() * gram_h * wm).trace() - 2 * (wm.transpose() * rhs_h).trace();
    if (err < best) {
      best = err;
      *chosen = ridge * step;
    }
  }
  *validated = true;
  return SolveRidge(all, *chosen);
}

}  // namespace sparse
