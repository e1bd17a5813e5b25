#include "model_store/weight_cache.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <set>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"
#include "model_store/file_util.h"
#include "model_store/json_util.h"
#include "nlohmann/json.hpp"
#include "oneapi/dnnl/dnnl.hpp"

namespace sparse {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr char kMagic[8] = {'S', 'S', 'W', 'C', 'A', 'C', 'H', '1'};
constexpr uint64_t kFooterBytes = 8 + 8 + 64 + 8;
constexpr uint64_t kAlign = 4096;
constexpr uint64_t kSumChars = 64;
// An index lists a few arrays per model of a version; this bounds what
// parsing a damaged one costs.
constexpr uint64_t kMaxIndexBytes = 1 << 20;

absl::Span<const uint8_t> AsBytes(const void* p, size_t n) {
  return {static_cast<const uint8_t*>(p), n};
}

std::string ErrnoText(absl::string_view what, const std::string& path) {
  return absl::StrCat(what, " ", path, ": ", std::strerror(errno));
}

uint64_t RoundUp(uint64_t v, uint64_t to) { return (v + to - 1) / to * to; }

// A cache file's name in messages (never the directory path, as
// checkpoint errors): <model>/<version>/<file>, under --weight_cache_dir.
std::string CacheName(const std::string& path) {
  const fs::path p(path);
  const fs::path version = p.parent_path();
  return (version.parent_path().filename() / version.filename() / p.filename()).string();
}

}  // namespace

absl::string_view WeightVerifyName(WeightVerify verify) {
  return verify == WeightVerify::kLoad ? "load" : "touch";
}

absl::StatusOr<WeightVerify> ParseWeightVerify(absl::string_view name) {
  if (name == "load") return WeightVerify::kLoad;
  if (name == "touch") return WeightVerify::kTouch;
  return absl::InvalidArgumentError(
      absl::StrCat("weight verification must be 'load' or 'touch', got '", name, "'"));
}

std::string WeightCacheKey(const std::string& model_sha256, const std::string& dense_sha256,
                           Precision precision, bool cost_only_dense, const std::string& shard) {
  const dnnl_version_t* v = dnnl_version();
  Json key = {
      {"layout", kWeightCacheLayoutVersion},
      {"onednn", absl::StrCat(v->major, ".", v->minor, ".", v->patch, " ", v->hash)},
      {"isa", static_cast<int>(dnnl::get_effective_cpu_isa())},
      {"precision", std::string(PrecisionName(precision))},
      {"model_sha256", model_sha256},
      {"dense_sha256", dense_sha256},
      {"cost_only_dense", cost_only_dense},
  };
  // Only a shard's key has the field: a whole model's key, and so the name
  // and key of its existing file, is unchanged.
  if (!shard.empty()) key["shard"] = shard;
  return key.dump();
}

std::string WeightCachePath(const std::string& dir, const std::string& key) {
  return absl::StrCat(dir, "/", Sha256Hex(AsBytes(key.data(), key.size())).substr(0, 16),
                      ".weights");
}

