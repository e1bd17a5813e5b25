// The loader of the model life cycle (TF Serving's term): one version from
// its directory to a Servable ready to serve.
//
// Reads the checkpoint within the memory budget (LoadCheckpoint validates
// every byte before anything is allocated from it), then warms it up: one
// prediction per batch bucket (1, 2, 4, ... up to max_batch_rows, at most
// 128) on each path, so the first requests find every code path run once and
// a model that cannot predict never serves. Running out of memory fails the
// version, never the process.
#ifndef SPARSE_MODEL_STORE_MODEL_LOADER_H_
#define SPARSE_MODEL_STORE_MODEL_LOADER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "model_store/checkpoint.h"
#include "model_store/model_state.h"

namespace sparse {

// Builds a sharded model's front (docs/deploy.md, "Sharded models") from
// what a front reads of a version (ReadCheckpoint with a kFront part): a
// Model that routes each row and calls the shards. The server supplies it;
// it may wait for the shards to serve `version` at `precision`.
using FrontFactory = std::function<absl::StatusOr<std::unique_ptr<Model>>(
    const std::string& model, int64_t version, Precision precision, const Checkpoint& front)>;

// How versions load: the one settings struct from the flags to the loader.
// ServerOptions (server/server.h, filled from the flags) and
// ModelRepository::Options are LoaderOptions, so each layer hands it down
// whole instead of copying it field by field; only what the wiring resolves
// (the workers, the part and the front factory of a sharded server) and the
// manager resolves (the default budget) is set on the way.
struct LoaderOptions {
  int64_t max_batch_rows = 1024;  // --max_batch_rows: warm-up buckets up to it (<= 128)
  int workers = 1;                // --workers: threads that will predict, scratch for each
  // --max_model_bytes: the memory budget of one version. A version whose
  // estimate (EstimateLoadBytes, docs/configuration.md) is larger fails with
  // RESOURCE_EXHAUSTED before its tensors are read or the engine allocates.
  // 0 = none here; ModelRepository resolves 0 to DefaultModelBudgetBytes()
  // (half of the memory available to the process).
  uint64_t max_model_bytes = 0;
  // --cost_only_dense: a DSM without a trained twin gets a cost-only dense
  // endpoint (LoadOptions::cost_only_dense).
  bool cost_only_dense = true;
  // --weight_cache_dir: versions that can be mapped compute on a weight
  // cache file in <dir>/<model>/<version>/ (weight_cache.h); empty: copied in.
  std::string weight_cache_dir = {};
  WeightVerify weight_verify = WeightVerify::kLoad;  // --weight_verify
  // The part of each version this server serves (--shard, --shard_targets).
  ModelPart part = {};
  // Required for a front's part.
  FrontFactory make_front = nullptr;
};

// Errors: RESOURCE_EXHAUSTED (over the budget, or out of memory), and what
// LoadCheckpoint reports for a bad checkpoint or a failed warm-up. Messages
// name files by their name in the version directory, never by path.
// `precision` is the version's (its model's config.pbtxt).
absl::StatusOr<std::unique_ptr<Servable>> LoadServable(const std::string& model, int64_t version,
                                                       const std::string& dir,
                                                       const LoaderOptions& options,
                                                       Precision precision = Precision::kFp32);

}  // namespace sparse

#endif  // SPARSE_MODEL_STORE_MODEL_LOADER_H_
