// Kind "dsm": DSM(d, t, k) with a router (docs/checkpoint-format.md): the
// dense network (kinds/dense_codec.h) and the router's metadata and
// tensors. A shard's part of a routed DSM holds its experts of every block,
// without a0 or the router; a front's, the router, a0 and the dimensions.
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/dsm_model.h"
#include "model_store/kind_codec.h"
#include "model_store/kinds/dense_codec.h"
#include "model_store/load_budget.h"

namespace sparse {
namespace {

// Copies of the tensor files at the peak of a load: the decoded tensors and
// the kernels' packed copy, each expert slice transposed straight into its
// place (measured on a 512 MiB DSM: peak RSS 1.9x the file whole, 1.9x its
// part on a shard); one more for topk's transposed A.
constexpr uint64_t kDsmFileCopies = 2;

// The units of the width a DSM shard owns: experts [e0, e1) of every block.
Selection ExpertUnits(int64_t blocks, int64_t experts, int64_t k, UnitRange owned, int axis) {
  Selection s{axis, {}};
  for (int64_t l = 0; l < blocks; ++l) {
    s.ranges.push_back({(l * experts + owned.begin) * k, (l * experts + owned.end) * k});
  }
  return s;
}

// For a part of the model (a shard's or a front's): that it can be split
// across part.shard.count shards, and that the width is blocks x experts x
// active_units, held against the file (bottom.bias has one float a unit)
// so that a shard's selection is bounded by the file, not by what the
// metadata claims.
absl::Status CheckSplit(const DsmWeights& w, MetadataReader& meta, TensorReader& tensors,
                        absl::string_view file, const ModelPart& part) {
  if (w.router == RouterKind::kTopk) {
    return absl::FailedPreconditionError(absl::StrCat(
        file, ": a topk DSM cannot be sharded: it has no router and every row needs all of B "
        "(serve it whole, on a server without --shard)"));
  }
  if (w.num_experts < part.shard.count) {
    return absl::InvalidArgumentError(absl::StrCat(
        file, ": ", w.num_experts, " experts per block cannot be split across ",
        part.shard.count, " shards (each shard needs at least one expert)"));
  }
  ASSIGN_OR_RETURN(const int64_t width, meta.Dim("width"));
  int64_t units = 0;
  if (w.num_blocks == 0 || w.num_experts == 0 ||
      __builtin_mul_overflow(w.num_blocks, w.num_experts, &units) ||
      __builtin_mul_overflow(units, w.active_units, &units) || width != units) {
    return absl::InvalidArgumentError(absl::StrCat(
        file, ": width ", width, " must be blocks x experts x active_units = ", w.num_blocks,
        " x ", w.num_experts, " x ", w.active_units));
  }
  ASSIGN_OR_RETURN(const int64_t biases, tensors.Length("bottom.bias"));
  if (biases != width) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": tensor 'bottom.bias' has ", biases,
                                                   " values, expected width = ", width));
  }
  return absl::OkStatus();
}

// The router's metadata and tensors, for the router kind w->router.
absl::Status DecodeRouter(MetadataReader& meta, TensorReader& tensors, absl::string_view file,
                          DsmWeights* w) {
  const int64_t d = w->network.input_dim;
  switch (w->router) {
    case RouterKind::kLsh: {
      // Dim() bounds both by 2^40, so bits <= 2^40 * 40 cannot overflow.
      const int64_t bits = w->num_blocks * w->RouterBits();
      ASSIGN_OR_RETURN(w->router_weight, tensors.F32("router.weight", {bits, d}));
      ASSIGN_OR_RETURN(w->router_bias, tensors.F32("router.bias", {bits}));
      break;
    }
    case RouterKind::kKmeans: {
      int64_t centroids = 0;
      if (__builtin_mul_overflow(w->num_blocks, w->num_experts, &centroids)) {
        return absl::InvalidArgumentError(absl::StrCat(file, ": blocks x experts overflows"));
      }
      ASSIGN_OR_RETURN(w->router_weight, tensors.F32("router.weight", {centroids, d}));
      break;
    }
    case RouterKind::kHash: {
      ASSIGN_OR_RETURN(w->hash_seed, meta.Uint("hash_seed"));
      break;
    }
    case RouterKind::kTopk:
      break;
  }
  return absl::OkStatus();
}

