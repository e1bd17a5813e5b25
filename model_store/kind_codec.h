// A model kind's codec, and the registry of them (model_store/kinds/kinds.h
// lists the kinds). A codec is everything the model store knows of one
// kind: how its weights are written to and read from model.safetensors
// (docs/checkpoint-format.md, its `kind = "..."` section), what loading
// them costs, the engine model they make, and what a sharded front of it
// serves. Generic code (checkpoint.cc, load_budget.cc, the trainer's
// evaluation, FrontModelInfo) never names a kind: it asks the registry for
// the codec of the weights at hand (CodecOf) or of a file's `kind`
// (FindCodec).
//
// Codecs are immutable and live as long as the process; every method is
// safe to call from any thread. A method given SparseWeights requires
// weights of its own kind (CodecOf(w) is this codec).
#ifndef SPARSE_MODEL_STORE_KIND_CODEC_H_
#define SPARSE_MODEL_STORE_KIND_CODEC_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/model.h"
#include "engine/precision.h"
#include "engine/weights.h"
#include "model_store/checkpoint.h"
#include "model_store/kinds/kinds.h"
#include "model_store/tensor_io.h"

namespace sparse {

// How a writer cuts a tensor for its manifest sums: `parts` equal parts
// along `axis` (docs/checkpoint-format.md, "Parts").
struct TensorParts {
  int64_t parts = 1;
  int axis = 0;
};

// What a load of one kind's weights holds at its peak, beyond what every
// kind shares (load_budget.h adds the dense endpoints, threads and the
// warm-up's rows).
struct KindLoadCost {
  uint64_t file_copies = 0;        // copies of the tensor files' bytes
  uint64_t index_bytes = 0;        // indexes and bookkeeping the engine builds
  uint64_t workspace_floats = 0;   // one thread's scratch floats ...
  uint64_t workspace_indices = 0;  // ... and 8-byte indices
};

class KindCodec {
 public:
  virtual ~KindCodec() = default;

  // The file's `kind` ("lsh_table", "dsm") and the engine's ModelKind.
  virtual absl::string_view name() const = 0;
  virtual ModelKind model_kind() const = 0;

  // ---- Writing and reading model.safetensors

  // Adds the kind's metadata (its hyper-parameters; the caller adds
  // `kind`, format_version and info.*) and tensors to `out`, matrices at
  // the writer's precision. `w` must outlive `out`.
  virtual void Encode(const SparseWeights& w, TensorWriter* out) const = 0;
  // How a writer cuts `tensor` of a file with metadata `meta` for the
  // manifest (per expert, per table); {1, 0}: one part. The caller keeps
  // one part where the tensor's shape does not divide so.
  virtual TensorParts PartsOf(const Metadata& meta, absl::string_view tensor) const = 0;
  // Reads what `part` needs of the weights (a shard: its experts or
  // tables; a front: what Validate(kFront) checks) from a file named
  // `file` whose format_version and kind are checked. The caller then
  // checks that every key and tensor was read or skipped, and Validate()s.
  virtual absl::StatusOr<SparseWeights> Decode(MetadataReader& meta, TensorReader& tensors,
                                               absl::string_view file,
                                               const ModelPart& part) const = 0;
  // Checks every dimension, size and value; for kFront only what a front
  // holds (its routing and dimensions).
  virtual absl::Status Validate(const SparseWeights& w, ModelPart::Role role) const = 0;
  // (input_dim, output_dim).
  virtual std::pair<int64_t, int64_t> Dims(const SparseWeights& w) const = 0;

  // ---- Loading

