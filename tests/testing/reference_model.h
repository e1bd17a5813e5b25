// Naive reference implementations (plain loops, double accumulation) of every
// model kind, written from DESIGN.md §1 independently of the engine's
// kernels. Used only by tests, to check the engine's outputs and routes.
#ifndef SPARSE_TESTS_TESTING_REFERENCE_MODEL_H_
#define SPARSE_TESTS_TESTING_REFERENCE_MODEL_H_

#include <cstdint>
#include <vector>

#include "engine/model.h"
#include "engine/weights.h"

namespace sparse::testing {

// Each returns y [rows, o]; when `route` is non-null fills it as the engine does.
std::vector<float> ReferencePredict(const LshTableWeights& w, const std::vector<float>& x,
                                    int64_t rows, Route* route = nullptr);
std::vector<float> ReferencePredict(const DsmWeights& w, const std::vector<float>& x,
                                    int64_t rows, Route* route = nullptr);
std::vector<float> ReferencePredict(const DenseWeights& w, const std::vector<float>& x,
                                    int64_t rows);

// The bucket key of table `table` for input row x (length d).
uint64_t ReferenceLshKey(const LshTableWeights& w, int64_t table, const float* x);

}  // namespace sparse::testing

#endif  // SPARSE_TESTS_TESTING_REFERENCE_MODEL_H_
