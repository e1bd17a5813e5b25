#include "engine/sharding.h"

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace sparse {

std::string ShardSpec::ToString() const { return absl::StrCat(index, "/", count); }

absl::StatusOr<ShardSpec> ParseShardSpec(absl::string_view text) {
  const std::vector<absl::string_view> parts = absl::StrSplit(text, '/');
  ShardSpec spec;
  // A StatefulSet pod's name ends in its ordinal: "sparse-shard-a-2" is 2.
  absl::string_view index = parts.empty() ? "" : parts[0];
  if (const size_t dash = index.rfind('-'); dash != absl::string_view::npos && dash > 0) {
    index.remove_prefix(dash + 1);
  }
  if (parts.size() != 2 || index.empty() || !absl::SimpleAtoi(index, &spec.index) ||
      !absl::SimpleAtoi(parts[1], &spec.count) || spec.count < 1 || spec.count > kMaxShards ||
      spec.index < 0 || spec.index >= spec.count) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a shard is 'i/N' with 0 <= i < N <= ", kMaxShards,
        " (e.g. 0/4; i may be a StatefulSet pod's name, whose ordinal suffix is i), got '", text,
        "'"));
  }
  return spec;
}

UnitRange OwnedUnits(int64_t units, int index, int count) {
  return {units * index / count, units * (index + 1) / count};
}

int ShardOfUnit(int64_t unit, int64_t units, int count) {
  // The largest i with floor(i·U/N) <= unit.
  return static_cast<int>(((unit + 1) * count - 1) / units);
}

}  // namespace sparse