absl::StatusOr<WeightCacheIndex> ParseWeightCacheIndex(absl::Span<const uint8_t> file) {
  auto bad = [](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("weight cache file: ", what));
  };
  if (file.size() < kFooterBytes) return bad("shorter than its footer");
  const uint8_t* footer = file.data() + file.size() - kFooterBytes;
  if (std::memcmp(footer + kFooterBytes - 8, kMagic, 8) != 0) return bad("no SSWCACH1 footer");
  uint64_t index_bytes = 0, sums_bytes = 0;
  std::memcpy(&index_bytes, footer, 8);
  std::memcpy(&sums_bytes, footer + 8, 8);
  const uint64_t room = file.size() - kFooterBytes;
  if (index_bytes > kMaxIndexBytes || index_bytes > room || sums_bytes > room - index_bytes ||
      sums_bytes % kSumChars != 0) {
    return bad("index or sums larger than the file");
  }
  WeightCacheIndex index;
  index.data_bytes = room - index_bytes - sums_bytes;
  const absl::Span<const uint8_t> meta = file.subspan(index.data_bytes, index_bytes + sums_bytes);
  if (Sha256Hex(meta) !=
      std::string(reinterpret_cast<const char*>(footer + 16), kSumChars)) {
    return bad("index and sums do not match their SHA-256");
  }
  absl::StatusOr<Json> parsed = ParseJsonBounded(
      absl::string_view(reinterpret_cast<const char*>(meta.data()), index_bytes));
  if (!parsed.ok() || !parsed->is_object() || !parsed->contains("key") ||
      !(*parsed)["key"].is_string() || !parsed->contains("arrays") ||
      !(*parsed)["arrays"].is_array()) {
    return bad("index is not {\"key\": string, \"arrays\": [...]}");
  }
  index.key = (*parsed)["key"].get<std::string>();
  uint64_t sums = 0, end = 0;
  std::set<std::string> names;
  for (const Json& a : (*parsed)["arrays"]) {
    if (!a.is_object() || !a.contains("name") || !a["name"].is_string() ||
        !a.contains("offset") || !a["offset"].is_number_unsigned() || !a.contains("parts") ||
        !a["parts"].is_number_unsigned() || !a.contains("part_floats") ||
        !a["part_floats"].is_number_unsigned()) {
      return bad("an array needs 'name', 'offset', 'parts' and 'part_floats'");
    }
    WeightCacheArray array;
    array.name = a["name"].get<std::string>();
    array.offset = a["offset"].get<uint64_t>();
    const uint64_t parts = a["parts"].get<uint64_t>();
    const uint64_t floats = a["part_floats"].get<uint64_t>();
    if (!names.insert(array.name).second) return bad(absl::StrCat("array '", array.name, "' twice"));
    // Each array in order, aligned, inside the data, never overlapping
    // (parts × floats is not formed before it is known to fit: it could
    // wrap past 2^64 in a file of terabytes).
    if (parts == 0 || floats == 0 || parts > index.data_bytes || floats > index.data_bytes ||
        array.offset % kAlign != 0 || array.offset < end || array.offset > index.data_bytes ||
        parts > (index.data_bytes - array.offset) / 4 / floats) {
      return bad(absl::StrCat("array '", array.name, "' lies outside the data or overlaps another"));
    }
    array.parts = static_cast<int64_t>(parts);
    array.part_floats = static_cast<int64_t>(floats);
    array.first_sum = sums;
    sums += parts;
    end = array.offset + parts * floats * 4;
    index.arrays.push_back(std::move(array));
  }
  if (sums * kSumChars != sums_bytes) return bad("the sums do not count one per part");
  const char* s = reinterpret_cast<const char*>(meta.data() + index_bytes);
  index.sums.reserve(sums);
  for (uint64_t i = 0; i < sums; ++i) index.sums.emplace_back(s + i * kSumChars, kSumChars);
  return index;
}

// ---- Writing -----------------------------------------------------------------

WeightCacheWriter::WeightCacheWriter(std::string path, std::string tmp, int fd, std::string key)
    : path_(std::move(path)), tmp_(std::move(tmp)), fd_(fd), key_(std::move(key)) {}

WeightCacheWriter::~WeightCacheWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!published_) ::unlink(tmp_.c_str());
}

absl::StatusOr<std::unique_ptr<WeightCacheWriter>> WeightCacheWriter::Create(
    const std::string& path, std::string key) {
  std::error_code ec;
  const fs::path dir = fs::path(path).parent_path();
  fs::create_directories(dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot create the weight cache directory ", CacheName((dir / "f").string()),
        " under --weight_cache_dir: ", ec.message()));
  }
  static std::atomic<int> counter{0};
  const std::string tmp = absl::StrCat(dir.string(), "/.tmp-", fs::path(path).filename().string(),
                                       "-", ::getpid(), "-", counter++);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return absl::FailedPreconditionError(ErrnoText("cannot create", CacheName(tmp)));
  return std::unique_ptr<WeightCacheWriter>(new WeightCacheWriter(path, tmp, fd, std::move(key)));
}

