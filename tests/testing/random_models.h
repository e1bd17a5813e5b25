// Random, valid weights of every model kind for tests and benchmarks.
// Deterministic in the seed. LSH tables store buckets for keys that inputs
// drawn from U[-1,1]^d actually hit, minus a fraction left out so that
// misses (the fallback path) occur too.
#ifndef SPARSE_TESTS_TESTING_RANDOM_MODELS_H_
#define SPARSE_TESTS_TESTING_RANDOM_MODELS_H_

#include <cstdint>
#include <vector>

#include "engine/model.h"
#include "engine/weights.h"

namespace sparse::testing {

struct LshShape {
  int64_t d = 8, o = 1, s = 4, m = 6, degree = 0;
  HashFamily family = HashFamily::kHyperplane;
  float bucket_width = 0.5f;
  int64_t sample_rows = 2048;   // inputs hashed to choose stored buckets
  double keep_fraction = 0.8;   // share of hit keys that get a bucket
};
LshTableWeights RandomLshTable(const LshShape& shape, uint64_t seed);

struct DsmShape {
  int64_t d = 8, o = 1, blocks = 1, experts = 8, active_units = 16;
  RouterKind router = RouterKind::kLsh;
  Activation activation = Activation::kRelu;
  int64_t topk_block_units = 64;  // topk only: units per block
};
DsmWeights RandomDsm(const DsmShape& shape, uint64_t seed);

DenseWeights RandomDense(int64_t d, int64_t t, int64_t o, Activation activation, uint64_t seed);

// rows x d inputs drawn from U[-1, 1].
std::vector<float> RandomInputs(int64_t rows, int64_t d, uint64_t seed);

// One row of finite inputs whose outputs overflow float32 on `model`: one
// column, then every column, set to a value near FLT_MAX, found by running
// the model (its error says "too large"), not assumed. Empty if none does.
std::vector<float> OverflowingRow(const Model& model);

}  // namespace sparse::testing

#endif  // SPARSE_TESTS_TESTING_RANDOM_MODELS_H_
