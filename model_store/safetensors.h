// The safetensors layout (https://github.com/huggingface/safetensors):
//   8-byte little-endian header length N | N bytes of JSON header | data.
// The header maps tensor names to {dtype, shape, data_offsets} (offsets are
// relative to the start of the data section) and may hold "__metadata__", a
// map of strings to strings. We read F32, U64, I64, BF16 and I8 tensors.
//
// ParseSafetensors validates everything before returning: header bounds,
// JSON shape, dtypes, shapes with overflow-checked products, byte ranges
// that are in order, non-overlapping, in bounds and cover the data section
// exactly. Errors name the file (its display name) and the field.
#ifndef SPARSE_MODEL_STORE_SAFETENSORS_H_
#define SPARSE_MODEL_STORE_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace sparse {

// BF16 and I8 hold reduced-precision weight matrices (docs/checkpoint-format.md).
enum class DType { kF32, kU64, kI64, kBF16, kI8 };
absl::string_view DTypeName(DType dtype);
size_t DTypeSize(DType dtype);

// Largest header we accept. A header holds ~100 bytes per tensor (an LSH
// table of 4096 tables needs ~1.2 MiB); parsing JSON takes tens of times
// its size in memory, so the cap also bounds what a hostile file can cost.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = uint64_t{2} << 20;

struct TensorView {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  int64_t elements = 0;
  // Where the tensor's bytes start, counted from the start of the data
  // section (the file's byte 8 + header length).
  uint64_t offset = 0;
  uint64_t byte_size = 0;
  // The bytes themselves: into the buffer given to ParseSafetensors; empty
  // from ParseSafetensorsHeader.
  absl::Span<const uint8_t> bytes;
};

// A parsed file. Views point into the buffer given to ParseSafetensors,
// which must outlive this object.
struct SafetensorsContents {
  std::map<std::string, std::string> metadata;
  std::map<std::string, TensorView> tensors;
};

absl::StatusOr<SafetensorsContents> ParseSafetensors(absl::Span<const uint8_t> file,
                                                     absl::string_view display_name);

// The header length a file's first 8 bytes declare, checked against the
// limit and against `file_size`.
absl::StatusOr<uint64_t> SafetensorsHeaderLength(absl::Span<const uint8_t> first8,
                                                 uint64_t file_size,
                                                 absl::string_view display_name);

// Parses and validates the header alone, as ParseSafetensors does, for a
// reader that then reads only some tensors' bytes: `header_json` is the
// header (the bytes after the length), `data_size` the bytes that follow it.
// Views carry offsets and sizes; their `bytes` are empty.
absl::StatusOr<SafetensorsContents> ParseSafetensorsHeader(absl::string_view header_json,
                                                           uint64_t data_size,
                                                           absl::string_view display_name);

// A tensor to write; `data` must hold product(shape) * DTypeSize(dtype) bytes.
struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
};

// Serializes metadata and tensors (data in the given order). The header is
// padded with spaces so the data section starts 8-byte aligned.
std::string SerializeSafetensors(const std::map<std::string, std::string>& metadata,
                                 const std::vector<TensorToWrite>& tensors);

}  // namespace sparse

#endif  // SPARSE_MODEL_STORE_SAFETENSORS_H_
