#include "tests/testing/reference_model.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/hashing.h"

namespace sparse::testing {
namespace {

double Dot(const float* a, const float* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double{a[i]} * b[i];
  return s;
}

double Act(Activation a, double v) { return a == Activation::kRelu ? std::max(v, 0.0) : v; }

}  // namespace

uint64_t ReferenceLshKey(const LshTableWeights& w, int64_t table, const float* x) {
  const int64_t m = w.num_hashes, d = w.input_dim;
  std::vector<int64_t> h(m);
  uint64_t bits = 0;
  for (int64_t j = 0; j < m; ++j) {
    const int64_t row = table * m + j;
    const float z = static_cast<float>(Dot(w.projection.data() + row * d, x, d) + w.offset[row]);
    if (w.family == HashFamily::kHyperplane) {
      if (z >= 0) bits |= uint64_t{1} << j;
    } else {
      h[j] = static_cast<int64_t>(std::floor(double{z} / w.bucket_width));
    }
  }
  return w.family == HashFamily::kHyperplane ? bits : FoldKey(h.data(), m);
}

std::vector<float> ReferencePredict(const LshTableWeights& w, const std::vector<float>& x,
                                    int64_t rows, Route* route) {
  const int64_t d = w.input_dim, o = w.output_dim, s = w.num_tables;
  const int64_t per = w.ValuesPerBucket();
  std::vector<float> y(rows * o);
  if (route) {
    route->keys_per_row = s;
    route->bucket_keys.assign(rows * s, 0);
    route->bucket_missed.assign(rows * s, 0);
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x.data() + r * d;
    std::vector<double> acc(o, 0.0);
    for (int64_t i = 0; i < s; ++i) {
      const uint64_t key = ReferenceLshKey(w, i, xr);
      const auto& table = w.tables[i];
      auto it = std::lower_bound(table.keys.begin(), table.keys.end(), key);
      const bool missed = it == table.keys.end() || *it != key;
      const float* v = missed ? table.fallback.data()
                              : table.values.data() + (it - table.keys.begin()) * per;
      if (route) {
        route->bucket_keys[r * s + i] = key;
        route->bucket_missed[r * s + i] = missed;
      }
      for (int64_t j = 0; j < o; ++j) {
        const double g = w.degree == 0 ? v[j] : Dot(v + j * (d + 1), xr, d) + v[j * (d + 1) + d];
        acc[j] += w.alpha[i] * g;
      }
    }
    for (int64_t j = 0; j < o; ++j) y[r * o + j] = static_cast<float>(acc[j]);
  }
  return y;
}

std::vector<float> ReferencePredict(const DenseWeights& w, const std::vector<float>& x,
                                    int64_t rows) {
  const int64_t d = w.input_dim, o = w.output_dim, t = w.width;
  std::vector<float> y(rows * o);
  std::vector<double> h(t);
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x.data() + r * d;
    for (int64_t u = 0; u < t; ++u) {
      h[u] = Act(w.activation, Dot(w.bottom_weight.data() + u * d, xr, d) + w.bottom_bias[u]);
    }
    for (int64_t j = 0; j < o; ++j) {
      double acc = w.top_bias[j];
      for (int64_t u = 0; u < t; ++u) acc += double{w.top_weight[j * t + u]} * h[u];
      y[r * o + j] = static_cast<float>(acc);
    }
  }
  return y;
}

std::vector<float> ReferencePredict(const DsmWeights& w, const std::vector<float>& x,
                                    int64_t rows, Route* route) {
  const DenseWeights& net = w.network;
  const int64_t d = net.input_dim, o = net.output_dim, t = net.width;
  const int64_t L = w.num_blocks, E = w.num_experts, k = w.active_units;
  const int64_t block_units = t / L;
  const bool routed = w.router != RouterKind::kTopk;
  if (route && routed) {
    route->experts_per_row = L;
    route->expert_ids.assign(rows * L, 0);
  }
  std::vector<float> y(rows * o);
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x.data() + r * d;
    std::vector<char> mask(t, 0);
    for (int64_t l = 0; l < L; ++l) {
      int64_t expert = 0;
      switch (w.router) {
        case RouterKind::kLsh: {
          const int64_t bits = w.RouterBits();
          for (int64_t j = 0; j < bits; ++j) {
            const int64_t row = l * bits + j;
            const float z = static_cast<float>(Dot(w.router_weight.data() + row * d, xr, d) +
                                               w.router_bias[row]);
            if (z >= 0) expert |= int64_t{1} << j;
          }
          break;
        }
        case RouterKind::kHash:
          expert = static_cast<int64_t>(InputHash(xr, d, w.hash_seed + l) % uint64_t(E));
          break;
        case RouterKind::kKmeans: {
          double best = INFINITY;
          for (int64_t e = 0; e < E; ++e) {
            const float* c = w.router_weight.data() + (l * E + e) * d;
            double dist = 0;
            for (int64_t j = 0; j < d; ++j) dist += (double{xr[j]} - c[j]) * (double{xr[j]} - c[j]);
            if (dist < best) {
              best = dist;
              expert = e;
            }
          }
          break;
        }
        case RouterKind::kTopk: {
          std::vector<std::pair<double, int64_t>> z(block_units);
          for (int64_t u = 0; u < block_units; ++u) {
            const int64_t unit = l * block_units + u;
            z[u] = {Dot(net.bottom_weight.data() + unit * d, xr, d) + net.bottom_bias[unit], unit};
          }
          std::sort(z.begin(), z.end(), [](const auto& a, const auto& b) {
            return a.first > b.first || (a.first == b.first && a.second < b.second);
          });
          for (int64_t i = 0; i < k; ++i) mask[z[i].second] = 1;
          break;
        }
      }
      if (routed) {
        if (route) route->expert_ids[r * L + l] = static_cast<int32_t>(expert);
        const int64_t first = l * block_units + expert * k;
        for (int64_t u = first; u < first + k; ++u) mask[u] = 1;
      }
    }
    for (int64_t j = 0; j < o; ++j) {
      double acc = net.top_bias[j];
      for (int64_t u = 0; u < t; ++u) {
        if (!mask[u]) continue;
        const double h =
            Act(net.activation, Dot(net.bottom_weight.data() + u * d, xr, d) + net.bottom_bias[u]);
        acc += double{net.top_weight[j * t + u]} * h;
      }
      y[r * o + j] = static_cast<float>(acc);
    }
  }
  return y;
}

}  // namespace sparse::testing
