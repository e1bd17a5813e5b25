// Typed access to a checkpoint's tensor files (docs/checkpoint-format.md),
// for the code that reads and writes them: checkpoint.cc and each kind's
// codec (model_store/kinds/). Metadata values and tensors are read with the
// type, dtype and shape the metadata implies; every error names the file
// and the field. A part of a model (a shard's experts or tables) reads only
// the units it needs: from the whole file in memory, or from a file read at
// ranges (RangedFile) whose bytes are checked against the manifest's sums
// as they are read.
//
// Readers and the writer are single-threaded objects that live for one
// file; they hold references to what they are given, which must outlive them.
#ifndef SPARSE_MODEL_STORE_TENSOR_IO_H_
#define SPARSE_MODEL_STORE_TENSOR_IO_H_

#include <cstdint>
#include <list>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"
#include "engine/precision.h"
#include "engine/sharding.h"
#include "model_store/file_util.h"
#include "model_store/safetensors.h"

namespace sparse {

using Metadata = std::map<std::string, std::string>;

// __metadata__ keys "info.<key>" hold free-form facts (Checkpoint::info).
inline constexpr char kInfoPrefix[] = "info.";

// `s` with "<file>: " before its message; OK stays OK.
absl::Status WithFile(absl::string_view file, const absl::Status& s);

// The shortest decimal text that reads back as `v` (metadata floats).
std::string FloatToString(float v);

// For writers that look at metadata they wrote (the manifest's parts): the
// value of `key`, "" if absent; as a positive integer, 0 if it is not one.
std::string MetadataValue(const Metadata& meta, const std::string& key);
int64_t PositiveMetadataInt(const Metadata& meta, const std::string& key);

// Reads typed metadata values and remembers which keys were consumed, so
// unknown keys (typos) can be reported.
class MetadataReader {
 public:
  MetadataReader(const Metadata& meta, absl::string_view file) : meta_(meta), file_(file) {}

  absl::StatusOr<std::string> String(const std::string& key);
  absl::StatusOr<int64_t> Int(const std::string& key);
  // A dimension: an integer in [0, 2^40], checked before any shape is
  // computed from it.
  absl::StatusOr<int64_t> Dim(const std::string& key);
  // An enum value, parsed by `parse` (ParseActivation, ParseRouterKind, ...).
  template <typename T>
  absl::StatusOr<T> Enum(const std::string& key, absl::StatusOr<T> (*parse)(absl::string_view)) {
    ASSIGN_OR_RETURN(std::string s, String(key));
    absl::StatusOr<T> v = parse(s);
    RETURN_IF_ERROR(WithFile(file_, v.status()));
    return v;
  }
  absl::StatusOr<uint64_t> Uint(const std::string& key);
  absl::StatusOr<float> Float(const std::string& key);
  // Errors on any key that was not read and is not "info.*"; collects the
  // "info.*" keys into *info (may be null).
  absl::Status Finish(std::map<std::string, std::string>* info);

 private:
  absl::Status Bad(const std::string& key, const std::string& value, absl::string_view what);
  const Metadata& meta_;
  const std::string file_;
  std::vector<std::string> used_;
};

// INVALID_ARGUMENT unless `meta`'s format_version is the one this build
// reads (kCheckpointFormatVersion).
absl::Status CheckFormatVersion(MetadataReader& meta);

// A tensor of `shape` seen as [outer, units, inner bytes] around `axis`
// (a shape of no dimensions: one unit). Shapes come from a parsed header,
// whose byte size does not overflow.
struct AroundAxis {
  int64_t outer = 1, units = 1, inner = 1;
  AroundAxis(const std::vector<int64_t>& shape, int axis, int64_t element_bytes)
      : inner(element_bytes) {
    if (shape.empty()) return;
    for (int i = 0; i < axis; ++i) outer *= shape[i];
    units = shape[axis];
    for (size_t i = axis + 1; i < shape.size(); ++i) inner *= shape[i];
  }
};

// Which units of a tensor, along one axis, a part of a model needs (a
// shard's experts or tables). Ranges are in order and do not overlap.
struct Selection {
  int axis = 0;
  std::vector<UnitRange> ranges;
  int64_t Units() const {
    int64_t n = 0;
    for (const UnitRange& r : ranges) n += r.size();
    return n;
  }
};

// A tensor's SHA-256 sums in a format_version 2 manifest: one per part,
// the tensor cut into equal parts along `axis` (one part: the whole).
struct TensorHashes {
  int axis = 0;
  std::vector<std::string> sha256;
};

// A file read at chosen ranges (a part of a model from a format_version 2
// manifest), each range's bytes checked against the manifest's sums.
struct RangedFile {
  const RandomAccessFile* file = nullptr;
  uint64_t data_start = 0;  // 8 + header length
  const std::map<std::string, TensorHashes>* hashes = nullptr;
};

// Reads the header of `file` (named `name`) and checks it against what the
// manifest says of it: `header_bytes` (8 + N) and `header_sha256`, and
// `hashes` listing exactly the tensors it holds. Views carry offsets and
// sizes; their bytes are empty (read them with a RangedFile).
absl::StatusOr<SafetensorsContents> ReadCheckedHeader(
    const RandomAccessFile& file, uint64_t header_bytes, const std::string& header_sha256,
    const std::map<std::string, TensorHashes>& hashes, absl::string_view name);

// Takes named tensors out of parsed contents with the dtype and shape the
// metadata implies; remembers which were taken so extras can be reported.
// Tensors come from the whole file in memory, or from a RangedFile, in
// which case only the parts a Selection needs are read and checked.
class TensorReader {
 public:
  TensorReader(const SafetensorsContents& contents, absl::string_view file,
               const RangedFile* ranged = nullptr)
      : contents_(contents), file_(file), ranged_(ranged) {}

