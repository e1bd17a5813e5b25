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
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &spec.index) ||
      !absl::SimpleAtoi(parts[1], &spec.count) || spec.count < 1 || spec.count > kMaxShards ||
      spec.index < 0 || spec.index >= spec.count) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a shard is 'i/N' with 0 <= i < N <= ", kMaxShards, " (e.g. 0/4), got '", text, "'"));
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