absl::Status WeightCacheWriter::WriteAt(uint64_t at, const void* data, size_t bytes) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::pwrite(fd_, p, bytes, static_cast<off_t>(at));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::ResourceExhaustedError(ErrnoText("cannot write the weight cache file", CacheName(tmp_)));
    }
    p += n;
    at += static_cast<uint64_t>(n);
    bytes -= static_cast<size_t>(n);
  }
  offset_ = std::max(offset_, at);
  return absl::OkStatus();
}

WeightCacheArray* WeightCacheWriter::Find(absl::string_view name) {
  for (WeightCacheArray& a : arrays_) {
    if (a.name == name) return &a;
  }
  return nullptr;
}

bool WeightCacheWriter::Has(absl::string_view name) const {
  return std::any_of(arrays_.begin(), arrays_.end(),
                     [name](const WeightCacheArray& a) { return a.name == name; });
}

absl::Status WeightCacheWriter::Reserve(absl::string_view name, int64_t parts,
                                        int64_t part_floats) {
  if (Has(name)) return absl::InternalError(absl::StrCat("array '", name, "' made twice"));
  // Each array starts on a page, so a part's pages are its own as far as
  // the array's layout allows. The gap is a hole (zeros) in the file.
  const uint64_t start = RoundUp(offset_, kAlign);
  arrays_.push_back({.name = std::string(name), .offset = start, .parts = parts,
                     .part_floats = part_floats, .first_sum = sums_.size()});
  sums_.resize(sums_.size() + parts);
  offset_ = start + static_cast<uint64_t>(parts * part_floats) * 4;
  return absl::OkStatus();
}

absl::Status WeightCacheWriter::WritePart(absl::string_view name, int64_t part,
                                          const float* data) {
  WeightCacheArray* a = Find(name);
  if (a == nullptr || part < 0 || part >= a->parts) {
    return absl::InternalError(absl::StrCat("no part ", part, " of array '", name, "'"));
  }
  const uint64_t bytes = 4 * a->part_floats;
  sums_[a->first_sum + part] = Sha256Hex(AsBytes(data, bytes));
  return WriteAt(a->offset + part * bytes, data, bytes);
}

absl::StatusOr<PackedWeights> WeightCacheWriter::Array(absl::string_view name, int64_t parts,
                                                       int64_t part_floats, PartFill fill) {
  RETURN_IF_ERROR(Reserve(name, parts, part_floats));
  const WeightCacheArray array = arrays_.back();
  // Parts are filled into a buffer of up to 4 MiB and written together.
  const int64_t per_write = std::max<int64_t>(1, (int64_t{4} << 20) / (4 * part_floats));
  std::vector<float> buffer(static_cast<size_t>(std::min(parts, per_write) * part_floats));
  for (int64_t p0 = 0; p0 < parts; p0 += per_write) {
    const int64_t n = std::min(per_write, parts - p0);
    std::fill(buffer.begin(), buffer.begin() + n * part_floats, 0.0f);
    for (int64_t i = 0; i < n; ++i) {
      float* part = buffer.data() + i * part_floats;
      RETURN_IF_ERROR(fill(p0 + i, part));
      sums_[array.first_sum + p0 + i] = Sha256Hex(AsBytes(part, 4 * part_floats));
    }
    RETURN_IF_ERROR(WriteAt(array.offset + 4 * p0 * part_floats, buffer.data(),
                            4 * n * part_floats));
  }
  return PackedWeights();
}

