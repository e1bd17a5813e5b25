// File helpers for the checkpoint code: a read-only memory map, SHA-256, and
// durable writes (write, fsync, rename) so a crash never leaves a torn file
// under its final name.
#ifndef SPARSE_MODEL_STORE_FILE_UTIL_H_
#define SPARSE_MODEL_STORE_FILE_UTIL_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace sparse {

// A read-only, private memory map of a whole file. Move-only; unmaps on
// destruction. Safe to read from many threads.
class MappedFile {
 public:
  // Errors: NOT_FOUND if the file does not exist, otherwise INTERNAL/
  // PERMISSION_DENIED with the errno text. Messages name `display_name`
  // rather than the path.
  static absl::StatusOr<MappedFile> Open(const std::string& path, absl::string_view display_name);

  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  absl::Span<const uint8_t> bytes() const { return {data_, size_}; }

 private:
  MappedFile(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Lowercase hex SHA-256 of `data`.
std::string Sha256Hex(absl::Span<const uint8_t> data);

// Writes `contents` to `path` (creating or truncating it) and fsyncs it.
absl::Status WriteFileSynced(const std::string& path, absl::string_view contents);

// fsyncs a directory so that a rename or create inside it is durable.
absl::Status SyncDirectory(const std::string& path);

}  // namespace sparse

#endif  // SPARSE_MODEL_STORE_FILE_UTIL_H_
