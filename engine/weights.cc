#include "engine/weights.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace sparse {
namespace {

// Largest dimension product we accept: keeps every byte count far from
// int64 overflow and well above any model this server can hold in memory.
constexpr int64_t kMaxElements = int64_t{1} << 40;

absl::Status CheckDim(absl::string_view name, int64_t value, int64_t min) {
  if (value < min || value > kMaxElements) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, " must be in [", min, ", ", kMaxElements, "], got ", value));
  }
  return absl::OkStatus();
}

// a*b with overflow detection against kMaxElements.
absl::StatusOr<int64_t> CheckedMul(int64_t a, int64_t b) {
  if (a != 0 && b > kMaxElements / a) {
    return absl::InvalidArgumentError(
        absl::StrCat("size ", a, " x ", b, " is too large"));
  }
  return a * b;
}

absl::Status CheckSize(absl::string_view name, size_t got, int64_t expected) {
  if (static_cast<int64_t>(got) != expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, " has ", got, " values, expected ", expected));
  }
  return absl::OkStatus();
}

absl::Status CheckFinite(absl::string_view name, const std::vector<float>& v) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (!std::isfinite(v[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, "[", i, "] is not finite (", v[i], ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckMatrix(absl::string_view name, const std::vector<float>& v,
                         int64_t rows, int64_t cols) {
  absl::StatusOr<int64_t> n = CheckedMul(rows, cols);
  if (!n.ok()) return absl::InvalidArgumentError(absl::StrCat(name, ": ", n.status().message()));
  RETURN_IF_ERROR(CheckSize(name, v.size(), *n));
  return CheckFinite(name, v);
}

bool IsPowerOfTwo(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

}  // namespace

absl::string_view HashFamilyName(HashFamily family) {
  return family == HashFamily::kHyperplane ? "hyperplane" : "euclidean";
}
absl::string_view ActivationName(Activation activation) {
  return activation == Activation::kRelu ? "relu" : "identity";
}

absl::StatusOr<HashFamily> ParseHashFamily(absl::string_view name) {
  if (name == "hyperplane") return HashFamily::kHyperplane;
  if (name == "euclidean") return HashFamily::kEuclidean;
  return absl::InvalidArgumentError(absl::StrCat(
      "hash family must be 'hyperplane' or 'euclidean', got '", name, "'"));
}
absl::StatusOr<Activation> ParseActivation(absl::string_view name) {
  if (name == "relu") return Activation::kRelu;
  if (name == "identity") return Activation::kIdentity;
  return absl::InvalidArgumentError(absl::StrCat(
      "activation must be 'relu' or 'identity', got '", name, "'"));
}

absl::Status LshTableWeights::ValidateHashing() const {
  RETURN_IF_ERROR(CheckDim("input_dim", input_dim, 1));
  RETURN_IF_ERROR(CheckDim("output_dim", output_dim, 1));
  RETURN_IF_ERROR(CheckDim("tables", num_tables, 1));
  RETURN_IF_ERROR(CheckDim("hashes", num_hashes, 1));
  if (degree != 0 && degree != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("degree must be 0 or 1, got ", degree));
  }
  if (family == HashFamily::kHyperplane && num_hashes > 64) {
    return absl::InvalidArgumentError(absl::StrCat(
        "hyperplane keys hold at most 64 bits, got hashes=", num_hashes));
  }
  if (!(std::isfinite(bucket_width) && bucket_width > 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bucket_width must be a positive finite number, got ", bucket_width));
  }
  absl::StatusOr<int64_t> hashes = CheckedMul(num_tables, num_hashes);
  if (!hashes.ok()) return hashes.status();
  RETURN_IF_ERROR(CheckMatrix("projection", projection, *hashes, input_dim));
  RETURN_IF_ERROR(CheckMatrix("offset", offset, *hashes, 1));
  return absl::OkStatus();
}

absl::Status LshTableWeights::ValidateSkeleton() const {
  RETURN_IF_ERROR(ValidateHashing());
  RETURN_IF_ERROR(CheckMatrix("alpha", alpha, num_tables, 1));
  if (static_cast<int64_t>(tables.size()) != num_tables) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected ", num_tables, " tables, got ", tables.size()));
  }
  for (size_t i = 0; i < tables.size(); ++i) {
    if (tables[i].skeleton_buckets < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("table.", i, " is not a skeleton's (no bucket count)"));
    }
  }
  return absl::OkStatus();
}

absl::Status LshTableWeights::Validate() const {
  RETURN_IF_ERROR(ValidateHashing());
  if (total_tables != 0 && (first_table < 0 || total_tables < num_tables ||
                            first_table > total_tables - num_tables)) {
    return absl::InvalidArgumentError(absl::StrCat("a shard of tables [", first_table, ", ",
                                                   first_table + num_tables, ") is not within the ",
                                                   total_tables, " tables of the model"));
  }
  RETURN_IF_ERROR(CheckMatrix("alpha", alpha, num_tables, 1));
  if (static_cast<int64_t>(tables.size()) != num_tables) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected ", num_tables, " tables, got ", tables.size()));
  }
  const int64_t per_bucket = ValuesPerBucket();
  for (size_t i = 0; i < tables.size(); ++i) {
    const Table& t = tables[i];
    const std::string prefix = absl::StrCat("table.", i);
    for (size_t j = 1; j < t.keys.size(); ++j) {
      if (t.keys[j - 1] >= t.keys[j]) {
        return absl::InvalidArgumentError(absl::StrCat(
            prefix, ".keys are not strictly increasing at index ", j));
      }
    }
    RETURN_IF_ERROR(CheckMatrix(prefix + ".values", t.values, static_cast<int64_t>(t.keys.size()), per_bucket));
    RETURN_IF_ERROR(CheckMatrix(prefix + ".fallback", t.fallback, per_bucket, 1));
  }
  return absl::OkStatus();
}