absl::Status WeightCacheWriter::Publish() {
  for (const WeightCacheArray& a : arrays_) {
    for (int64_t p = 0; p < a.parts; ++p) {
      if (sums_[a.first_sum + p].empty()) {
        return absl::InternalError(absl::StrCat("part ", p, " of array '", a.name,
                                                "' was never written"));
      }
    }
  }
  Json arrays = Json::array();
  for (const WeightCacheArray& a : arrays_) {
    arrays.push_back({{"name", a.name}, {"offset", a.offset}, {"parts", a.parts},
                      {"part_floats", a.part_floats}});
  }
  const std::string index = Json{{"key", key_}, {"arrays", arrays}}.dump();
  std::string sums;
  sums.reserve(sums_.size() * kSumChars);
  for (const std::string& s : sums_) sums += s;
  const std::string meta = index + sums;
  std::string footer(kFooterBytes, '\0');
  const uint64_t index_bytes = index.size(), sums_bytes = sums.size();
  std::memcpy(footer.data(), &index_bytes, 8);
  std::memcpy(footer.data() + 8, &sums_bytes, 8);
  const std::string meta_sum = Sha256Hex(AsBytes(meta.data(), meta.size()));
  std::memcpy(footer.data() + 16, meta_sum.data(), kSumChars);
  std::memcpy(footer.data() + 16 + kSumChars, kMagic, 8);
  const uint64_t end = offset_;
  RETURN_IF_ERROR(WriteAt(end, meta.data(), meta.size()));
  RETURN_IF_ERROR(WriteAt(end + meta.size(), footer.data(), footer.size()));
  // Read-only from now on: the server never writes a published file.
  if (::fsync(fd_) != 0 || ::fchmod(fd_, 0444) != 0) {
    return absl::ResourceExhaustedError(ErrnoText("cannot sync", CacheName(tmp_)));
  }
  ::close(fd_);
  fd_ = -1;
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    return absl::FailedPreconditionError(ErrnoText("cannot publish", CacheName(path_)));
  }
  published_ = true;
  return SyncDirectory(fs::path(path_).parent_path().string());
}

// ---- Leases ------------------------------------------------------------------

// Every mapped file's read lease reports a break with this signal; its
// handler hands the file descriptor to one watcher thread through a pipe.
class LeaseWatcher {
 public:
  static LeaseWatcher& Get() {
    static LeaseWatcher* const watcher = new LeaseWatcher();
    return *watcher;
  }
  // Takes a read lease on `file`'s descriptor; false (and no lease) where
  // the file system or the file's owner does not allow one.
  bool Lease(const std::shared_ptr<WeightCacheFile>& file, int fd) {
    if (!ready_) return false;
    absl::MutexLock lock(&mu_);
    if (::fcntl(fd, F_SETSIG, Signal()) != 0 || ::fcntl(fd, F_SETLEASE, F_RDLCK) != 0) return false;
    files_[fd] = file;
    return true;
  }
  void Forget(int fd) {
    absl::MutexLock lock(&mu_);
    files_.erase(fd);
  }

 private:
  static int Signal() { return SIGRTMIN + 6; }
  static int& PipeWrite() {
    static int fd = -1;
    return fd;
  }
  static void Handler(int, siginfo_t* info, void*) {
    const int saved = errno;
    const int fd = info->si_fd;
    [[maybe_unused]] const ssize_t n = ::write(PipeWrite(), &fd, sizeof(fd));
    errno = saved;
  }

