#include "engine/table_hasher.h"

#include "common/status_macros.h"
#include "engine/hashing.h"
#include "engine/workspace.h"

namespace sparse {

absl::StatusOr<TableHasher> TableHasher::Create(const LshTableWeights& w) {
  RETURN_IF_ERROR(w.ValidateHashing());
  ASSIGN_OR_RETURN(MatmulKernel kernel,
                   MatmulKernel::Create({.k = w.input_dim, .n = w.num_tables * w.num_hashes,
                                         .layout = MatmulSpec::WeightLayout::kOutputMajor,
                                         .bias = true}));
  ASSIGN_OR_RETURN(PackedWeights projection, kernel.PackAll(w.projection.data(), 1));
  return TableHasher(w, std::move(kernel), std::move(projection));
}

TableHasher::TableHasher(const LshTableWeights& w, MatmulKernel kernel, PackedWeights projection)
    : s_(w.num_tables), m_(w.num_hashes), family_(w.family),
      bucket_width_(w.bucket_width), kernel_(std::move(kernel)), projection_(std::move(projection)),
      offset_(w.offset) {}

int64_t TableHasher::weight_bytes_per_row() const { return kernel_.weight_bytes_per_read(); }

int64_t TableHasher::resident_bytes() const {
  return 4 * static_cast<int64_t>(projection_.size() + offset_.size());
}

absl::Status TableHasher::Keys(const float* x, int64_t n, uint64_t* keys,
                               PredictStats* stats) const {
  const int64_t hashes = s_ * m_;
  float* z = ScratchFloats(Scratch::kRouter, n * hashes);
  RETURN_IF_ERROR(kernel_.Run(x, n, projection_.data(), offset_.data(), z, &stats->flops,
                              &stats->weight_bytes));
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t i = 0; i < s_; ++i) {
      const float* zi = z + r * hashes + i * m_;
      keys[r * s_ + i] = family_ == HashFamily::kHyperplane ? HyperplaneKey(zi, m_)
                                                            : EuclideanKey(zi, m_, bucket_width_);
    }
  }
  return absl::OkStatus();
}

}  // namespace sparse
