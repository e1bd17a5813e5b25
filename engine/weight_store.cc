#include "engine/weight_store.h"

#include <cstdlib>
#include <new>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace sparse {

PackedWeights::PackedWeights(size_t floats) : size_(floats) {
  // aligned_alloc needs a size that is a multiple of the alignment.
  const size_t bytes = ((floats * sizeof(float) + 63) / 64) * 64;
  owned_.reset(static_cast<float*>(std::aligned_alloc(64, bytes == 0 ? 64 : bytes)));
  if (owned_ == nullptr) throw std::bad_alloc();
  data_ = owned_.get();
}

PackedWeights::PackedWeights(const float* data, size_t floats,
                             std::shared_ptr<const MappedArrayGuard> guard)
    : data_(data), size_(floats), guard_(std::move(guard)) {}

void PackedWeights::Free::operator()(float* p) const { std::free(p); }

absl::StatusOr<PackedWeights> CopyInStore::Array(absl::string_view /*name*/, int64_t parts,
                                                 int64_t part_floats, PartFill fill) {
  PackedWeights array(static_cast<size_t>(parts * part_floats));
  for (int64_t p = 0; p < parts; ++p) RETURN_IF_ERROR(fill(p, array.data() + p * part_floats));
  return array;
}

WeightStore& CopyIn() {
  static CopyInStore* const store = new CopyInStore();
  return *store;
}

absl::StatusOr<PackedWeights> PrefixedStore::Array(absl::string_view name, int64_t parts,
                                                   int64_t part_floats, PartFill fill) {
  return base_->Array(absl::StrCat(prefix_, name), parts, part_floats, fill);
}

}  // namespace sparse
