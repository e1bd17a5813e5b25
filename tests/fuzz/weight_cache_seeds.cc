// Writes weight_cache_fuzz's seeds into the directory its argument names:
// valid weight cache files, each the one LoadCheckpoint builds for a small
// DSM (d = 4; each router, with and without a dense twin, at FP32, BF16 and
// INT8), in the fuzzer's forms: mode byte 0 and the file as is (<name>);
// mode byte 3 and the file split into data, index and sums (<name>_split;
// the fuzzer writes the footer, and opens it both ways); the same with mode
// byte 7 (<name>_resum; the fuzzer also rewrites the part sums).
// Run by tests/fuzz/make_seeds.py. Seeds over 64 KiB (the fuzzers' input
// limit) are an error.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "absl/strings/str_cat.h"
#include "model_store/checkpoint.h"
#include "tests/testing/random_models.h"

namespace {

namespace fs = std::filesystem;

void Fail(const std::string& what) {
  std::fprintf(stderr, "weight_cache_seeds: %s\n", what.c_str());
  std::exit(1);
}

std::string Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void Write(const std::string& path, const std::string& bytes) {
  if (bytes.size() > 65536) Fail(absl::StrCat(path, " is ", bytes.size(), " bytes, over 64 KiB"));
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) Fail("usage: weight_cache_seeds <corpus dir>");
  const std::string out = argv[1];
  const fs::path tmp = fs::temp_directory_path() / absl::StrCat("weight_cache_seeds_", ::getpid());
  fs::create_directories(out);
  struct Kind {
    const char* name;
    sparse::RouterKind router;
    bool twin;
    sparse::Precision precision;
  };
  const Kind kinds[] = {
      {"dsm_lsh_twin_fp32", sparse::RouterKind::kLsh, true, sparse::Precision::kFp32},
      {"dsm_hash_fp32", sparse::RouterKind::kHash, false, sparse::Precision::kFp32},
      {"dsm_kmeans_twin_bf16", sparse::RouterKind::kKmeans, true, sparse::Precision::kBf16},
      {"dsm_topk_int8", sparse::RouterKind::kTopk, false, sparse::Precision::kInt8},
      {"dsm_lsh_int8", sparse::RouterKind::kLsh, false, sparse::Precision::kInt8},
  };
  int n = 0;
  for (const Kind& kind : kinds) {
    sparse::Checkpoint c;
    sparse::testing::DsmShape shape{.d = 4, .o = 1, .experts = 4, .active_units = 8,
                                    .router = kind.router};
    if (kind.router == sparse::RouterKind::kTopk) shape.topk_block_units = 8;
    c.sparse = sparse::testing::RandomDsm(shape, 11 + n);
    if (kind.twin) c.dense = sparse::testing::RandomDense(4, 16, 1, sparse::Activation::kRelu, 12 + n);
    const std::string repo = (tmp / "repo" / kind.name).string();
    if (!sparse::WriteCheckpoint(repo, 1, c).ok()) Fail(absl::StrCat("cannot write ", repo));
    sparse::LoadOptions options;
    options.precision = kind.precision;
    options.weight_cache_dir = (tmp / "cache" / kind.name).string();
    absl::StatusOr<sparse::LoadedModel> loaded = sparse::LoadCheckpoint(repo + "/1", options);
    if (!loaded.ok()) Fail(std::string(loaded.status().message()));
    if (loaded->weight_cache == nullptr) Fail(absl::StrCat(kind.name, " was not mapped"));
    const std::string file = Read(loaded->weight_cache->path());
    Write(absl::StrCat(out, "/", kind.name), absl::StrCat(std::string(1, '\0'), file));
    // The split form: data, index, sums (their lengths are in the footer).
    uint64_t index_bytes = 0, sums_bytes = 0;
    const size_t footer = file.size() - 88;
    std::memcpy(&index_bytes, file.data() + footer, 8);
    std::memcpy(&sums_bytes, file.data() + footer + 8, 8);
    const size_t data_bytes = footer - index_bytes - sums_bytes;
    const std::string data = file.substr(0, data_bytes);
    const std::string sep = "\n--8<--\n";
    if (data.find(sep) != std::string::npos) Fail(absl::StrCat(kind.name, ": data holds the separator"));
    const std::string split = absl::StrCat(data, sep, file.substr(data_bytes, index_bytes), sep,
                                           file.substr(data_bytes + index_bytes, sums_bytes));
    Write(absl::StrCat(out, "/", kind.name, "_split"), absl::StrCat(std::string(1, '\3'), split));
    Write(absl::StrCat(out, "/", kind.name, "_resum"), absl::StrCat(std::string(1, '\7'), split));
    ++n;
  }
  std::error_code ec;
  fs::remove_all(tmp, ec);
  return 0;
}
