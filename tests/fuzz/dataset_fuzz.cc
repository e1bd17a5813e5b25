// Fuzzes sparse-train's readers of a user's data files (trainer/dataset.h),
// the first thing a new user feeds the project: ReadCsv (comments, a
// header, a sniffed or given separator, the targets' columns), ReadNpy
// (two .npy files, inputs and targets) and ReadIdx (MNIST's IDX images and
// labels, gzip-compressed or not). The first byte picks the reader and its
// options (even: CSV; low bits 01: .npy; 11: IDX); the rest is the file
// (for .npy and IDX, two files: the next two bytes, little-endian, give the
// first one's length). A file is read or refused with a message, never
// a crash, and what is read holds rows x d inputs and rows x o targets, all
// finite.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>

#include "tests/fuzz/fuzz_util.h"
#include "trainer/dataset.h"

namespace {

void Write(const std::string& path, const uint8_t* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
}

void CheckRead(const absl::StatusOr<sparse::Dataset>& read) {
  if (!read.ok()) {
    if (read.status().message().empty()) std::abort();  // a refusal says why
    return;
  }
  const sparse::Dataset& d = *read;
  if (d.rows <= 0 || d.d <= 0 || d.o <= 0) std::abort();
  if (d.x.size() != static_cast<size_t>(d.rows * d.d)) std::abort();
  if (d.y.size() != static_cast<size_t>(d.rows * d.o)) std::abort();
  for (const float v : d.x) {
    if (!std::isfinite(v)) std::abort();
  }
  for (const float v : d.y) {
    if (!std::isfinite(v)) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = sparse::fuzz::ScratchDir("dataset");
  if (size < 2) return 0;
  const uint8_t mode = data[0];
  if ((mode & 1) == 0) {
    static constexpr char kSeparators[] = {0, ',', ';', '\t'};
    const sparse::CsvOptions options{.outputs = 1 + ((mode >> 1) & 3),
                                     .separator = kSeparators[(mode >> 3) & 3]};
    const std::string path = dir + "/data.csv";
    Write(path, data + 1, size - 1);
    CheckRead(sparse::ReadCsv(path, options));
  } else if (size >= 3) {
    const size_t body = size - 3;
    const size_t split = std::min<size_t>(body, data[1] | size_t{data[2]} << 8);
    const std::string x = dir + "/inputs.npy", y = dir + "/targets.npy";
    Write(x, data + 3, split);
    Write(y, data + 3 + split, body - split);
    if ((mode & 3) == 1) {
      CheckRead(sparse::ReadNpy(x, y));
    } else {
      CheckRead(sparse::ReadIdx(x, y, /*classes=*/(mode >> 2) & 15));
    }
  }
  return 0;
}