  LeaseWatcher() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return;
    PipeWrite() = fds[1];
    struct sigaction action = {};
    action.sa_sigaction = &LeaseWatcher::Handler;
    action.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&action.sa_mask);
    if (::sigaction(Signal(), &action, nullptr) != 0) return;
    std::thread([this, read_fd = fds[0]] { Watch(read_fd); }).detach();
    ready_ = true;
  }

  void Watch(int read_fd) {
    for (;;) {
      int fd = -1;
      const ssize_t n = ::read(read_fd, &fd, sizeof(fd));
      if (n < 0 && errno == EINTR) continue;
      if (n != sizeof(fd)) return;
      std::shared_ptr<WeightCacheFile> file;
      {
        absl::MutexLock lock(&mu_);
        auto it = files_.find(fd);
        if (it != files_.end()) file = it->second.lock();
      }
      if (file == nullptr) continue;
      Retire(*file, fd);
    }
  }

  // Another process wants to write or truncate the file: no request reads
  // the mapping from now on (WeightCacheFile::Guard::Touch refuses), the
  // path is freed for a new file, and after a grace period for reads
  // already past their check the lease is released so that process goes on.
  static void Retire(WeightCacheFile& file, int fd) {
    if (file.retired_.exchange(true)) return;
    struct stat st;
    if (::stat(file.path().c_str(), &st) == 0 && st.st_dev == file.dev_ &&
        st.st_ino == file.ino_) {
      ::unlink(file.path().c_str());
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));
    ::fcntl(fd, F_SETLEASE, F_UNLCK);
  }

  bool ready_ = false;
  absl::Mutex mu_;
  absl::flat_hash_map<int, std::weak_ptr<WeightCacheFile>> files_ ABSL_GUARDED_BY(mu_);
};

// ---- Reading -----------------------------------------------------------------

class WeightCacheFile::Guard : public MappedArrayGuard {
 public:
  Guard(std::shared_ptr<const WeightCacheFile> file, const WeightCacheArray* array)
      : file_(std::move(file)), array_(array) {}

  absl::Status Touch(int64_t part) const override {
    if (file_->retired()) {
      return absl::UnavailableError(absl::StrCat(
          "the weight cache file of this version was opened for writing by another process; the "
          "version is being loaded again from a new file (", file_->name(), ")"));
    }
    const uint8_t s = file_->state_[array_->first_sum + part].load(std::memory_order_acquire);
    if (s == 0) {
      // First touch: ask for the whole part at once, so that the hash
      // below reads it in one readahead instead of piece by piece (a cold
      // 2.25 MiB expert slice: 7.1 -> 5.9 ms, docs/benchmarks.md).
      const uint64_t bytes = 4 * static_cast<uint64_t>(array_->part_floats);
      file_->WillNeed(array_->offset + part * bytes, bytes);
    }
    if (s == 1 || (s == 0 && file_->CheckPart(*array_, part))) return absl::OkStatus();
    return absl::DataLossError(absl::StrCat(
        "part ", part, " of array '", array_->name, "' in the weight cache file ", file_->name(),
        " does not match its SHA-256: the requests that need it fail until the version is "
        "loaded again (the file is rebuilt then)"));
  }

  int64_t ResidentBytes(int64_t part) const override {
    static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    const uint64_t begin = array_->offset + part * PartBytes();
    const uint64_t end = begin + PartBytes();
    const uint64_t first = begin / page * page;
    const uint64_t pages = (end - first + page - 1) / page;
    std::vector<unsigned char> in(pages);
    if (::mincore(const_cast<uint8_t*>(file_->base_) + first, end - first, in.data()) != 0) {
      return 0;
    }
    int64_t bytes = 0;
    for (uint64_t i = 0; i < pages; ++i) {
      if (!(in[i] & 1)) continue;
      const uint64_t lo = std::max(begin, first + i * page);
      const uint64_t hi = std::min(end, first + (i + 1) * page);
      bytes += static_cast<int64_t>(hi - lo);
    }
    return bytes;
  }

  int64_t PartBytes() const override { return 4 * array_->part_floats; }

 private:
  std::shared_ptr<const WeightCacheFile> file_;
  const WeightCacheArray* array_;
};

std::string WeightCacheFile::name() const { return CacheName(path_); }