  // The tensor, or with `select` only the selected units along its axis
  // (the result has the tensor's shape with that axis cut to them).
  template <typename T>
  absl::StatusOr<std::vector<T>> Get(const std::string& name, DType dtype,
                                     const std::vector<int64_t>& shape,
                                     const Selection* select = nullptr) {
    ASSIGN_OR_RETURN(const TensorView* view, Find(name, dtype, shape));
    taken_.push_back(name);
    const Selection whole{0, {{0, shape.empty() ? 1 : shape[0]}}};
    if (select == nullptr || shape.empty()) select = &whole;
    const AroundAxis around(shape, select->axis, sizeof(T));
    std::vector<T> out(static_cast<size_t>(around.outer * select->Units() * around.inner / sizeof(T)));
    RETURN_IF_ERROR(Place(name, *view, shape, sizeof(T), *select,
                          reinterpret_cast<uint8_t*>(out.data())));
    return out;
  }
  absl::StatusOr<std::vector<float>> F32(const std::string& name, const std::vector<int64_t>& shape,
                                         const Selection* select = nullptr) {
    return Get<float>(name, DType::kF32, shape, select);
  }
  // A weight matrix [rows, cols] stored as F32, as BF16, or as I8 with its
  // per-row (output channel) scales in the F32 tensor `<name>.scale`
  // [rows], >= 0: each value is q·scale. Returns float32 values of the
  // selected rows (axis 0) or columns (axis 1); stored() says which dtype
  // the file used.
  absl::StatusOr<std::vector<float>> Matrix(const std::string& name, int64_t rows, int64_t cols,
                                            const Selection* select = nullptr);
  // Marks a tensor this part of the model does not need (a shard's router,
  // a front's expert slices) as accounted for, without reading it.
  void Skip(const std::string& name) {
    if (contents_.tensors.contains(name)) taken_.push_back(name);
  }
  // The reduced precision a Matrix() was stored at (FP32 if none was).
  Precision stored() const { return stored_; }
  // Bytes read from a RangedFile so far.
  uint64_t bytes_read() const { return bytes_read_; }
  // The element count of a 1-d tensor, for tensors whose length is data.
  absl::StatusOr<int64_t> Length(const std::string& name) const;
  int64_t Count() const { return static_cast<int64_t>(contents_.tensors.size()); }
  // Errors on any tensor of the file that was neither taken nor skipped.
  absl::Status Finish() const;

 private:
  absl::StatusOr<const TensorView*> Find(const std::string& name, DType dtype,
                                         const std::vector<int64_t>& shape) const;
  // Writes the units `select` picks of tensor `name` (`view`, of `shape`
  // and `element_bytes` per element) to `dst`, in order.
  absl::Status Place(const std::string& name, const TensorView& view,
                     const std::vector<int64_t>& shape, int64_t element_bytes,
                     const Selection& select, uint8_t* dst);
  // Place() from the RangedFile: reads every manifest part the selection
  // touches, whole, and checks its sum.
  struct Placement;
  absl::Status PlaceRanged(const std::string& name, const TensorView& view,
                           const std::vector<int64_t>& shape, int64_t element_bytes,
                           const Placement& placement);

  const SafetensorsContents& contents_;
  const std::string file_;
  const RangedFile* ranged_;
  std::vector<std::string> taken_;
  Precision stored_ = Precision::kFp32;
  uint64_t bytes_read_ = 0;
};

// Collects a tensor file's metadata and tensors (docs/checkpoint-format.md).
// Tensors point into the weights they were given, which must outlive the
// writer, except converted ones (BF16, I8), whose bytes it holds.
class TensorWriter {
 public:
  // `matrices`: what Matrix() stores weight matrices at
  // (Checkpoint::tensor_precision).
  explicit TensorWriter(Precision matrices = Precision::kFp32) : matrices_(matrices) {}

  void Set(const std::string& key, std::string value) { metadata_[key] = std::move(value); }
  void F32(std::string name, std::vector<int64_t> shape, const std::vector<float>& v) {
    tensors_.push_back({std::move(name), DType::kF32, std::move(shape), v.data()});
  }
  void U64(std::string name, std::vector<int64_t> shape, const std::vector<uint64_t>& v) {
    tensors_.push_back({std::move(name), DType::kU64, std::move(shape), v.data()});
  }
  // A weight matrix [rows, cols] at `matrices`: F32, BF16, or I8 with the
  // F32 tensor <name>.scale, one scale per row (output channel).
  void Matrix(const std::string& name, int64_t rows, int64_t cols, const std::vector<float>& v);
  // The file: the metadata with format_version, and the tensors in the
  // order they were added.
  std::string Serialize();

 private:
  Metadata metadata_;
  std::vector<TensorToWrite> tensors_;
  const Precision matrices_;
  std::list<std::string> owned_;  // converted tensors' bytes (stable addresses)
};

}  // namespace sparse

#endif  // SPARSE_MODEL_STORE_TENSOR_IO_H_
