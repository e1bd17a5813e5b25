// A fresh directory under the system's temporary directory, removed with
// everything in it when the object goes: the one way tests get scratch
// space (no two tests, or two runs of one test under ctest -j, share it).
#ifndef SPARSE_TESTS_TESTING_TEMP_DIR_H_
#define SPARSE_TESTS_TESTING_TEMP_DIR_H_

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>

namespace sparse::testing {

class TempDir {
 public:
  // `name` says whose it is (it shows in the path when a test fails).
  explicit TempDir(const std::string& name) {
    static std::atomic<int> count{0};
    path_ = std::filesystem::temp_directory_path() /
            (name + "_" + std::to_string(::getpid()) + "_" + std::to_string(count++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // A path inside it, e.g. dir / "model".
  std::filesystem::path operator/(const std::string& child) const { return path_ / child; }
  std::string string() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace sparse::testing

#endif  // SPARSE_TESTS_TESTING_TEMP_DIR_H_
