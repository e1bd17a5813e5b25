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

// An open regular file read at chosen offsets (pread), for readers that
// need only some byte ranges of a large file (a shard's tensor parts).
// Move-only; ReadAt is safe from many threads.
// Fills `out` with the bytes of `fd` at [offset, offset + out.size()),
// through short reads and EINTR. OUT_OF_RANGE when the file ends first;
// the errno's status (naming `name`) when a read fails.
absl::Status PreadFully(int fd, uint64_t offset, absl::Span<uint8_t> out, absl::string_view name);

class RandomAccessFile {
 public:
  // Opens `path` as FileContents::Read does (regular files only, without
  // blocking). Errors as FileContents::Read; INVALID_ARGUMENT if the size
  // is not `expected_bytes`.
  static absl::StatusOr<RandomAccessFile> Open(const std::string& path,
                                               absl::string_view display_name,
                                               uint64_t expected_bytes);
  RandomAccessFile(RandomAccessFile&& other) noexcept;
  RandomAccessFile& operator=(RandomAccessFile&& other) noexcept;
  RandomAccessFile(const RandomAccessFile&) = delete;
  RandomAccessFile& operator=(const RandomAccessFile&) = delete;
  ~RandomAccessFile();

  uint64_t size() const { return size_; }
  // Fills `out` with the bytes at [offset, offset + out.size()). Errors:
  // INVALID_ARGUMENT if the range is past the size it was opened at, or the
  // file shrank under the reader.
  absl::Status ReadAt(uint64_t offset, absl::Span<uint8_t> out) const;

 private:
  RandomAccessFile(int fd, uint64_t size, std::string name)
      : fd_(fd), size_(size), name_(std::move(name)) {}
  int fd_ = -1;
  uint64_t size_ = 0;
  std::string name_;
};

// Lowercase hex SHA-256 of `data`.
std::string Sha256Hex(absl::Span<const uint8_t> data);

// SHA-256 over data given in pieces. Move-only.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&& other) noexcept;
  Sha256& operator=(Sha256&&) = delete;
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(absl::Span<const uint8_t> data);
  // Lowercase hex of everything Update() was given; call once.
  std::string HexDigest();

 private:
  struct Context;
  Context* context_;
};

// Writes `contents` to `path` (creating or truncating it) and fsyncs it.
absl::Status WriteFileSynced(const std::string& path, absl::string_view contents);

// fsyncs a directory so that a rename or create inside it is durable.
absl::Status SyncDirectory(const std::string& path);

}  // namespace sparse

#endif  // SPARSE_MODEL_STORE_FILE_UTIL_H_
