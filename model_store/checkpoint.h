// Checkpoints: one model version as a directory (DESIGN.md §3,
// docs/checkpoint-format.md):
//   <version>/model.safetensors   the sparse model (kind lsh_table or dsm)
//   <version>/dense.safetensors   the dense twin (kind dense), optional
//   <version>/manifest.json       sizes and SHA-256 of both, written last
// A directory without a valid manifest is not a version.
#ifndef SPARSE_MODEL_STORE_CHECKPOINT_H_
#define SPARSE_MODEL_STORE_CHECKPOINT_H_

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/dense_model.h"
#include "engine/model.h"
#include "engine/precision.h"
#include "engine/sharding.h"
#include "engine/weights.h"
#include "model_store/kinds/kinds.h"
#include "model_store/weight_cache.h"

namespace sparse {

// Of the tensor files' __metadata__.
inline constexpr int kCheckpointFormatVersion = 1;
// Of manifest.json: 2 adds each tensor's SHA-256 sums, so a server can read
// and check only the tensors (and parts of tensors) it needs. Version 1
// manifests are still read; a shard then reads the whole file.
inline constexpr int kManifestFormatVersion = 2;
inline constexpr char kModelFile[] = "model.safetensors";
inline constexpr char kDenseFile[] = "dense.safetensors";
inline constexpr char kManifestFile[] = "manifest.json";

// The part of a version a server reads (docs/deploy.md, "Sharded models").
struct ModelPart {
  enum class Role {
    kWhole,  // everything
    kShard,  // a shard's experts or tables (engine/sharding.h); no dense twin
    kFront,  // the router, hash functions and a0; the dense twin if there is one
    // What kFront reads, of a whole model whose large arrays come from its
    // weight cache file (weight_cache.h): never split, any router.
    kSkeleton,
    // What kShard reads, of a shard's part whose large arrays come from the
    // shard's own weight cache file: its dimensions and the range of units
    // it owns (a DSM shard's first_expert, total_experts and num_experts),
    // none of its sliced tensors. Only kinds that MapsShardWeights()
    // (kind_codec.h) read it; no dense twin, as for kShard.
    kShardSkeleton,
  };
  // Only the dimensions, routing and a0 of the sparse model are read.
  bool RoutingOnly() const { return role == Role::kFront || role == Role::kSkeleton; }
  // A shard's part, read whole or as its skeleton.
  bool Shard() const { return role == Role::kShard || role == Role::kShardSkeleton; }
  Role role = Role::kWhole;
  ShardSpec shard = {};  // kShard: this server's i/N; kFront: count = N
  // kShard: read these units (experts of every block) instead of all that
  // shard i/N owns; they must lie within them. A shard's weight cache file
  // is written one such group of its units at a time. Only kinds that
  // MapsShardWeights() honour it; others refuse it.
  std::optional<UnitRange> units = std::nullopt;
};

struct Checkpoint {
  SparseWeights sparse;  // of any kind (model_store/kinds/kinds.h)
  std::optional<DenseWeights> dense;  // the dense twin, if trained
  // Free-form facts about the version (training data, test MSE, ...),
  // stored as "__metadata__" keys "info.<key>" of model.safetensors.
  std::map<std::string, std::string> info;
  // What the networks' weight matrices (bottom.weight, top.weight, of the DSM
  // and of the twin) are stored at: F32, BF16, or I8 with per-row scales
  // (docs/checkpoint-format.md). Read back as float32 values; the serving
  // precision is config.pbtxt's. ReadCheckpoint sets it from model.safetensors.
  Precision tensor_precision = Precision::kFp32;
  // What of the version this holds: with a shard's part, `sparse` holds its
  // experts or tables (DsmWeights / LshTableWeights IsShard fields); with a
  // front's, only what ValidateRouting() / ValidateHashing() check.
  ModelPart part = {};
  // Bytes of the tensor files read to make it (a part reads less).
  uint64_t bytes_read = 0;
  // model.safetensors' SHA-256 as the manifest gives it: what a front and
  // its shards compare to know they serve the same files.
  std::string model_sha256;
};

// Writes `checkpoint` as version `version` of the model directory
// `model_dir` (created if missing). Atomic: files go to a hidden temporary
// directory beside it, are synced, the manifest is written last, and the
// directory is renamed into place. Errors: ALREADY_EXISTS if the version
// exists (nothing is overwritten), INVALID_ARGUMENT for invalid weights.
// The temporary directory is .tmp-<version>-<host>-<pid>-<n>; before it is
// made, those that writers on this host left when they died mid-publish
// (their process is gone) are removed.
absl::Status WriteCheckpoint(const std::string& model_dir, int64_t version,
                             const Checkpoint& checkpoint);

// What loading one version may cost (docs/configuration.md,
// --max_model_bytes).
struct LoadOptions {
  // Memory budget of the version in bytes (EstimateLoadBytes); 0 = none.
  uint64_t max_bytes = 0;
  // Rows a thread runs through the model at once (the warm-up's largest
  // batch; the engine works in chunks of at most 128 rows).
  int64_t batch_rows = 128;
  // Threads that may each grow a workspace for this model (the workers,
  // plus the thread that loads and warms it up).
  int threads = 1;
  // Named in the over-budget error, so the operator knows what to change.
  std::string budget_name = "the memory budget";
  // What the engine models are built at (config.pbtxt `precision`).
  Precision precision = Precision::kFp32;
  // The part of the version to read (a sharded server's; docs/deploy.md).
  ModelPart part = {};
  // A DSM without a trained twin gets a cost-only dense endpoint (its own
  // weights unmasked, a second copy of them); false: no dense endpoint.
  bool cost_only_dense = true;
  // Where this version's weight cache file lives (weight_cache.h:
  // --weight_cache_dir/<model>/<version>); empty: weights are copied into
  // process memory. Only a whole model of a kind that MapsWeights(), or a
  // shard's part (kShard) of a kind that MapsShardWeights(), with a
  // format_version 2 manifest, is mapped; others are copied in.
  std::string weight_cache_dir = {};
  WeightVerify weight_verify = WeightVerify::kLoad;
  // Writing a weight cache file decodes the model's experts in groups of
  // at most about this many tensor bytes (a routed DSM without a cost-only
  // dense endpoint; others are decoded whole).
  uint64_t cache_group_bytes = uint64_t{256} << 20;
};

// Bytes a version costs at its peak while it loads and serves, as
// docs/configuration.md defines it: the tensor files twice for a DSM (decoded,
// and the engine's own copy built while the decoded weights live; three
// times with a cost-only dense endpoint or a topk router) or three times for
// an LSH model, times 2 for BF16 and 4 for I8 matrices (they decode to
// float32); each LSH bucket's hash-index entry, and each thread's
// activation workspace for options.batch_rows rows. Saturates instead of
// overflowing. `file_bytes` is the sum of the tensor files' sizes.
uint64_t EstimateLoadBytes(const Checkpoint& checkpoint, uint64_t file_bytes,
                           const LoadOptions& options);

// Half of the memory this process may use: the cgroup's memory limit
// (v2 memory.max, or v1 memory.limit_in_bytes) when one is set, otherwise
// MemTotal of /proc/meminfo (at least 1 GiB if neither can be read).
uint64_t DefaultModelBudgetBytes();

// Reads and fully validates a version directory: the manifest, each file's
// size and SHA-256, the safetensors structure, metadata and every tensor.
// Error messages name the file and the field, never the directory path.
// Every file is opened only if it is a regular file, and its size is
// checked before it is read: manifest.json at most 64 KiB, the tensor files
// exactly their manifest size. With options.max_bytes set, a version whose
// files alone (twice their declared size) exceed it is refused before they
// are read, and one whose full estimate (EstimateLoadBytes) exceeds it
// before any engine memory is allocated: RESOURCE_EXHAUSTED, saying the
// estimate and the budget.
absl::StatusOr<Checkpoint> ReadCheckpoint(const std::string& version_dir,
                                          const LoadOptions& options = {});

// A version ready to serve.
struct LoadedModel {
  std::unique_ptr<Model> sparse;
  // The dense endpoint. For a DSM without a twin this runs the DSM's own
  // weights unmasked and `dense_cost_only` is true; for an LSH table without
  // a twin it is null.
  std::unique_ptr<DenseModel> dense;
  bool dense_cost_only = false;
  std::map<std::string, std::string> info;
  std::string model_sha256;  // Checkpoint::model_sha256
  // The mapped weight cache file the models compute on; null when their
  // weights were copied into process memory.
  std::shared_ptr<WeightCacheFile> weight_cache;
  // How the weight cache file came to be: "mapped" (it was valid),
  // "built" (there was none), or "rebuilt: <why the old one was not used>".
  std::string weight_cache_event;
  bool retired() const { return weight_cache != nullptr && weight_cache->retired(); }
};

// ReadCheckpoint, then builds the engine models. Running out of memory
// (std::bad_alloc, std::length_error) is RESOURCE_EXHAUSTED, not a crash.
// With options.weight_cache_dir the models of a version that can be mapped
// compute on its weight cache file (weight_cache.h): mapped as it is when
// it is valid for this version and build, otherwise (re)built first from
// the whole checkpoint, verified as ReadCheckpoint verifies it. A shard's
// part has its own file (its key names the shard), built from the shard's
// ranges only, each checked against its part sum.
absl::StatusOr<LoadedModel> LoadCheckpoint(const std::string& version_dir,
                                           const LoadOptions& options = {});

// What a sharded model's front and its shards report, from which
// FrontModelInfo describes the whole model the front serves.
struct FrontFigures {
  // The front's router or hash functions (ExpertRouter, TableHasher): the
  // weight bytes one row reads, and the bytes held.
  int64_t routing_weight_bytes_per_row = 0;
  int64_t routing_resident_bytes = 0;
  // Each shard's part as it reports it (sparse.v1.VersionStatus), in order.
  struct Part {
    int64_t weight_bytes_per_row = 0;
    int64_t parameters = 0;
  };
  std::vector<Part> parts;
};

// The ModelInfo of the whole model a front serves (docs/deploy.md, "Sharded
// models"): `front` (ReadCheckpoint's kFront part) split across `shards`
// shards, at `precision`. FLOPs, parameters and description are the whole
// model's, weight bytes per row the front's and the shards' together,
// resident bytes the front's own; remote. INVALID_ARGUMENT if the model's
// experts or tables cannot be split across `shards` shards.
absl::StatusOr<ModelInfo> FrontModelInfo(const Checkpoint& front, Precision precision, int shards,
                                         const FrontFigures& figures);

// The manifest.json text for a version holding `files` (name -> contents):
// each file's size and SHA-256. For writers that need the bytes (fuzzing).
std::string ManifestJson(const std::map<std::string, std::string>& files);

// Serialized model.safetensors / dense.safetensors contents, for writers
// that need the bytes (tests, fuzz seeds).
std::string SerializeSparse(const Checkpoint& checkpoint);
std::string SerializeDense(const DenseWeights& dense, Precision matrices = Precision::kFp32);

// The values a network's weight matrices read back as after being stored at
// `precision` (bfloat16 rounding, or int8 with a scale per row): what a
// writer evaluates so that the accuracy it records is what will be served.
void RoundToStorage(Precision precision, DenseWeights* network);

}  // namespace sparse

#endif  // SPARSE_MODEL_STORE_CHECKPOINT_H_
