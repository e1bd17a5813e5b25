#include "model_store/file_util.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace sparse {
namespace {

absl::Status ErrnoStatus(int err, absl::string_view what) {
  const std::string message = absl::StrCat(what, ": ", std::strerror(err));
  switch (err) {
    case ENOENT: return absl::NotFoundError(message);
    case EACCES:
    case EPERM: return absl::PermissionDeniedError(message);
    default: return absl::InternalError(message);
  }
}

}  // namespace

absl::StatusOr<FileContents> FileContents::Read(const std::string& path,
                                                absl::string_view display_name, uint64_t max_bytes,
                                                absl::string_view too_big) {
  // O_NONBLOCK: opening a FIFO planted in the repository must not hang the
  // loader; the regular-file check below then rejects it.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("cannot open ", display_name));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoStatus(errno, absl::StrCat("cannot stat ", display_name));
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(display_name, " is not a regular file"));
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        display_name, ": size ", st.st_size, " bytes, ",
        too_big.empty() ? absl::StrCat("more than the limit of ", max_bytes) : std::string(too_big)));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  // One byte more than the size, rounded up to the alignment: a read that
  // fills it shows the file grew.
  constexpr size_t kAlign = 64;
  const size_t capacity = (size + 1 + kAlign - 1) / kAlign * kAlign;
  std::unique_ptr<uint8_t, Free> data(static_cast<uint8_t*>(std::aligned_alloc(kAlign, capacity)));
  if (data == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate ", size, " bytes to read ", display_name));
  }
  size_t done = 0;
  while (done < capacity) {
    const ssize_t n = ::pread(fd, data.get() + done, capacity - done, static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, absl::StrCat("cannot read ", display_name));
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  if (done != size) {
    return absl::InvalidArgumentError(absl::StrCat(
        display_name, done > size ? " grew" : " shrank", " while being read (", size,
        " bytes when opened): is it still being written? Publish a version by renaming a "
        "finished directory into place"));
  }
  return FileContents(std::move(data), size);
}

std::string Sha256Hex(absl::Span<const uint8_t> data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * length);
  for (unsigned int i = 0; i < length; ++i) {
    hex.push_back(kHex[digest[i] >> 4]);
    hex.push_back(kHex[digest[i] & 0xf]);
  }
  return hex;
}

absl::Status WriteFileSynced(const std::string& path, absl::string_view contents) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("cannot create ", path));
  size_t written = 0;
  while (written < contents.size()) {
    const ssize_t n = ::write(fd, contents.data() + written, contents.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return ErrnoStatus(err, absl::StrCat("cannot write ", path));
    }
    written += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    return ErrnoStatus(err, absl::StrCat("cannot sync ", path));
  }
  if (::close(fd) != 0) return ErrnoStatus(errno, absl::StrCat("cannot close ", path));
  return absl::OkStatus();
}

absl::Status SyncDirectory(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("cannot open directory ", path));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return ErrnoStatus(err, absl::StrCat("cannot sync directory ", path));
  return absl::OkStatus();
}

}  // namespace sparse
