// The canonical weights of every model kind (DESIGN.md §1), in the layout the
// checkpoint stores them. They are plain values: the trainer fills them, the
// checkpoint reader produces them, and each engine model copies what it needs
// into its own kernel layout at load. Nothing here is on the request path.
#ifndef SPARSE_ENGINE_WEIGHTS_H_
#define SPARSE_ENGINE_WEIGHTS_H_

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/router_kind.h"

namespace sparse {

enum class HashFamily { kHyperplane, kEuclidean };
enum class Activation { kRelu, kIdentity };

absl::string_view HashFamilyName(HashFamily family);
absl::string_view ActivationName(Activation activation);
absl::StatusOr<HashFamily> ParseHashFamily(absl::string_view name);
absl::StatusOr<Activation> ParseActivation(absl::string_view name);

// LSH(d, s, m, Δ): s tables of m hash functions each. Row i*m + j of
// `projection` / entry i*m + j of `offset` is hash function j of table i.
struct LshTableWeights {
  struct Table {
    std::vector<uint64_t> keys;   // [n] strictly increasing bucket keys
    std::vector<float> values;    // [n, ValuesPerBucket()]
    std::vector<float> fallback;  // [ValuesPerBucket()] for keys not stored
    // A skeleton's table (its arrays come from a weight cache file,
    // engine/weight_store.h): the bucket count, with keys, values and
    // fallback left empty. -1 otherwise.
    int64_t skeleton_buckets = -1;
    int64_t Buckets() const {
      return skeleton_buckets >= 0 ? skeleton_buckets : static_cast<int64_t>(keys.size());
    }
  };

  int64_t input_dim = 0;    // d
  int64_t output_dim = 0;   // o
  int64_t num_tables = 0;   // s
  int64_t num_hashes = 0;   // m
  int64_t degree = 0;       // Δ: 0 = constant per bucket, 1 = affine
  HashFamily family = HashFamily::kHyperplane;
  float bucket_width = 1.0f;   // w of the euclidean family; unused (but > 0) otherwise
  std::vector<float> projection;  // [s*m, d]
  std::vector<float> offset;      // [s*m]
  std::vector<float> alpha;       // [s] table weights α_i
  std::vector<Table> tables;      // [s]
  // A shard's part (engine/sharding.h): tables [first_table, first_table + s)
  // of `total_tables`, with their hash functions and α. 0 = the whole model.
  int64_t first_table = 0;
  int64_t total_tables = 0;

  // Δ=0: o constants. Δ=1: an o×(d+1) matrix, row-major; column d is the
  // bias, so a bucket maps x to W·[x; 1].
  int64_t ValuesPerBucket() const {
    return degree == 0 ? output_dim : output_dim * (input_dim + 1);
  }
  // Checks every dimension, size, key order and that all floats are finite.
  absl::Status Validate() const;
  // What a front server holds (docs/deploy.md): the dimensions and the hash
  // functions, checked as Validate() checks them; no α, no tables.
  absl::Status ValidateHashing() const;
  // A whole model's skeleton (Table::skeleton_buckets): the hashing, α and
  // each table's bucket count.
  absl::Status ValidateSkeleton() const;
};

// The dense network y = A·σ(Bx + c) + a0 (also the body of a DSM).
struct DenseWeights {
  int64_t input_dim = 0;   // d
  int64_t output_dim = 0;  // o
  int64_t width = 0;       // t
  Activation activation = Activation::kRelu;
  std::vector<float> bottom_weight;  // B [t, d]
  std::vector<float> bottom_bias;    // c [t]
  std::vector<float> top_weight;     // A [o, t]
  std::vector<float> top_bias;       // a0 [o]

  absl::Status Validate() const;
};

// DSM(d, t, k): the network of `network` with a mask that keeps, in each of
// `num_blocks` blocks of t/L consecutive units, `active_units` units.
//  - kLsh / kHash / kKmeans: a block is `num_experts` expert slices of
//    `active_units` consecutive units; the router picks one slice per block.
//  - kTopk: the `active_units` largest entries of Bx + c in each block.
struct DsmWeights {
  DenseWeights network;
  RouterKind router = RouterKind::kLsh;
  int64_t num_blocks = 1;    // L
  int64_t num_experts = 1;   // E per block (routed kinds; 0 for topk)
  int64_t active_units = 0;  // k per block
  // kLsh:    [L*r, d] hyperplanes, r = log2(E); row l*r + j is bit j of block l.
  // kKmeans: [L*E, d] centroids; row l*E + e is expert e of block l.
  std::vector<float> router_weight;
  std::vector<float> router_bias;  // kLsh: [L*r] offsets; empty otherwise
  uint64_t hash_seed = 0;          // kHash only
  // A shard's part (engine/sharding.h): the network holds experts
  // [first_expert, first_expert + E) of `total_experts` in every block, so
  // t = L·E·k, and there are no router tensors: the front routes. a0 is
  // the front's to add. 0 = the whole model.
  int64_t first_expert = 0;
  int64_t total_experts = 0;

  bool IsShard() const { return total_experts > 0; }
  int64_t RouterBits() const;  // r = log2(E) for kLsh (of the whole model), else 0
  absl::Status Validate() const;
  // What a front server holds (docs/deploy.md): every dimension, the router
  // tensors and a0, checked as Validate() checks them; the network's other
  // tensors may be empty. Of a shard's part, what its skeleton holds (a
  // shard mapped from its weight cache file): every dimension, a0 (zeros:
  // the front adds it) and that its experts lie within the block's, with
  // no router tensors.
  absl::Status ValidateRouting() const;
};

// FLOPs per input row, as DESIGN.md §1 defines them. The engine counts the
// arithmetic it executes; tests hold that count equal to these formulas.
int64_t LshTableFlopsPerRow(const LshTableWeights& w);
int64_t DsmFlopsPerRow(const DsmWeights& w);
int64_t DenseFlopsPerRow(const DenseWeights& w);

// ModelInfo::description of a model, e.g. "dsm router=lsh d=8 t=1024 E=16
// k=64 L=1 o=1 relu" or "lsh_table family=hyperplane d=8 s=4 m=6 delta=0
// o=1"; a shard's part says which experts or tables it holds.
std::string Describe(const DsmWeights& w);
std::string Describe(const LshTableWeights& w);

}  // namespace sparse

#endif  // SPARSE_ENGINE_WEIGHTS_H_
