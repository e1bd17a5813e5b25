// Where a model's large weight arrays live (docs/weight-cache.md).
//
// A model asks a WeightStore for each large array it computes with (a
// DSM's expert slices and their biases, a dense layer) by name, as `parts`
// equal parts: an expert slice, a whole matrix. The copy-in store
// (CopyInStore) allocates process memory and fills it. The weight cache
// (model_store/weight_cache.h) instead hands out views of a read-only
// mapping of a server-owned file that holds the arrays already in the
// kernels' layouts, so a model's weights are paged in as requests touch
// them and shared by every process serving the version; or, while it
// writes that file, takes the filled parts and hands back nothing.
//
// A mapped array has a guard: before a request reads part p the model calls
// PackedWeights::Touch(p), which checks that part's SHA-256 on its first
// touch (when the cache verifies on touch) and fails only the requests that
// need a corrupt part.
#ifndef SPARSE_ENGINE_WEIGHT_STORE_H_
#define SPARSE_ENGINE_WEIGHT_STORE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sparse {

// What a mapped array answers about its parts. Thread-safe.
class MappedArrayGuard {
 public:
  virtual ~MappedArrayGuard() = default;
  // OK when part `part`'s bytes match the SHA-256 the file records for it
  // (checked once, on the first call, unless the whole file was checked at
  // load); DATA_LOSS naming the array and part otherwise.
  virtual absl::Status Touch(int64_t part) const = 0;
  // Bytes of part `part` in memory now (mincore), and the part's size.
  virtual int64_t ResidentBytes(int64_t part) const = 0;
  virtual int64_t PartBytes() const = 0;
};

// A float array holding weights: owned 64-byte-aligned memory, or a view of
// a mapped file (read-only: the kernels never write their weights). Move-only.
class PackedWeights {
 public:
  PackedWeights() = default;
  // `floats` floats of owned memory.
  explicit PackedWeights(size_t floats);
  // A view of `floats` floats at `data` in a mapping `guard` keeps alive.
  PackedWeights(const float* data, size_t floats, std::shared_ptr<const MappedArrayGuard> guard);

  // To fill owned memory: null for a mapped array (read it through the
  // const overload, e.g. std::as_const).
  float* data() { return owned_.get(); }
  const float* data() const { return data_; }
  size_t size() const { return size_; }
  bool mapped() const { return guard_ != nullptr; }
  // Before a request reads part `part`: OK for owned memory, the guard's
  // answer for a mapped array.
  absl::Status Touch(int64_t part) const {
    return guard_ == nullptr ? absl::OkStatus() : guard_->Touch(part);
  }
  // Bytes of part `part` in memory: all of it when owned.
  int64_t ResidentBytes(int64_t part, int64_t part_bytes) const {
    return guard_ == nullptr ? part_bytes : guard_->ResidentBytes(part);
  }

 private:
  struct Free {
    void operator()(float* p) const;
  };
  std::unique_ptr<float[], Free> owned_;
  const float* data_ = nullptr;
  size_t size_ = 0;
  std::shared_ptr<const MappedArrayGuard> guard_;
};

class WeightStore {
 public:
  virtual ~WeightStore() = default;
  // Fills part `part` (`part_floats` floats) at `out`.
  using PartFill = absl::FunctionRef<absl::Status(int64_t part, float* out)>;
  // Array `name` of the model being made, as `parts` consecutive parts of
  // `part_floats` floats (part p at p · part_floats). `fill` runs once per
  // part, in order, unless the array already exists (a mapped cache).
  virtual absl::StatusOr<PackedWeights> Array(absl::string_view name, int64_t parts,
                                              int64_t part_floats, PartFill fill) = 0;
  // True when Array() hands out arrays that exist already and never calls
  // `fill`: a model is then made from weights whose large tensors are empty
  // (their dimensions, routers and a0 only; see each model's Create).
  virtual bool Prebuilt() const { return false; }
};

// Process memory, filled part by part.
class CopyInStore : public WeightStore {
 public:
  absl::StatusOr<PackedWeights> Array(absl::string_view name, int64_t parts, int64_t part_floats,
                                      PartFill fill) override;
};

// The process-wide copy-in store (stateless).
WeightStore& CopyIn();

// Names every array of `base` with `prefix` ("sparse/", "dense/"), so the
// models of one version share one store.
class PrefixedStore : public WeightStore {
 public:
  PrefixedStore(WeightStore* base, std::string prefix) : base_(base), prefix_(std::move(prefix)) {}
  absl::StatusOr<PackedWeights> Array(absl::string_view name, int64_t parts, int64_t part_floats,
                                      PartFill fill) override;
  bool Prebuilt() const override { return base_->Prebuilt(); }

 private:
  WeightStore* base_;
  std::string prefix_;
};

}  // namespace sparse

#endif  // SPARSE_ENGINE_WEIGHT_STORE_H_
