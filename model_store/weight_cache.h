// The weight cache (docs/weight-cache.md): one file per model version,
// serving precision and machine (and shard, for a DSM shard's part),
// holding every large array of the version's engine models (a DSM's expert
// slices of B, Aᵀ and c, a dense network's layers) already in the layout
// the kernels consume, so that a server maps it read-only and computes on
// the mapping: a version's weights are paged in as requests touch them,
// paged out under memory pressure, and shared by every process that
// serves it.
//
// The server writes the file the first time it loads the version (after
// the whole-file SHA-256 of the checkpoint; a shard after the part sums of
// the ranges it reads), into a directory it owns
// (--weight_cache_dir; an emptyDir in Kubernetes, since the repository is
// mounted read-only), and never rewrites it: a file is written under a
// temporary name, synced, and renamed into place. A file whose key (the
// checkpoint's sums, the precision, oneDNN's version and ISA, this layout's
// version) differs, or whose index or sums do not check, is rebuilt.
//
// File layout, little-endian:
//   [arrays]  each 4096-byte aligned: `parts` parts of `part_floats` floats
//   [index]   JSON: {"key": {...}, "arrays": [{"name", "offset", "parts",
//             "part_floats"}, ...]}
//   [sums]    64 lowercase hex digits per part: the SHA-256 of each part's
//             bytes, array by array in the index's order
//   [footer]  u64 index bytes, u64 sums bytes, the SHA-256 of index+sums
//             (64 hex digits), the magic "SSWCACH1"
//
// A read lease (F_SETLEASE) is held on every mapped file. Another process
// that opens it for writing or truncates it breaks the lease: the kernel
// holds that process back (up to /proc/sys/fs/lease-break-time, 45 s by
// default) while the server unlinks the file, marks the mapping retired
// and lets the repository load the version again from a new file; the old
// mapping is released when its last request finishes. A mapping is never
// read after its file could have shrunk, so a truncation never crashes the
// server with SIGBUS.
#ifndef SPARSE_MODEL_STORE_WEIGHT_CACHE_H_
#define SPARSE_MODEL_STORE_WEIGHT_CACHE_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <sys/types.h>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/precision.h"
#include "engine/weight_store.h"

namespace sparse {

// When a mapped file's part sums are checked (--weight_verify).
enum class WeightVerify {
  kLoad,   // every part, at load, in parallel (a corrupt part fails the load)
  kTouch,  // each part on its first use (a corrupt part fails only the
           // requests that need it, with DATA_LOSS)
};
absl::string_view WeightVerifyName(WeightVerify verify);
absl::StatusOr<WeightVerify> ParseWeightVerify(absl::string_view name);

// Bumped when a kernel's packed layout or this file's layout changes.
inline constexpr int kWeightCacheLayoutVersion = 1;

// What a cache file must have been built from: the checkpoint's files (as
// their manifest sums name them), the serving precision, whether a
// cost-only dense endpoint was built, and this build's kernels (oneDNN's
// version and the ISA it runs). Equal keys, equal arrays. `shard` is
// empty for a whole model (its key is then what it was before shards were
// mapped, so existing files stay valid), or a shard's part's "i/N"
// (ShardSpec::ToString): each shard of a version has its own file.
std::string WeightCacheKey(const std::string& model_sha256, const std::string& dense_sha256,
                           Precision precision, bool cost_only_dense,
                           const std::string& shard = "");
// The file a key names in `dir`: <first 16 hex digits of SHA-256(key)>.weights.
std::string WeightCachePath(const std::string& dir, const std::string& key);

// One array of a cache file's index.
struct WeightCacheArray {
  std::string name;
  uint64_t offset = 0;  // bytes from the file's start
  int64_t parts = 0;
  int64_t part_floats = 0;
  uint64_t first_sum = 0;  // index of its first part's sum among all sums
};
struct WeightCacheIndex {
  std::string key;
  std::vector<WeightCacheArray> arrays;
  std::vector<std::string> sums;  // one per part of every array, in order
  uint64_t data_bytes = 0;        // where the index starts
};
// Parses and checks a whole cache file's bytes (`file`): footer, index
// and sums, each array inside the data and apart from the others. Never
// reads outside `file`. Errors: INVALID_ARGUMENT saying what is wrong.
absl::StatusOr<WeightCacheIndex> ParseWeightCacheIndex(absl::Span<const uint8_t> file);

// Writes a cache file: a WeightStore that takes each array's parts as a
// model is made, writes and hashes them, and hands back empty arrays (the
// models made while writing are thrown away). Publish() finishes the file.
class WeightCacheWriter : public WeightStore {
 public:
  // Creates `path`'s directory and a temporary file beside `path`.
  static absl::StatusOr<std::unique_ptr<WeightCacheWriter>> Create(const std::string& path,
                                                                   std::string key);
  ~WeightCacheWriter() override;  // removes the temporary file if not published