class DsmCodec final : public KindCodec {
 public:
  absl::string_view name() const override { return "dsm"; }
  ModelKind model_kind() const override { return ModelKind::kDsm; }

  void Encode(const SparseWeights& w, TensorWriter* out) const override;
  TensorParts PartsOf(const Metadata& meta, absl::string_view tensor) const override;
  absl::StatusOr<SparseWeights> Decode(MetadataReader& meta, TensorReader& tensors,
                                       absl::string_view file,
                                       const ModelPart& part) const override;
  absl::Status Validate(const SparseWeights& w, ModelPart::Role role) const override {
    const auto& dsm = std::get<DsmWeights>(w);
    // A shard's skeleton holds its dimensions and expert range, which
    // ValidateRouting checks of a shard's part, and no tensors.
    return ModelPart{.role = role}.RoutingOnly() || role == ModelPart::Role::kShardSkeleton
               ? dsm.ValidateRouting()
               : dsm.Validate();
  }
  std::pair<int64_t, int64_t> Dims(const SparseWeights& w) const override {
    const DenseWeights& net = std::get<DsmWeights>(w).network;
    return {net.input_dim, net.output_dim};
  }

  uint64_t MinFileCopies() const override { return kDsmFileCopies; }
  absl::string_view SignatureTensor() const override { return "top.bias"; }
  KindLoadCost LoadCost(const SparseWeights& w, int64_t rows) const override;
  absl::StatusOr<std::unique_ptr<Model>> CreateModel(const SparseWeights& w, Precision precision,
                                                     WeightStore& store) const override {
    return DsmModel::Create(std::get<DsmWeights>(w), precision, &store);
  }
  bool MapsWeights() const override { return true; }
  // A routed DSM's arrays are per expert slice, block-major (l·E + e).
  int64_t WholePartOf(const SparseWeights& shard_part, int64_t part) const override {
    const auto& dsm = std::get<DsmWeights>(shard_part);
    if (!dsm.IsShard() || dsm.router == RouterKind::kTopk) return -1;
    const int64_t l = part / dsm.num_experts, e = part % dsm.num_experts;
    return l * dsm.total_experts + dsm.first_expert + e;
  }
  int64_t WholeParts(const SparseWeights& shard_part) const override {
    const auto& dsm = std::get<DsmWeights>(shard_part);
    return dsm.IsShard() ? dsm.num_blocks * dsm.total_experts : 0;
  }
  bool MapsShardWeights() const override { return true; }
  // A shard's arrays are per expert slice too, block-major over the
  // shard's own experts (l·E_shard + e - first_expert).
  int64_t ShardPartOf(const SparseWeights& group, const SparseWeights& shard,
                      int64_t part) const override {
    const auto& g = std::get<DsmWeights>(group);
    const auto& s = std::get<DsmWeights>(shard);
    if (!g.IsShard() || !s.IsShard() || g.router == RouterKind::kTopk ||
        g.first_expert < s.first_expert ||
        g.first_expert + g.num_experts > s.first_expert + s.num_experts) {
      return -1;
    }
    const int64_t l = part / g.num_experts, e = part % g.num_experts;
    return l * s.num_experts + (g.first_expert - s.first_expert) + e;
  }
  int64_t ShardParts(const SparseWeights& shard) const override {
    const auto& dsm = std::get<DsmWeights>(shard);
    return dsm.IsShard() ? dsm.num_blocks * dsm.num_experts : 0;
  }
  const DenseWeights* CostOnlyNetwork(const SparseWeights& w) const override {
    const auto& dsm = std::get<DsmWeights>(w);
    return dsm.IsShard() ? nullptr : &dsm.network;
  }
  void RoundToStorage(Precision precision, SparseWeights* w) const override {
    sparse::RoundToStorage(precision, &std::get<DsmWeights>(*w).network);
  }

