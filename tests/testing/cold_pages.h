// A file mapping whose pages are not in the page cache: reading them takes
// major page faults (getrusage's ru_majflt), as a memory-mapped weight slice
// that has not been touched lately does. For the tests of the fault counting
// (common/page_faults.h) and of the cost that reports it.
//
// The file is written, synced and dropped from the page cache with
// posix_fadvise(DONTNEED); the mapping is MADV_RANDOM so the kernel reads one
// page per fault (no read-ahead) and Touch() takes one major fault per page.
// Dropping works on a disk file system, not on tmpfs (its pages are the
// cache): Create checks with mincore and fails, saying so, when pages stayed.
#ifndef SPARSE_TESTS_TESTING_COLD_PAGES_H_
#define SPARSE_TESTS_TESTING_COLD_PAGES_H_

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace sparse::testing {

class ColdPages {
 public:
  // `pages` pages of a new file `path` (removed when the object goes).
  static absl::StatusOr<std::unique_ptr<ColdPages>> Create(const std::filesystem::path& path,
                                                           int64_t pages) {
    const int64_t page = sysconf(_SC_PAGESIZE);
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return absl::InternalError(absl::StrCat("cannot create ", path.string()));
    std::unique_ptr<ColdPages> cold(new ColdPages(path, fd, pages, page));
    std::vector<char> bytes(static_cast<size_t>(pages * page), 1);
    if (::write(fd, bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size()) ||
        ::fsync(fd) != 0) {
      return absl::InternalError(absl::StrCat("cannot write ", path.string()));
    }
    void* map = ::mmap(nullptr, bytes.size(), PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) return absl::InternalError("mmap failed");
    cold->map_ = static_cast<const char*>(map);
    ::madvise(map, bytes.size(), MADV_RANDOM);
    if (absl::Status s = cold->Drop(); !s.ok()) return s;
    return cold;
  }

  ~ColdPages() {
    if (map_ != nullptr) ::munmap(const_cast<char*>(map_), static_cast<size_t>(pages_ * page_));
    ::close(fd_);
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
  ColdPages(const ColdPages&) = delete;
  ColdPages& operator=(const ColdPages&) = delete;

  // Takes the pages out of this process's page tables and out of the page
  // cache again; an error when any page is still cached afterwards.
  absl::Status Drop() const {
    const size_t bytes = static_cast<size_t>(pages_ * page_);
    ::madvise(const_cast<char*>(map_), bytes, MADV_DONTNEED);
    ::posix_fadvise(fd_, 0, 0, POSIX_FADV_DONTNEED);
    const int64_t cached = Cached();
    if (cached != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          cached, " of ", pages_, " pages of ", path_.string(),
          " stayed in the page cache after POSIX_FADV_DONTNEED (tmpfs?)"));
    }
    return absl::OkStatus();
  }

  // Pages of the file in the page cache now (mincore).
  int64_t Cached() const {
    std::vector<unsigned char> in(static_cast<size_t>(pages_));
    if (::mincore(const_cast<char*>(map_), static_cast<size_t>(pages_ * page_), in.data()) != 0) {
      return pages_;
    }
    int64_t n = 0;
    for (unsigned char c : in) n += c & 1;
    return n;
  }

  // Reads one byte of every page: one major fault per page that is not
  // cached. Returns their sum (pages, the file holds ones).
  int64_t Touch() const {
    int64_t sum = 0;
    for (int64_t p = 0; p < pages_; ++p) sum += *static_cast<const volatile char*>(map_ + p * page_);
    return sum;
  }

  int64_t pages() const { return pages_; }

 private:
  ColdPages(std::filesystem::path path, int fd, int64_t pages, int64_t page)
      : path_(std::move(path)), fd_(fd), pages_(pages), page_(page) {}

  const std::filesystem::path path_;
  const int fd_;
  const int64_t pages_;
  const int64_t page_;
  const char* map_ = nullptr;
};

// ColdPages in the first of `dirs` where the page cache can be dropped.
inline absl::StatusOr<std::unique_ptr<ColdPages>> ColdPagesIn(
    const std::vector<std::filesystem::path>& dirs, const std::string& name, int64_t pages) {
  std::string why;
  for (const std::filesystem::path& dir : dirs) {
    absl::StatusOr<std::unique_ptr<ColdPages>> cold = ColdPages::Create(dir / name, pages);
    if (cold.ok()) return cold;
    absl::StrAppend(&why, why.empty() ? "" : "; ", cold.status().message());
  }
  return absl::FailedPreconditionError(why);
}

}  // namespace sparse::testing

#endif  // SPARSE_TESTS_TESTING_COLD_PAGES_H_
