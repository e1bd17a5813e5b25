// Sharding: how a model's experts (DSM) or tables (LSH) are split across N
// shard servers, and which part a server holds (docs/deploy.md, "Sharded
// models").
//
// Shard i of N owns the contiguous range [floor(i·U/N), floor((i+1)·U/N))
// of U units: a DSM's experts (the same range in every block) or an LSH
// model's tables. Ranges differ in size by at most one, and every unit has
// exactly one owner. Pure arithmetic; thread-safe.
#ifndef SPARSE_ENGINE_SHARDING_H_
#define SPARSE_ENGINE_SHARDING_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sparse {

// Which part of a model a server holds.
struct ShardSpec {
  int index = 0;  // i, in [0, count)
  int count = 1;  // N; 1 = the whole model
  bool sharded() const { return count > 1; }
  std::string ToString() const;  // "i/N"
};

// Parses "i/N" (0 <= i < N, 1 <= N <= kMaxShards). i may also be a
// StatefulSet pod's name, "<name>-<ordinal>": its ordinal is i, so a pod
// can pass --shard=$(POD_NAME)/N.
absl::StatusOr<ShardSpec> ParseShardSpec(absl::string_view text);
inline constexpr int kMaxShards = 1024;

// [begin, end) of the `units` a shard owns.
struct UnitRange {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};
UnitRange OwnedUnits(int64_t units, int index, int count);

// The shard that owns `unit` of `units`. REQUIRES: 0 <= unit < units, count <= units.
int ShardOfUnit(int64_t unit, int64_t units, int count);

}  // namespace sparse

#endif  // SPARSE_ENGINE_SHARDING_H_
