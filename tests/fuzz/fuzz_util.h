// What the fuzz targets share.
#ifndef SPARSE_TESTS_FUZZ_FUZZ_UTIL_H_
#define SPARSE_TESTS_FUZZ_FUZZ_UTIL_H_

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "model_store/checkpoint.h"
#include "tests/testing/random_models.h"

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

// The request fuzzers' repository under `root`, written once: an LSH table
// "lsh" (o = 2) and a DSM "dsm" (o = 1), d = 4, each with its dense twin,
// as version 1.
inline void WriteSmallModels(const std::string& root) {
  if (std::filesystem::exists(root + "/dsm/1")) return;
  Checkpoint lsh;
  lsh.sparse = testing::RandomLshTable({.d = 4, .o = 2, .s = 3, .m = 5}, 1);
  lsh.dense = testing::RandomDense(4, 16, 2, Activation::kRelu, 2);
  Checkpoint dsm;
  dsm.sparse = testing::RandomDsm({.d = 4, .o = 1, .experts = 4, .active_units = 8}, 3);
  dsm.dense = testing::RandomDense(4, 32, 1, Activation::kRelu, 4);
  if (!WriteCheckpoint(root + "/lsh", 1, lsh).ok() || !WriteCheckpoint(root + "/dsm", 1, dsm).ok()) {
    __builtin_trap();
  }
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
