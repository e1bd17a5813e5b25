// What the fuzz targets share.
#ifndef SPARSE_TESTS_FUZZ_FUZZ_UTIL_H_
#define SPARSE_TESTS_FUZZ_FUZZ_UTIL_H_

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "model_store/checkpoint.h"

namespace sparse::fuzz {

// Directories ScratchDir made, removed at exit.
inline std::vector<std::string>* DirsToRemove() {
  static auto* dirs = [] {
    auto* d = new std::vector<std::string>;
    std::atexit([] {
      std::error_code ec;
      for (const std::string& path : *DirsToRemove()) std::filesystem::remove_all(path, ec);
    });
    return d;
  }();
  return dirs;
}

// A directory of this process's own under /dev/shm (memory, so writing
// files per input stays fast), removed at exit.
inline std::string ScratchDir(const std::string& name) {
  const std::string dir = "/dev/shm/sparse-fuzz-" + name + "-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  DirsToRemove()->push_back(dir);
  return dir;
}

// One prediction of one row on each path of a model that loaded: a
// checkpoint that validates must also run (an error, such as an output
// that overflows, is an answer; a crash is not).
inline void PredictOnce(const LoadedModel& loaded) {
  for (const Model* model : {static_cast<const Model*>(loaded.sparse.get()),
                             static_cast<const Model*>(loaded.dense.get())}) {
    if (model == nullptr) continue;
    std::vector<float> x(model->info().input_dim, 0.5f), y(model->info().output_dim);
    PredictStats stats;
    (void)model->Predict(x, 1, absl::MakeSpan(y), &stats, nullptr);
  }
}

}  // namespace sparse::fuzz

#endif  // SPARSE_TESTS_FUZZ_FUZZ_UTIL_H_
