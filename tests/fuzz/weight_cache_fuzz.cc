// Fuzzes the weight cache file reader (model_store/weight_cache.h): the
// bytes of a cache file, parsed by ParseWeightCacheIndex, then written to a
// file and opened as a server opens it (WeightCacheFile::Open: map, parse,
// key, lease, every part's SHA-256), and if it opens, every array asked for
// by its own name, parts and part_floats, each part touched, its resident
// bytes counted and its floats read. Nothing may crash, leak, read outside
// the file (a view past its end would fault here) or hang.
//
// Input: one mode byte, then the file. Mode bit 0 clear: the rest is the
// file as is (fuzzing the footer, the index and sums behind their SHA-256).
// Set: the rest is three parts separated by "\n--8<--\n", the arrays' data,
// the index JSON and the sums, and the file is those three plus a correct
// footer (their lengths and SHA-256), so the fuzzer gets past the footer
// into the index's JSON, the arrays' bounds and the per-part sums; with
// bit 2 also set, the sums are rewritten to match the parts the index
// names, so a changed index gets past the sums too and its arrays are
// handed out and read. Mode bit 1 set: the file is also opened with
// WeightVerify::kTouch, so each part's sum is checked on its first Touch
// instead of at load.
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "model_store/file_util.h"
#include "model_store/json_util.h"
#include "model_store/weight_cache.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using sparse::PackedWeights;
using sparse::WeightCacheFile;
using sparse::WeightCacheIndex;
using sparse::WeightVerify;

constexpr absl::string_view kSep = "\n--8<--\n";

// The file mode bit 0 asks for: data, index and sums, then their footer
// (weight_cache.h: u64 index bytes, u64 sums bytes, SHA-256 hex, magic).
std::string Reseal(absl::string_view data, absl::string_view index, absl::string_view sums) {
  const std::string meta = absl::StrCat(index, sums);
  const uint64_t index_bytes = index.size(), sums_bytes = sums.size();
  std::string file = absl::StrCat(data, meta);
  file.append(reinterpret_cast<const char*>(&index_bytes), 8);
  file.append(reinterpret_cast<const char*>(&sums_bytes), 8);
  file += sparse::Sha256Hex(
      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(meta.data()), meta.size()));
  file += "SSWCACH1";
  return file;
}

// The parts the arrays of an index JSON add up to; 0 when it is not one.
uint64_t PartsNamed(absl::string_view index) {
  absl::StatusOr<nlohmann::json> json = sparse::ParseJsonBounded(index, 8);
  if (!json.ok() || !json->is_object() || !json->contains("arrays") ||
      !(*json)["arrays"].is_array()) {
    return 0;
  }
  uint64_t count = 0;
  for (const nlohmann::json& a : (*json)["arrays"]) {
    if (!a.is_object() || !a.contains("parts") || !a["parts"].is_number_unsigned()) return 0;
    const uint64_t parts = a["parts"].get<uint64_t>();
    if (parts > (uint64_t{1} << 20) || count > (uint64_t{1} << 20)) return 0;
    count += parts;
  }
  return count;
}

absl::StatusOr<WeightCacheIndex> Parse(const std::string& file) {
  return sparse::ParseWeightCacheIndex(
      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(file.data()), file.size()));
}

void WriteFile(const std::string& path, const std::string& bytes) {
  ::unlink(path.c_str());
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
  if (fd < 0) __builtin_trap();
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n <= 0) __builtin_trap();
    done += static_cast<size_t>(n);
  }
  ::close(fd);
}