WeightCacheFile::WeightCacheFile(std::string path, int fd, const uint8_t* base, uint64_t size,
                                 WeightCacheIndex index, WeightVerify verify)
    : path_(std::move(path)), fd_(fd), base_(base), size_(size), index_(std::move(index)),
      verify_(verify), state_(new std::atomic<uint8_t>[index_.sums.size()]()),
      used_(index_.arrays.size(), false) {}

WeightCacheFile::~WeightCacheFile() {
  LeaseWatcher::Get().Forget(fd_);
  ::munmap(const_cast<uint8_t*>(base_), size_);
  ::close(fd_);
}

absl::StatusOr<std::shared_ptr<WeightCacheFile>> WeightCacheFile::Open(const std::string& path,
                                                                       const std::string& key,
                                                                       WeightVerify verify) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ENOENT) {
      return absl::NotFoundError(absl::StrCat("no weight cache file ", CacheName(path)));
    }
    return absl::FailedPreconditionError(ErrnoText("cannot open", CacheName(path)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size == 0) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat("weight cache file ", CacheName(path),
                                                   " is not a non-empty regular file"));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  void* base = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    ::close(fd);
    return absl::ResourceExhaustedError(ErrnoText("cannot map", CacheName(path)));
  }
  absl::StatusOr<WeightCacheIndex> index =
      ParseWeightCacheIndex(AsBytes(base, size));
  if (!index.ok() || index->key != key) {
    ::munmap(base, size);
    ::close(fd);
    if (!index.ok()) return index.status();
    return absl::FailedPreconditionError(
        absl::StrCat("weight cache file ", CacheName(path), " was built for another key"));
  }
  std::shared_ptr<WeightCacheFile> file(new WeightCacheFile(
      path, fd, static_cast<const uint8_t*>(base), size, *std::move(index), verify));
  file->dev_ = st.st_dev;
  file->ino_ = st.st_ino;
  // Taken before the sums are read, so what they check is what is served.
  file->leased_ = LeaseWatcher::Get().Lease(file, fd);
  if (verify == WeightVerify::kLoad) RETURN_IF_ERROR(file->VerifyAll());
  return file;
}

void WeightCacheFile::WillNeed(uint64_t offset, uint64_t bytes) const {
  // Only a hint: an error changes nothing but the speed.
  ::posix_fadvise(fd_, static_cast<off_t>(offset), static_cast<off_t>(bytes), POSIX_FADV_WILLNEED);
}

bool WeightCacheFile::CheckPart(const WeightCacheArray& a, int64_t part) const {
  // Read with pread into a buffer that stays in the core's cache, not
  // through the mapping: hashing memory that streams in from the page
  // cache through page faults ran at half the hash rate (perf, 539 MB:
  // 0.8 against 1.6 GB/s per core). A file cut short reads short and
  // fails its sum, where the mapping would raise SIGBUS.
  constexpr size_t kChunk = 256 << 10;
  thread_local std::vector<uint8_t> buffer(kChunk);
  const uint64_t bytes = 4 * a.part_floats;
  const uint64_t begin = a.offset + part * bytes;
  Sha256 sha;
  bool good = true;
  for (uint64_t at = 0; at < bytes && good; at += kChunk) {
    const absl::Span<uint8_t> chunk(buffer.data(), std::min<uint64_t>(kChunk, bytes - at));
    good = PreadFully(fd_, begin + at, chunk, path_).ok();
    if (good) sha.Update(chunk);
  }
  good = good && sha.HexDigest() == index_.sums[a.first_sum + part];
  state_[a.first_sum + part].store(good ? 1 : 2, std::memory_order_release);
  return good;
}

