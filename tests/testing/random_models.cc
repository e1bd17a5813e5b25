#include "tests/testing/random_models.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

#include "tests/testing/reference_model.h"

namespace sparse::testing {
namespace {

std::vector<float> Normal(std::mt19937_64& rng, int64_t n, float stddev) {
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

std::vector<float> Uniform(std::mt19937_64& rng, int64_t n, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

}  // namespace

std::vector<float> RandomInputs(int64_t rows, int64_t d, uint64_t seed) {
  std::mt19937_64 rng(seed);
  return Uniform(rng, rows * d, -1.0f, 1.0f);
}

std::vector<float> OverflowingRow(const Model& model) {
  const int64_t d = model.info().input_dim;
  for (float v : {3e38f, -3e38f, 1e38f, -1e38f, 1e37f, -1e37f}) {
    for (int64_t col = 0; col <= d; ++col) {  // col == d: every column
      std::vector<float> x(d, col < d ? 0.5f : v);
      if (col < d) x[col] = v;
      std::vector<float> y(model.info().output_dim);
      PredictStats stats;
      const absl::Status s = model.Predict(x, 1, absl::MakeSpan(y), &stats, nullptr);
      if (!s.ok() && s.message().find("too large") != absl::string_view::npos) return x;
    }
  }
  return {};
}

LshTableWeights RandomLshTable(const LshShape& shape, uint64_t seed) {
  std::mt19937_64 rng(seed);
  LshTableWeights w;
  w.input_dim = shape.d;
  w.output_dim = shape.o;
  w.num_tables = shape.s;
  w.num_hashes = shape.m;
  w.degree = shape.degree;
  w.family = shape.family;
  w.bucket_width = shape.bucket_width;
  w.projection = Normal(rng, shape.s * shape.m * shape.d, 1.0f);
  w.offset = shape.family == HashFamily::kHyperplane
                 ? Normal(rng, shape.s * shape.m, 0.5f)
                 : Uniform(rng, shape.s * shape.m, 0.0f, shape.bucket_width);
  w.alpha.assign(shape.s, 1.0f / static_cast<float>(shape.s));
  const std::vector<float> x = RandomInputs(shape.sample_rows, shape.d, seed ^ 0x5eed);
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  const int64_t per = w.ValuesPerBucket();
  w.tables.resize(shape.s);
  for (int64_t i = 0; i < shape.s; ++i) {
    std::vector<uint64_t> keys;
    for (int64_t r = 0; r < shape.sample_rows; ++r) {
      keys.push_back(ReferenceLshKey(w, i, x.data() + r * shape.d));
    }
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    auto& table = w.tables[i];
    for (uint64_t key : keys) {
      if (coin(rng) < shape.keep_fraction) table.keys.push_back(key);
    }
    table.values = Normal(rng, static_cast<int64_t>(table.keys.size()) * per, 1.0f);
    table.fallback = Normal(rng, per, 0.1f);
  }
  return w;
}

DenseWeights RandomDense(int64_t d, int64_t t, int64_t o, Activation activation, uint64_t seed) {
  std::mt19937_64 rng(seed);
  DenseWeights w;
  w.input_dim = d;
  w.output_dim = o;
  w.width = t;
  w.activation = activation;
  w.bottom_weight = Normal(rng, t * d, 1.0f / std::sqrt(static_cast<float>(d)));
  w.bottom_bias = Normal(rng, t, 0.1f);
  w.top_weight = Normal(rng, o * t, 1.0f / std::sqrt(static_cast<float>(t)));
  w.top_bias = Normal(rng, o, 0.1f);
  return w;
}

DsmWeights RandomDsm(const DsmShape& shape, uint64_t seed) {
  DsmWeights w;
  w.router = shape.router;
  w.num_blocks = shape.blocks;
  w.active_units = shape.active_units;
  const bool topk = shape.router == RouterKind::kTopk;
  w.num_experts = topk ? 0 : shape.experts;
  const int64_t block_units = topk ? shape.topk_block_units : shape.experts * shape.active_units;
  w.network = RandomDense(shape.d, shape.blocks * block_units, shape.o, shape.activation, seed);
  std::mt19937_64 rng(seed ^ 0xd5d5);
  switch (shape.router) {
    case RouterKind::kLsh: {
      const int64_t bits = shape.blocks * w.RouterBits();
      w.router_weight = Normal(rng, bits * shape.d, 1.0f);
      w.router_bias = Normal(rng, bits, 0.3f);
      break;
    }
    case RouterKind::kKmeans:
      w.router_weight = Uniform(rng, shape.blocks * shape.experts * shape.d, -1.0f, 1.0f);
      break;
    case RouterKind::kHash:
      w.hash_seed = seed * 7919 + 17;
      break;
    case RouterKind::kTopk:
      break;
  }
  return w;
}

}  // namespace sparse::testing