// Every array of `index` from the opened file as a model would ask for it,
// each part touched and read; then a few questions it must refuse.
void UseAll(WeightCacheFile& file, const WeightCacheIndex& index) {
  auto no_fill = [](int64_t, float*) { return absl::InternalError("a prebuilt array was filled"); };
  volatile float sink = 0;
  for (const sparse::WeightCacheArray& a : index.arrays) {
    absl::StatusOr<PackedWeights> w = file.Array(a.name, a.parts, a.part_floats, no_fill);
    if (!w.ok()) __builtin_trap();  // its own name and shape are in the index
    if (!w->mapped() || w->size() != static_cast<size_t>(a.parts * a.part_floats)) __builtin_trap();
    const int64_t part_bytes = 4 * a.part_floats;
    for (int64_t p = 0; p < a.parts; ++p) {
      const absl::Status touched = w->Touch(p);
      if (!touched.ok() && !absl::IsDataLoss(touched)) __builtin_trap();
      const int64_t resident = w->ResidentBytes(p, part_bytes);
      if (resident < 0 || resident > part_bytes) __builtin_trap();
      // What a kernel reads of this part: it must lie inside the mapping.
      const float* part = std::as_const(*w).data() + p * a.part_floats;
      float sum = 0;
      for (int64_t i = 0; i < a.part_floats; ++i) sum += part[i];
      sink = sum;
    }
    // Another shape under its name is refused, not mapped.
    if (file.Array(a.name, a.parts + 1, a.part_floats, no_fill).ok()) __builtin_trap();
  }
  if (!file.CheckAllUsed().ok()) __builtin_trap();
  if (file.Array("no such array \x01", 1, 1, no_fill).ok()) __builtin_trap();
  (void)sink;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const std::string path =
      sparse::fuzz::ScratchDir("weight_cache") + "/0123456789abcdef.weights";
  const absl::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::string bytes(rest);
  if ((data[0] & 1) != 0) {
    const std::vector<absl::string_view> parts = absl::StrSplit(rest, kSep);
    const absl::string_view data_part = parts.size() > 0 ? parts[0] : "";
    const absl::string_view index_part = parts.size() > 1 ? parts[1] : "";
    bytes = Reseal(data_part, index_part, parts.size() > 2 ? parts[2] : "");
    // Mode bit 2: the part sums rewritten as the SHA-256 of the parts the
    // index names, so a changed index (offsets, parts, part_floats) opens
    // and its views are handed out and read: first as many placeholder
    // sums as its arrays have parts, then, once it parses, the real ones.
    if ((data[0] & 4) != 0) {
      const uint64_t count = PartsNamed(index_part);
      if (count > 0 && count <= bytes.size()) {
        bytes = Reseal(data_part, index_part, std::string(64 * count, '0'));
        absl::StatusOr<WeightCacheIndex> named = Parse(bytes);
        if (named.ok()) {
          std::string sums;
          for (const sparse::WeightCacheArray& a : named->arrays) {
            for (int64_t p = 0; p < a.parts; ++p) {
              sums += sparse::Sha256Hex(absl::Span<const uint8_t>(
                  reinterpret_cast<const uint8_t*>(bytes.data()) + a.offset + p * 4 * a.part_floats,
                  static_cast<size_t>(4 * a.part_floats)));
            }
          }
          bytes = Reseal(data_part, index_part, sums);
        }
      }
    }
  }
  absl::StatusOr<WeightCacheIndex> index = Parse(bytes);
  if (!index.ok()) {
    if (!absl::IsInvalidArgument(index.status())) __builtin_trap();
    return 0;
  }
  // What the parser promises: each array inside the data, in order, apart.
  uint64_t end = 0, sums = 0;
  for (const sparse::WeightCacheArray& a : index->arrays) {
    uint64_t bytes_of = 0;
    if (a.parts <= 0 || a.part_floats <= 0 || a.offset < end || a.first_sum != sums ||
        __builtin_mul_overflow(static_cast<uint64_t>(a.parts),
                               4 * static_cast<uint64_t>(a.part_floats), &bytes_of) ||
        __builtin_add_overflow(a.offset, bytes_of, &end) || end > index->data_bytes) {
      __builtin_trap();
    }
    sums += static_cast<uint64_t>(a.parts);
  }
  if (sums != index->sums.size() || index->data_bytes > bytes.size()) __builtin_trap();
  WriteFile(path, bytes);
  std::vector<WeightVerify> modes = {WeightVerify::kLoad};
  if ((data[0] & 2) != 0) modes.push_back(WeightVerify::kTouch);
  for (WeightVerify verify : modes) {
    absl::StatusOr<std::shared_ptr<WeightCacheFile>> file =
        WeightCacheFile::Open(path, index->key, verify);
    if (!file.ok()) {
      // A part whose bytes do not match its sum fails the load; nothing else
      // may, since the index parsed.
      if (!absl::IsDataLoss(file.status())) __builtin_trap();
      continue;
    }
    if ((*file)->file_bytes() != bytes.size()) __builtin_trap();
    UseAll(**file, *index);
    // A stale key is refused.
    if (WeightCacheFile::Open(path, index->key + "x", verify).ok()) __builtin_trap();
  }
  return 0;
}