absl::Status DenseWeights::Validate() const {
  RETURN_IF_ERROR(CheckDim("input_dim", input_dim, 1));
  RETURN_IF_ERROR(CheckDim("output_dim", output_dim, 1));
  RETURN_IF_ERROR(CheckDim("width", width, 1));
  RETURN_IF_ERROR(CheckMatrix("bottom.weight", bottom_weight, width, input_dim));
  RETURN_IF_ERROR(CheckMatrix("bottom.bias", bottom_bias, width, 1));
  RETURN_IF_ERROR(CheckMatrix("top.weight", top_weight, output_dim, width));
  return CheckMatrix("top.bias", top_bias, output_dim, 1);
}

int64_t DsmWeights::RouterBits() const {
  if (router != RouterKind::kLsh) return 0;
  int64_t r = 0;
  while ((int64_t{1} << r) < num_experts) ++r;
  return r;
}

absl::Status DsmWeights::Validate() const {
  RETURN_IF_ERROR(network.Validate());
  return ValidateRouting();
}

absl::Status DsmWeights::ValidateRouting() const {
  RETURN_IF_ERROR(CheckDim("input_dim", network.input_dim, 1));
  RETURN_IF_ERROR(CheckDim("output_dim", network.output_dim, 1));
  RETURN_IF_ERROR(CheckDim("width", network.width, 1));
  RETURN_IF_ERROR(CheckMatrix("top.bias", network.top_bias, network.output_dim, 1));
  const int64_t t = network.width;
  RETURN_IF_ERROR(CheckDim("blocks", num_blocks, 1));
  RETURN_IF_ERROR(CheckDim("active_units", active_units, 1));
  if (t % num_blocks != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "width ", t, " is not divisible by blocks=", num_blocks));
  }
  const int64_t block_units = t / num_blocks;
  if (router == RouterKind::kTopk) {
    // docs/checkpoint-format.md: topk has no experts and writes 0. Refused
    // here so that no count sized by it (routing counters) is ever made.
    if (num_experts != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the topk router has no experts: experts must be 0, got ", num_experts));
    }
    if (active_units > block_units) {
      return absl::InvalidArgumentError(absl::StrCat(
          "active_units ", active_units, " exceeds the ", block_units,
          " units of a block"));
    }
    if (!router_weight.empty() || !router_bias.empty()) {
      return absl::InvalidArgumentError("the topk router has no router weights");
    }
    return absl::OkStatus();
  }
  RETURN_IF_ERROR(CheckDim("experts", num_experts, 1));
  absl::StatusOr<int64_t> units = CheckedMul(num_experts, active_units);
  if (!units.ok()) return units.status();
  if (*units != block_units) {
    return absl::InvalidArgumentError(absl::StrCat(
        "experts x active_units = ", num_experts, " x ", active_units, " = ", *units,
        " must equal the ", block_units, " units of a block (width / blocks)"));
  }
  if (IsShard()) {
    if (first_expert < 0 || total_experts < num_experts ||
        first_expert > total_experts - num_experts) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a shard of experts [", first_expert, ", ", first_expert + num_experts,
          ") is not within the ", total_experts, " experts of a block"));
    }
    if (!router_weight.empty() || !router_bias.empty()) {
      return absl::InvalidArgumentError("a shard holds no router weights (its front routes)");
    }
    return absl::OkStatus();
  }
  switch (router) {
    case RouterKind::kLsh: {
      if (!IsPowerOfTwo(num_experts)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "the lsh router needs a power-of-two expert count, got ", num_experts));
      }
      const int64_t bits = num_blocks * RouterBits();
      RETURN_IF_ERROR(CheckMatrix("router.weight", router_weight, bits, network.input_dim));
      return CheckMatrix("router.bias", router_bias, bits, 1);
    }
    case RouterKind::kKmeans: {
      RETURN_IF_ERROR(CheckMatrix("router.weight", router_weight, num_blocks * num_experts, network.input_dim));
      if (!router_bias.empty()) {
        return absl::InvalidArgumentError("the kmeans router has no router.bias");
      }
      return absl::OkStatus();
    }
    case RouterKind::kHash:
      if (!router_weight.empty() || !router_bias.empty()) {
        return absl::InvalidArgumentError("the hash router has no router weights");
      }
      return absl::OkStatus();
    case RouterKind::kTopk:
      break;
  }
  return absl::OkStatus();
}

