// TableHasher: the hash functions of an LSH table model (DESIGN.md §1), on
// their own, so that a front server can compute every row's bucket keys
// and send them to the shards that hold the tables (docs/deploy.md).
//
// Immutable after Create; Keys() is const and safe from many threads
// (per-thread scratch, workspace.h).
#ifndef SPARSE_ENGINE_TABLE_HASHER_H_
#define SPARSE_ENGINE_TABLE_HASHER_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "engine/matmul_kernel.h"
#include "engine/model.h"
#include "engine/weights.h"

namespace sparse {

class TableHasher {
 public:
  // From the hash fields of `w` (LshTableWeights::ValidateHashing checks
  // them; the tables are not needed).
  static absl::StatusOr<TableHasher> Create(const LshTableWeights& w);

  // Fills keys[r * s + i], the key of table i for row r, for the n rows of
  // x [n, d] (n <= MatmulKernel::kMaxBucketRows): all s·m projections in
  // one matmul. Adds FLOPs and weight bytes to *stats (not the time).
  absl::Status Keys(const float* x, int64_t n, uint64_t* keys, PredictStats* stats) const;

  int64_t tables() const { return s_; }
  int64_t weight_bytes_per_row() const;
  int64_t resident_bytes() const;

 private:
  TableHasher(const LshTableWeights& w, MatmulKernel kernel, PackedWeights projection);

  int64_t s_, m_;
  HashFamily family_;
  float bucket_width_;
  MatmulKernel kernel_;
  PackedWeights projection_;   // [s*m, d] in kernel_'s layout
  std::vector<float> offset_;  // [s*m]
};

}  // namespace sparse

#endif  // SPARSE_ENGINE_TABLE_HASHER_H_