  // Reserves the array and writes its parts in order.
  absl::StatusOr<PackedWeights> Array(absl::string_view name, int64_t parts, int64_t part_floats,
                                      PartFill fill) override;
  // For writers that make an array's parts out of order (a model written
  // one group of experts at a time): Reserve once, then WritePart each
  // part. Publish() checks every part was written.
  bool Has(absl::string_view name) const;
  absl::Status Reserve(absl::string_view name, int64_t parts, int64_t part_floats);
  absl::Status WritePart(absl::string_view name, int64_t part, const float* data);
  // Writes the index, sums and footer, syncs, and renames the file to its
  // path (replacing a stale file there; a reader that has the old one
  // mapped keeps it).
  absl::Status Publish();
  uint64_t bytes_written() const { return offset_; }

 private:
  WeightCacheWriter(std::string path, std::string tmp, int fd, std::string key);
  absl::Status WriteAt(uint64_t at, const void* data, size_t bytes);
  WeightCacheArray* Find(absl::string_view name);

  const std::string path_, tmp_;
  int fd_ = -1;
  const std::string key_;
  uint64_t offset_ = 0;
  std::vector<WeightCacheArray> arrays_;
  std::vector<std::string> sums_;
  bool published_ = false;
};

// A published cache file, mapped read-only: a prebuilt WeightStore whose
// arrays are views of the mapping. Shared by the arrays' guards, so the
// mapping lives as long as any model made from it.
class WeightCacheFile : public WeightStore,
                        public std::enable_shared_from_this<WeightCacheFile> {
 public:
  // Opens and maps `path` and checks its index; FAILED_PRECONDITION when
  // its key is not `key` (stale: rebuild it), NOT_FOUND when there is no
  // file, INVALID_ARGUMENT when it is damaged. With kLoad every part's sum
  // is checked here, on every core.
  static absl::StatusOr<std::shared_ptr<WeightCacheFile>> Open(const std::string& path,
                                                               const std::string& key,
                                                               WeightVerify verify);
  ~WeightCacheFile() override;

  absl::StatusOr<PackedWeights> Array(absl::string_view name, int64_t parts, int64_t part_floats,
                                      PartFill fill) override;
  bool Prebuilt() const override { return true; }

  // Every array of the index was handed out (a file with more or fewer
  // arrays than the models asked for is not this version's).
  absl::Status CheckAllUsed() const;
  const std::string& path() const { return path_; }
  // <model>/<version>/<file> under --weight_cache_dir: what messages and
  // GetModel name (never the server's directory path).
  std::string name() const;
  uint64_t file_bytes() const { return size_; }
  WeightVerify verify() const { return verify_; }
  // Another process opened the file for writing or truncated it: the
  // version must be loaded again from a new file (the repository does).
  bool retired() const { return retired_.load(std::memory_order_acquire); }
  // Whether a read lease guards the mapping (not on file systems without
  // leases, such as some network ones; docs/weight-cache.md).
  bool leased() const { return leased_; }

 private:
  class Guard;
  WeightCacheFile(std::string path, int fd, const uint8_t* base, uint64_t size,
                  WeightCacheIndex index, WeightVerify verify);
  // Checks every part of every array, on every core; the parts' state
  // records it.
  absl::Status VerifyAll();
  // Hashes part `part` of `a` against its sum and records the answer in
  // state_ (Touch on first use, VerifyAll at load).
  bool CheckPart(const WeightCacheArray& a, int64_t part) const;
  // Starts reading [offset, offset + bytes) of the file into memory.
  void WillNeed(uint64_t offset, uint64_t bytes) const;
  static void OnLeaseBroken(int fd);
  friend class LeaseWatcher;

  const std::string path_;
  const int fd_;
  const uint8_t* const base_;
  const uint64_t size_;
  const WeightCacheIndex index_;
  const WeightVerify verify_;
  // Per part of every array (index_.sums' order): 0 unchecked, 1 good, 2 bad.
  std::unique_ptr<std::atomic<uint8_t>[]> state_;
  std::vector<bool> used_;
  std::atomic<bool> retired_{false};
  bool leased_ = false;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

}  // namespace sparse

#endif  // SPARSE_MODEL_STORE_WEIGHT_CACHE_H_