  // The fewest copies of the tensor files a load of this kind holds at its
  // peak (LoadCost's are never fewer), and a tensor only this kind's
  // model.safetensors holds: a version-2 manifest lists the tensors, so
  // the budget counts on the kind before any file is read.
  virtual uint64_t MinFileCopies() const = 0;
  virtual absl::string_view SignatureTensor() const = 0;
  // The kind's share of the load budget, for `rows` rows per thread.
  virtual KindLoadCost LoadCost(const SparseWeights& w, int64_t rows) const = 0;
  // The engine model, its large matrices at `precision`, their arrays from
  // `store` (engine/weight_store.h) when the kind MapsWeights(), else in
  // process memory.
  virtual absl::StatusOr<std::unique_ptr<Model>> CreateModel(const SparseWeights& w,
                                                             Precision precision,
                                                             WeightStore& store) const = 0;
  // Whether the kind's models take their large arrays from a WeightStore,
  // so a version can serve from the weight cache (weight_cache.h): made
  // from a front's part (ReadCheckpoint kFront: dimensions, routing, a0)
  // and a prebuilt store. Kinds that do not are copied in.
  virtual bool MapsWeights() const = 0;
  // A weight cache file is written one group of units at a time (a shard's
  // part, ReadCheckpoint kShard, per group) when the kind can place a
  // part's array parts in the whole model's arrays: part `part` of an
  // array of the model made from `shard_part` is part WholePartOf(...) of
  // the whole model's, which has WholeParts(...) parts. -1 / 0: it cannot
  // (the file is written from the whole model, decoded at once).
  virtual int64_t WholePartOf(const SparseWeights& /*shard_part*/, int64_t /*part*/) const {
    return -1;
  }
  virtual int64_t WholeParts(const SparseWeights& /*shard_part*/) const { return 0; }
  // Whether a shard's part (kShard) of this kind is served from its own
  // weight cache file: made from its skeleton (ReadCheckpoint
  // kShardSkeleton) and a prebuilt store, the file written one group of
  // the shard's units at a time (kShard with ModelPart::units), part `part`
  // of an array of the model made from the group `group` being part
  // ShardPartOf(group, shard, part) of the array of the model made from
  // the shard's part `shard` (its skeleton), which has ShardParts(shard)
  // parts. Separate from MapsWeights(): a kind may map its whole models
  // before its shards. Kinds that do not copy a shard's part in.
  virtual bool MapsShardWeights() const { return false; }
  virtual int64_t ShardPartOf(const SparseWeights& /*group*/, const SparseWeights& /*shard*/,
                              int64_t /*part*/) const {
    return -1;
  }
  virtual int64_t ShardParts(const SparseWeights& /*shard*/) const { return 0; }
  // The network a dense endpoint runs unmasked, as a cost-only baseline,
  // when the version has no dense twin; null if the kind has none (or `w`
  // is a shard's part).
  virtual const DenseWeights* CostOnlyNetwork(const SparseWeights& w) const = 0;
  // Rounds `w`'s weight matrices to the values they read back as once
  // stored at `precision` (RoundToStorage in checkpoint.h).
  virtual void RoundToStorage(Precision precision, SparseWeights* w) const = 0;

  // ---- The sharded front (docs/deploy.md, "Sharded models")

  // FrontModelInfo's per-kind fields (FLOPs, parameters, description,
  // weight and resident bytes) for the front `front` of a model split
  // across `shards` shards. INVALID_ARGUMENT if it cannot be.
  virtual absl::StatusOr<ModelInfo> FrontInfo(const SparseWeights& front, int shards,
                                              const FrontFigures& figures) const = 0;
};

// ---- The registry

// Every kind's codec, in SparseWeights' order.
const std::vector<const KindCodec*>& KindCodecs();
// The codec of the kind `w` holds.
const KindCodec& CodecOf(const SparseWeights& w);
// The codec whose name() is `name`; null if there is none.
const KindCodec* FindCodec(absl::string_view name);
// The kinds' names for an error that lists them: "'lsh_table' or 'dsm'".
std::string KindNames();

// The network of the cost-only dense endpoint a load of `c` with `options`
// makes (a whole model of a kind that has one, without a dense twin, when
// options.cost_only_dense); null if it makes none.
const DenseWeights* CostOnlyDense(const Checkpoint& c, const LoadOptions& options);

}  // namespace sparse

#endif  // SPARSE_MODEL_STORE_KIND_CODEC_H_
