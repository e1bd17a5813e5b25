// File helpers for the checkpoint code: reading a whole file, SHA-256, and
// durable writes (write, fsync, rename) so a crash never leaves a torn file
// under its final name.
#ifndef SPARSE_MODEL_STORE_FILE_UTIL_H_
#define SPARSE_MODEL_STORE_FILE_UTIL_H_

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace sparse {

// The bytes of a whole file, read into memory (64-byte aligned). Move-only.
// Safe to read from many threads.
//
// Not a memory map on purpose: a mapped file that someone truncates in
// place (an operator's `cp` over a version being loaded, say) kills the
// process with SIGBUS on the next read of a vanished page. Read once, the
// bytes cannot change under the reader; a file that shrinks or grows while
// it is read is an error.
class FileContents {
 public:
  // Errors: NOT_FOUND if the file does not exist, INVALID_ARGUMENT if it is
  // not a regular file (a FIFO, a device, a directory: opened without
  // blocking and never read), is larger than `max_bytes` (checked with
  // fstat before anything is allocated; the message is "<display_name>:
  // size N bytes, <too_big>", `too_big` defaulting to "more than the limit
  // of <max_bytes>") or changed size while being read, otherwise
  // INTERNAL/PERMISSION_DENIED with the errno text. Messages name
  // `display_name` rather than the path.
  static absl::StatusOr<FileContents> Read(const std::string& path, absl::string_view display_name,
                                           uint64_t max_bytes = kNoLimit,
                                           absl::string_view too_big = "");
  static constexpr uint64_t kNoLimit = ~uint64_t{0};

  FileContents(FileContents&&) noexcept = default;
  FileContents& operator=(FileContents&&) noexcept = default;
  FileContents(const FileContents&) = delete;
  FileContents& operator=(const FileContents&) = delete;

  absl::Span<const uint8_t> bytes() const { return {data_.get(), size_}; }

 private:
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  FileContents(std::unique_ptr<uint8_t, Free> data, size_t size)
      : data_(std::move(data)), size_(size) {}
  std::unique_ptr<uint8_t, Free> data_;
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