  absl::StatusOr<ModelInfo> FrontInfo(const SparseWeights& front, int shards,
                                      const FrontFigures& figures) const override;
};

void DsmCodec::Encode(const SparseWeights& sparse, TensorWriter* out) const {
  const auto& w = std::get<DsmWeights>(sparse);
  EncodeNetwork(w.network, out);
  out->Set("router", std::string(RouterKindName(w.router)));
  out->Set("blocks", absl::StrCat(w.num_blocks));
  out->Set("experts", absl::StrCat(w.num_experts));
  out->Set("active_units", absl::StrCat(w.active_units));
  const int64_t d = w.network.input_dim;
  switch (w.router) {
    case RouterKind::kLsh: {
      const int64_t bits = w.num_blocks * w.RouterBits();
      out->F32("router.weight", {bits, d}, w.router_weight);
      out->F32("router.bias", {bits}, w.router_bias);
      break;
    }
    case RouterKind::kKmeans:
      out->F32("router.weight", {w.num_blocks * w.num_experts, d}, w.router_weight);
      break;
    case RouterKind::kHash:
      out->Set("hash_seed", absl::StrCat(w.hash_seed));
      break;
    case RouterKind::kTopk:
      break;
  }
}

TensorParts DsmCodec::PartsOf(const Metadata& meta, absl::string_view tensor) const {
  // A routed DSM's sliced tensors: one part per expert (of every block).
  if (MetadataValue(meta, "router") == "topk") return {};
  int64_t experts = 0;
  if (__builtin_mul_overflow(PositiveMetadataInt(meta, "blocks"),
                             PositiveMetadataInt(meta, "experts"), &experts)) {
    experts = 0;
  }
  if (tensor == "bottom.weight" || tensor == "bottom.weight.scale" || tensor == "bottom.bias") {
    return {experts, 0};
  }
  if (tensor == "top.weight") return {experts, 1};
  return {};
}

absl::StatusOr<SparseWeights> DsmCodec::Decode(MetadataReader& meta, TensorReader& tensors,
                                               absl::string_view file,
                                               const ModelPart& part) const {
  DsmWeights w;
  ASSIGN_OR_RETURN(w.router, meta.Enum("router", &ParseRouterKind));
  ASSIGN_OR_RETURN(w.num_blocks, meta.Dim("blocks"));
  ASSIGN_OR_RETURN(w.num_experts, meta.Dim("experts"));
  ASSIGN_OR_RETURN(w.active_units, meta.Dim("active_units"));
  const bool shard = part.Shard();
  // A shard's skeleton: its dimensions and expert range, no sliced tensor.
  const bool skeleton = part.role == ModelPart::Role::kShardSkeleton;
  const bool front = part.RoutingOnly();
  if (shard || part.role == ModelPart::Role::kFront) {
    RETURN_IF_ERROR(CheckSplit(w, meta, tensors, file, part));
  }
  if (part.units.has_value() && part.role != ModelPart::Role::kShard) {
    return absl::InvalidArgumentError(absl::StrCat(
        file, ": a range of experts is read only as a shard's part (kShard), not as part role ",
        static_cast<int>(part.role)));
  }
  std::optional<Selection> units;
  UnitRange owned;
  if (shard) {
    owned = OwnedUnits(w.num_experts, part.shard.index, part.shard.count);
    if (part.units.has_value()) {
      // A group of the shard's experts (its weight cache file is written
      // group by group): within what the shard owns, never empty.
      const UnitRange group = *part.units;
      if (group.begin < owned.begin || group.end > owned.end || group.size() < 1) {
        return absl::InvalidArgumentError(absl::StrCat(
            file, ": experts [", group.begin, ", ", group.end, ") are not a non-empty part of "
            "the experts [", owned.begin, ", ", owned.end, ") shard ", part.shard.ToString(),
            " owns"));
      }
      owned = group;
    }
    units = ExpertUnits(w.num_blocks, w.num_experts, w.active_units, owned, 0);
  }
  ASSIGN_OR_RETURN(w.network, DecodeNetwork(meta, tensors, units && !skeleton ? &*units : nullptr,
                                            front || skeleton));
  if (skeleton) {
    // The width the shard's tensors would have had: L·E_shard·k, no more
    // than the file's width (CheckSplit held L·E·k to it).
    w.network.width = units->Units();
  }
  if (shard) {
    // The front adds a0 and routes: the shard's part holds neither.
    std::fill(w.network.top_bias.begin(), w.network.top_bias.end(), 0.0f);
    tensors.Skip("router.weight");
    tensors.Skip("router.bias");
    if (w.router == RouterKind::kHash) RETURN_IF_ERROR(meta.Uint("hash_seed").status());
    w.first_expert = owned.begin;
    w.total_experts = w.num_experts;
    w.num_experts = owned.size();
    return SparseWeights(std::move(w));
  }
  RETURN_IF_ERROR(DecodeRouter(meta, tensors, file, &w));
  return SparseWeights(std::move(w));
}