absl::Status WeightCacheFile::VerifyAll() {
  struct Part {
    const WeightCacheArray* array;
    int64_t part;
  };
  std::vector<Part> parts;
  uint64_t total = 0;
  for (const WeightCacheArray& a : index_.arrays) {
    for (int64_t p = 0; p < a.parts; ++p) parts.push_back({&a, p});
    total += static_cast<uint64_t>(a.parts * a.part_floats) * 4;
  }
  // Contiguous runs of parts, one per core, about equal in bytes (an
  // expert's slice of B is far larger than its slice of c).
  const uint64_t threads = std::max(1u, std::thread::hardware_concurrency());
  std::vector<size_t> starts = {0};
  uint64_t bytes = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (bytes >= total * starts.size() / threads && starts.size() < threads && i > starts.back()) {
      starts.push_back(i);
    }
    bytes += 4 * static_cast<uint64_t>(parts[i].array->part_floats);
  }
  starts.push_back(parts.size());
  std::atomic<int64_t> bad{-1};
  // Each core hashes its run while the kernel reads the next kReadAhead
  // bytes of it (WILLNEED starts the reads and returns): reading and
  // hashing overlap. (One WILLNEED over the whole file first would not:
  // the call blocks while it queues every read.)
  constexpr uint64_t kReadAhead = 32 << 20;
  auto check = [&](size_t begin, size_t end) {
    if (begin == end) return;
    const uint64_t run_end =
        parts[end - 1].array->offset + (parts[end - 1].part + 1) * 4 * parts[end - 1].array->part_floats;
    uint64_t ahead = parts[begin].array->offset + parts[begin].part * 4 * parts[begin].array->part_floats;
    for (size_t i = begin; i < end; ++i) {
      const WeightCacheArray& a = *parts[i].array;
      const uint64_t part_end = a.offset + (parts[i].part + 1) * 4 * a.part_floats;
      while (ahead < run_end && ahead < part_end + kReadAhead) {
        const uint64_t n = std::min(kReadAhead, run_end - ahead);
        WillNeed(ahead, n);
        ahead += n;
      }
      if (!CheckPart(a, parts[i].part)) bad.store(static_cast<int64_t>(i));
    }
  };
  std::vector<std::thread> workers;
  for (size_t t = 1; t + 1 < starts.size(); ++t) workers.emplace_back(check, starts[t], starts[t + 1]);
  check(starts[0], starts[1]);
  for (std::thread& w : workers) w.join();
  if (bad.load() >= 0) {
    const Part& p = parts[bad.load()];
    return absl::DataLossError(absl::StrCat("part ", p.part, " of array '", p.array->name,
                                            "' in the weight cache file ", name(),
                                            " does not match its SHA-256"));
  }
  return absl::OkStatus();
}

absl::StatusOr<PackedWeights> WeightCacheFile::Array(absl::string_view name, int64_t parts,
                                                     int64_t part_floats, PartFill /*fill*/) {
  for (size_t i = 0; i < index_.arrays.size(); ++i) {
    const WeightCacheArray& a = index_.arrays[i];
    if (a.name != name) continue;
    if (a.parts != parts || a.part_floats != part_floats) {
      return absl::FailedPreconditionError(absl::StrCat(
          "weight cache file ", this->name(), ": array '", name, "' holds ", a.parts, " parts of ",
          a.part_floats, " floats, the model needs ", parts, " of ", part_floats));
    }
    used_[i] = true;
    return PackedWeights(reinterpret_cast<const float*>(base_ + a.offset),
                         static_cast<size_t>(parts * part_floats),
                         std::make_shared<Guard>(shared_from_this(), &a));
  }
  return absl::FailedPreconditionError(
      absl::StrCat("weight cache file ", this->name(), " has no array '", name, "'"));
}

absl::Status WeightCacheFile::CheckAllUsed() const {
  for (size_t i = 0; i < used_.size(); ++i) {
    if (!used_[i]) {
      return absl::FailedPreconditionError(absl::StrCat(
          "weight cache file ", name(), " holds array '", index_.arrays[i].name,
          "' that the version's models do not use"));
    }
  }
  return absl::OkStatus();
}

}  // namespace sparse
