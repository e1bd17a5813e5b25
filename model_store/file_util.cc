#include "model_store/file_util.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

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

// Opens a regular file without blocking; its size in *size.
absl::StatusOr<int> OpenRegular(const std::string& path, absl::string_view display_name,
                                uint64_t* size) {
  // O_NONBLOCK: opening a FIFO planted in the repository must not hang the
  // loader; the regular-file check below then rejects it.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("cannot open ", display_name));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return ErrnoStatus(err, absl::StrCat("cannot stat ", display_name));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(display_name, " is not a regular file"));
  }
  *size = static_cast<uint64_t>(st.st_size);
  return fd;
}

std::string Hex(const unsigned char* digest, unsigned int length) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * length);
  for (unsigned int i = 0; i < length; ++i) {
    hex.push_back(kHex[digest[i] >> 4]);
    hex.push_back(kHex[digest[i] & 0xf]);
  }
  return hex;
}

}  // namespace

absl::StatusOr<FileContents> FileContents::Read(const std::string& path,
                                                absl::string_view display_name, uint64_t max_bytes,
                                                absl::string_view too_big) {
  uint64_t file_size = 0;
  absl::StatusOr<int> opened = OpenRegular(path, display_name, &file_size);
  if (!opened.ok()) return opened.status();
  const int fd = *opened;
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  if (file_size > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        display_name, ": size ", file_size, " bytes, ",
        too_big.empty() ? absl::StrCat("more than the limit of ", max_bytes) : std::string(too_big)));
  }
  const size_t size = static_cast<size_t>(file_size);
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

absl::StatusOr<RandomAccessFile> RandomAccessFile::Open(const std::string& path,
                                                        absl::string_view display_name,
                                                        uint64_t expected_bytes) {
  uint64_t size = 0;
  absl::StatusOr<int> fd = OpenRegular(path, display_name, &size);
  if (!fd.ok()) return fd.status();
  RandomAccessFile file(*fd, size, std::string(display_name));
  if (size != expected_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(display_name, ": size ", size, " bytes, manifest says ", expected_bytes));
  }
  return file;
}

RandomAccessFile::RandomAccessFile(RandomAccessFile&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), size_(other.size_), name_(std::move(other.name_)) {}

RandomAccessFile& RandomAccessFile::operator=(RandomAccessFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    size_ = other.size_;
    name_ = std::move(other.name_);
  }
  return *this;
}

RandomAccessFile::~RandomAccessFile() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status RandomAccessFile::ReadAt(uint64_t offset, absl::Span<uint8_t> out) const {
  if (offset > size_ || out.size() > size_ - offset) {
    return absl::InvalidArgumentError(absl::StrCat(name_, ": bytes [", offset, ", ",
                                                   offset + out.size(), ") are past its size of ",
                                                   size_));
  }
  const absl::Status read = PreadFully(fd_, offset, out, name_);
  if (absl::IsOutOfRange(read)) {
    return absl::InvalidArgumentError(absl::StrCat(
        name_, " shrank while being read (", size_, " bytes when opened): is it still being "
        "written? Publish a version by renaming a finished directory into place"));
  }
  return read;
}

absl::Status PreadFully(int fd, uint64_t offset, absl::Span<uint8_t> out, absl::string_view name) {
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::pread(fd, out.data() + done, out.size() - done,
                              static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, absl::StrCat("cannot read ", name));
    }
    if (n == 0) {
      return absl::OutOfRangeError(absl::StrCat(name, " ends at byte ", offset + done,
                                                ", before byte ", offset + out.size()));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

std::string Sha256Hex(absl::Span<const uint8_t> data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha256(), nullptr);
  return Hex(digest, length);
}

struct Sha256::Context {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
};

Sha256::Sha256() : context_(new Context) { EVP_DigestInit_ex(context_->ctx, EVP_sha256(), nullptr); }

Sha256::~Sha256() {
  if (context_ != nullptr) {
    EVP_MD_CTX_free(context_->ctx);
    delete context_;
  }
}

Sha256::Sha256(Sha256&& other) noexcept : context_(std::exchange(other.context_, nullptr)) {}

void Sha256::Update(absl::Span<const uint8_t> data) {
  EVP_DigestUpdate(context_->ctx, data.data(), data.size());
}

std::string Sha256::HexDigest() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(context_->ctx, digest, &length);
  return Hex(digest, length);
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
