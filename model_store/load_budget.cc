#include "model_store/load_budget.h"

#include <algorithm>
#include <fstream>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "model_store/kind_codec.h"

namespace sparse {

uint64_t SatMul(uint64_t a, uint64_t b) {
  uint64_t r = 0;
  return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX : r;
}

uint64_t SatAdd(uint64_t a, uint64_t b) {
  uint64_t r = 0;
  return __builtin_add_overflow(a, b, &r) ? UINT64_MAX : r;
}

uint64_t SatMul(std::initializer_list<int64_t> factors) {
  uint64_t r = 1;
  for (int64_t f : factors) r = SatMul(r, static_cast<uint64_t>(std::max<int64_t>(f, 0)));
  return r;
}

namespace {

// Workspace floats one thread needs to run `w` on `rows` rows (DenseModel).
uint64_t DenseWorkspaceFloats(const DenseWeights& w, int64_t rows) {
  return SatMul({rows, w.width});
}

struct Estimate {
  uint64_t file_copies = 0, files = 0, index = 0, workspace = 0, total = 0;
};

// The kind's share, plus what every kind shares: the cost-only dense
// endpoint's own packed copy of the network and its workspace, the twin's
// workspace, each thread's scratch and the warm-up's rows.
Estimate Estimated(const Checkpoint& c, uint64_t file_bytes, const LoadOptions& options) {
  const KindCodec& codec = CodecOf(c.sparse);
  const int64_t rows = std::clamp<int64_t>(options.batch_rows, 1, 128);
  KindLoadCost cost = codec.LoadCost(c.sparse, rows);
  if (const DenseWeights* network = CostOnlyDense(c, options)) {
    cost.file_copies += 1;
    cost.workspace_floats = SatAdd(cost.workspace_floats, DenseWorkspaceFloats(*network, rows));
  }
  if (c.dense.has_value()) {
    cost.workspace_floats = SatAdd(cost.workspace_floats, DenseWorkspaceFloats(*c.dense, rows));
  }
  Estimate e;
  e.file_copies = cost.file_copies;
  // Reduced-precision matrices are decoded to float32: 2x (BF16) or 4x (I8)
  // the bytes they take in the file (counted on the whole file: an upper bound).
  e.files = SatMul(SatMul(cost.file_copies, file_bytes),
                   static_cast<uint64_t>(4 / PrecisionBytes(c.tensor_precision)));
  e.index = cost.index_bytes;
  const auto [d, o] = codec.Dims(c.sparse);
  // Each thread's scratch, plus the warm-up's input and output rows.
  const uint64_t per_thread =
      SatAdd(SatMul(cost.workspace_floats, sizeof(float)), SatMul(cost.workspace_indices, 8));
  e.workspace = SatAdd(SatMul(per_thread, static_cast<uint64_t>(std::max(options.threads, 1))),
                       SatMul({2, rows, d + o, static_cast<int64_t>(sizeof(float))}));
  e.total = SatAdd(SatAdd(e.files, e.index), e.workspace);
  return e;
}

absl::Status OverBudget(uint64_t estimate, absl::string_view breakdown,
                        const LoadOptions& options) {
  return absl::ResourceExhaustedError(absl::StrCat(
      "the version needs an estimated ", estimate, " bytes to load and serve (", breakdown,
      "), more than the budget of ", options.max_bytes, " bytes (", options.budget_name, ")"));
}

// Reads the first line of a cgroup file as an integer; 0 if it is absent,
// "max" or not a number.
uint64_t ReadLimit(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  uint64_t v = 0;
  if (!std::getline(in, line) || !absl::SimpleAtoi(line, &v)) return 0;
  return v;
}

}  // namespace

uint64_t EstimateLoadBytes(const Checkpoint& checkpoint, uint64_t file_bytes,
                           const LoadOptions& options) {
  return Estimated(checkpoint, file_bytes, options).total;
}

absl::Status CheckDeclaredBytes(uint64_t file_bytes,
                                const std::map<std::string, TensorHashes>& model_tensors,
                                const LoadOptions& options) {
  uint64_t copies = UINT64_MAX;
  for (const KindCodec* codec : KindCodecs()) copies = std::min(copies, codec->MinFileCopies());
  for (const KindCodec* codec : KindCodecs()) {
    if (model_tensors.contains(std::string(codec->SignatureTensor()))) {
      copies = std::max(copies, codec->MinFileCopies());
    }
  }
  if (options.max_bytes > 0 && SatMul(copies, file_bytes) > options.max_bytes) {
    return OverBudget(SatMul(copies, file_bytes),
                      absl::StrCat(copies, " x ", file_bytes, " bytes of tensor files, as ",
                                   kManifestFile, " declares them"),
                      options);
  }
  return absl::OkStatus();
}

absl::Status CheckLoadBytes(const Checkpoint& c, uint64_t file_bytes, const LoadOptions& options) {
  if (options.max_bytes == 0) return absl::OkStatus();
  const Estimate e = Estimated(c, file_bytes, options);
  if (e.total <= options.max_bytes) return absl::OkStatus();
  return OverBudget(
      e.total,
      absl::StrCat(e.file_copies, " x ", file_bytes, " bytes of tensor files + ", e.index,
                   " of hash index + ", e.workspace, " of activation workspace for ",
                   std::max(options.threads, 1), " thread(s) at ",
                   std::clamp<int64_t>(options.batch_rows, 1, 128), " rows"),
      options);
}

uint64_t DefaultModelBudgetBytes() {
  uint64_t total = 0;
  {
    std::ifstream meminfo("/proc/meminfo");
    std::string line;
    while (std::getline(meminfo, line)) {
      absl::string_view rest = line;
      if (!absl::ConsumePrefix(&rest, "MemTotal:")) continue;
      rest = absl::StripAsciiWhitespace(rest);
      absl::ConsumeSuffix(&rest, "kB");
      uint64_t kib = 0;
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(rest), &kib)) total = SatMul(kib, 1024);
      break;
    }
  }
  // The cgroup's limit, where this process's cgroup is and at the root of
  // the cgroup mount (what a container sees as its own).
  std::vector<std::string> limits = {"/sys/fs/cgroup/memory.max",
                                     "/sys/fs/cgroup/memory/memory.limit_in_bytes"};
  {
    std::ifstream cgroups("/proc/self/cgroup");
    std::string line;
    while (std::getline(cgroups, line)) {
      const std::vector<std::string> parts = absl::StrSplit(line, absl::MaxSplits(':', 2));
      if (parts.size() != 3 || parts[2].find("..") != std::string::npos) continue;
      if (parts[0] == "0" && parts[1].empty()) {
        limits.push_back(absl::StrCat("/sys/fs/cgroup", parts[2], "/memory.max"));
      } else if (parts[1] == "memory") {
        limits.push_back(absl::StrCat("/sys/fs/cgroup/memory", parts[2], "/memory.limit_in_bytes"));
      }
    }
  }
  uint64_t memory = total;
  for (const std::string& path : limits) {
    const uint64_t limit = ReadLimit(path);  // 0: none ("max", absent)
    if (limit > 0 && (memory == 0 || limit < memory)) memory = limit;
  }
  if (memory == 0) memory = uint64_t{2} << 30;
  return memory / 2;
}

}  // namespace sparse