KindLoadCost DsmCodec::LoadCost(const SparseWeights& w, int64_t rows) const {
  const auto& dsm = std::get<DsmWeights>(w);
  const DenseWeights& net = dsm.network;
  const int64_t d = net.input_dim, o = net.output_dim;
  const int64_t L = dsm.num_blocks, k = dsm.active_units, E = dsm.num_experts;
  KindLoadCost cost;
  cost.file_copies = kDsmFileCopies;
  if (dsm.router == RouterKind::kTopk) {
    cost.file_copies += 1;
    cost.workspace_floats =
        SatAdd(SatAdd(SatMul({rows, net.width}), SatMul({L, k})), SatMul({L, k, o}));
    cost.workspace_indices = L > 0 ? static_cast<uint64_t>(net.width / L) : 0;
  } else {
    const int64_t router = dsm.router == RouterKind::kLsh      ? dsm.RouterBits()
                           : dsm.router == RouterKind::kKmeans ? E
                                                               : 0;
    cost.workspace_floats = SatAdd(SatMul({rows, L, router}), SatMul({rows, k + o + d}));
    // + expert ids
    cost.workspace_indices = SatAdd(SatAdd(rows, E), SatAdd(2, SatMul({rows, L}) / 2));
  }
  return cost;
}

absl::StatusOr<ModelInfo> DsmCodec::FrontInfo(const SparseWeights& front, int shards,
                                              const FrontFigures& figures) const {
  const auto& dsm = std::get<DsmWeights>(front);
  if (dsm.num_experts < shards) {
    return absl::InvalidArgumentError(absl::StrCat(
        dsm.num_experts, " experts per block cannot be split across ", shards, " shards"));
  }
  const DenseWeights& net = dsm.network;
  ModelInfo info;
  info.flops_per_row = DsmFlopsPerRow(dsm);
  info.parameters = net.width * (net.input_dim + 1 + net.output_dim) + net.output_dim +
                    static_cast<int64_t>(dsm.router_weight.size() + dsm.router_bias.size());
  info.description = Describe(dsm);
  // Each shard's row reads a0 and L slices; the front reads a0 and the
  // router, and the slices are the shards' (the same on every shard).
  const int64_t slices = figures.parts.empty()
                             ? 0
                             : figures.parts.front().weight_bytes_per_row - 4 * net.output_dim;
  info.weight_bytes_per_row = 4 * net.output_dim + figures.routing_weight_bytes_per_row + slices;
  info.resident_bytes = figures.routing_resident_bytes + 4 * net.output_dim;
  return info;
}

}  // namespace

template <>
const KindCodec& CodecFor<DsmWeights>() {
  static const KindCodec* const codec = new DsmCodec;
  return *codec;
}

}  // namespace sparse
