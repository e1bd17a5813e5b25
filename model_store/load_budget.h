// The load budget (docs/configuration.md, --max_model_bytes): what a
// version costs in memory at its peak while it loads and serves. It is
// checked twice: before any file is read, from the sizes the manifest
// declares, and once the weights are read, before the engine allocates
// anything. EstimateLoadBytes and DefaultModelBudgetBytes (checkpoint.h) are
// defined here; each kind gives its own share (KindCodec::LoadCost).
#ifndef SPARSE_MODEL_STORE_LOAD_BUDGET_H_
#define SPARSE_MODEL_STORE_LOAD_BUDGET_H_

#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "model_store/checkpoint.h"
#include "model_store/tensor_io.h"

namespace sparse {

// Saturating arithmetic for estimates built from untrusted dimensions
// (negative factors count as 0).
uint64_t SatMul(uint64_t a, uint64_t b);
uint64_t SatAdd(uint64_t a, uint64_t b);
uint64_t SatMul(std::initializer_list<int64_t> factors);

// Before any file is read: RESOURCE_EXHAUSTED if `file_bytes`, the tensor
// files as the manifest declares them, times the copies a load holds
// exceeds options.max_bytes (0: no budget). The copies are the fewest any
// kind holds, or those of the kind whose signature tensor is among
// `model_tensors` (the tensors a version-2 manifest lists for
// model.safetensors; none in version 1).
absl::Status CheckDeclaredBytes(uint64_t file_bytes,
                                const std::map<std::string, TensorHashes>& model_tensors,
                                const LoadOptions& options);

// Once the weights are read: RESOURCE_EXHAUSTED, with the estimate's
// breakdown, if EstimateLoadBytes(c, file_bytes, options) exceeds
// options.max_bytes (0: no budget).
absl::Status CheckLoadBytes(const Checkpoint& c, uint64_t file_bytes, const LoadOptions& options);

}  // namespace sparse

#endif  // SPARSE_MODEL_STORE_LOAD_BUDGET_H_