int64_t LshTableFlopsPerRow(const LshTableWeights& w) {
  const int64_t s = w.num_tables, m = w.num_hashes, d = w.input_dim, o = w.output_dim;
  // A shard's part hashes nothing: its front computes the keys.
  const int64_t hashing = w.total_tables > 0 ? 0 : 2 * s * m * d;
  return w.degree == 0 ? hashing + s * o : hashing + s * 2 * o * (d + 1);
}

int64_t DsmFlopsPerRow(const DsmWeights& w) {
  const int64_t d = w.network.input_dim, o = w.network.output_dim;
  const int64_t t = w.network.width, k = w.active_units, L = w.num_blocks;
  const int64_t slice = 2 * k * d + 2 * k * o;
  if (w.IsShard()) return L * slice;  // the slices only: the front routes
  switch (w.router) {
    case RouterKind::kLsh: return L * (2 * w.RouterBits() * d + slice);
    case RouterKind::kHash: return L * slice;
    case RouterKind::kKmeans: return L * (2 * w.num_experts * d + slice);
    case RouterKind::kTopk: return 2 * t * d + L * 2 * k * o;
  }
  return 0;
}

int64_t DenseFlopsPerRow(const DenseWeights& w) {
  return 2 * w.width * w.input_dim + 2 * w.width * w.output_dim;
}

std::string Describe(const DsmWeights& w) {
  const DenseWeights& net = w.network;
  std::string text = absl::StrCat("dsm router=", RouterKindName(w.router), " d=", net.input_dim,
                                  " t=", net.width, " E=", w.num_experts, " k=", w.active_units,
                                  " L=", w.num_blocks, " o=", net.output_dim, " ",
                                  ActivationName(net.activation));
  if (w.IsShard()) {
    absl::StrAppend(&text, " shard of experts [", w.first_expert, ", ",
                    w.first_expert + w.num_experts, ") of ", w.total_experts);
  }
  return text;
}

std::string Describe(const LshTableWeights& w) {
  std::string text = absl::StrCat("lsh_table family=", HashFamilyName(w.family), " d=",
                                  w.input_dim, " s=", w.num_tables, " m=", w.num_hashes,
                                  " delta=", w.degree, " o=", w.output_dim);
  if (w.total_tables > 0) {
    absl::StrAppend(&text, " shard of tables [", w.first_table, ", ", w.first_table + w.num_tables,
                    ") of ", w.total_tables);
  }
  return text;
}

}  // namespace sparse
