// Kind "lsh_table": LSH(d, s, m, Δ) (docs/checkpoint-format.md). A shard's
// part holds its tables with their hash functions and α; a front's, the
// hash functions alone.
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/lsh_table_model.h"
#include "model_store/kind_codec.h"
#include "model_store/load_budget.h"

namespace sparse {
namespace {

// The engine's bytes per stored bucket key (a BucketIndex slot of 12
// bytes, at most 4 slots per key) and per table (bookkeeping of the decoded
// and the engine tables).
constexpr uint64_t kIndexBytesPerKey = 48;
constexpr uint64_t kBytesPerTable = 256;
// Copies of the tensor files at the peak of a load: the decoded tensors,
// the engine tables and the values scaled by α.
constexpr uint64_t kLshFileCopies = 3;

// The shape of one bucket's values: [o] (Δ=0) or [o, d+1] (Δ=1).
std::vector<int64_t> BucketShape(const LshTableWeights& w) {
  std::vector<int64_t> shape = {w.output_dim};
  if (w.degree == 1) shape.push_back(w.input_dim + 1);
  return shape;
}

class LshTableCodec final : public KindCodec {
 public:
  absl::string_view name() const override { return "lsh_table"; }
  ModelKind model_kind() const override { return ModelKind::kLshTable; }

  void Encode(const SparseWeights& w, TensorWriter* out) const override;
  TensorParts PartsOf(const Metadata& meta, absl::string_view tensor) const override {
    // One part per table for the hash functions and α.
    if (tensor == "hash.projection" || tensor == "hash.offset" || tensor == "alpha") {
      return {PositiveMetadataInt(meta, "tables"), 0};
    }
    return {};
  }
  absl::StatusOr<SparseWeights> Decode(MetadataReader& meta, TensorReader& tensors,
                                       absl::string_view file,
                                       const ModelPart& part) const override;
  absl::Status Validate(const SparseWeights& w, ModelPart::Role role) const override {
    const auto& lsh = std::get<LshTableWeights>(w);
    if (role == ModelPart::Role::kSkeleton) return lsh.ValidateSkeleton();
    return role == ModelPart::Role::kFront ? lsh.ValidateHashing() : lsh.Validate();
  }
  std::pair<int64_t, int64_t> Dims(const SparseWeights& w) const override {
    const auto& lsh = std::get<LshTableWeights>(w);
    return {lsh.input_dim, lsh.output_dim};
  }

  uint64_t MinFileCopies() const override { return kLshFileCopies; }
  absl::string_view SignatureTensor() const override { return "hash.projection"; }
  KindLoadCost LoadCost(const SparseWeights& w, int64_t rows) const override;
  absl::StatusOr<std::unique_ptr<Model>> CreateModel(const SparseWeights& w, Precision precision,
                                                     WeightStore& store) const override {
    return LshTableModel::Create(std::get<LshTableWeights>(w), precision, &store);
  }
  bool MapsWeights() const override { return true; }
  const DenseWeights* CostOnlyNetwork(const SparseWeights&) const override { return nullptr; }
  // LSH tables are always float32 (their tensors are not weight matrices).
  void RoundToStorage(Precision, SparseWeights*) const override {}

  absl::StatusOr<ModelInfo> FrontInfo(const SparseWeights& front, int shards,
                                      const FrontFigures& figures) const override;
};

void LshTableCodec::Encode(const SparseWeights& sparse, TensorWriter* out) const {
  const auto& w = std::get<LshTableWeights>(sparse);
  out->Set("input_dim", absl::StrCat(w.input_dim));
  out->Set("output_dim", absl::StrCat(w.output_dim));
  out->Set("tables", absl::StrCat(w.num_tables));
  out->Set("hashes", absl::StrCat(w.num_hashes));
  out->Set("degree", absl::StrCat(w.degree));
  out->Set("family", std::string(HashFamilyName(w.family)));
  out->Set("bucket_width", FloatToString(w.bucket_width));
  const int64_t hashes = w.num_tables * w.num_hashes;
  out->F32("hash.projection", {hashes, w.input_dim}, w.projection);
  out->F32("hash.offset", {hashes}, w.offset);
  out->F32("alpha", {w.num_tables}, w.alpha);
  const std::vector<int64_t> per_bucket = BucketShape(w);
  for (int64_t i = 0; i < w.num_tables; ++i) {
    const auto& t = w.tables[i];
    const int64_t n = static_cast<int64_t>(t.keys.size());
    const std::string prefix = absl::StrCat("table.", i);
    out->U64(prefix + ".keys", {n}, t.keys);
    std::vector<int64_t> values_shape = {n};
    values_shape.insert(values_shape.end(), per_bucket.begin(), per_bucket.end());
    out->F32(prefix + ".values", values_shape, t.values);
    out->F32(prefix + ".fallback", per_bucket, t.fallback);
  }
}

absl::StatusOr<SparseWeights> LshTableCodec::Decode(MetadataReader& meta, TensorReader& tensors,
                                                    absl::string_view file,
                                                    const ModelPart& part) const {
  LshTableWeights w;
  ASSIGN_OR_RETURN(w.input_dim, meta.Dim("input_dim"));
  ASSIGN_OR_RETURN(w.output_dim, meta.Dim("output_dim"));
  ASSIGN_OR_RETURN(w.num_tables, meta.Dim("tables"));
  ASSIGN_OR_RETURN(w.num_hashes, meta.Dim("hashes"));
  ASSIGN_OR_RETURN(w.degree, meta.Int("degree"));
  ASSIGN_OR_RETURN(w.family, meta.Enum("family", &ParseHashFamily));
  ASSIGN_OR_RETURN(w.bucket_width, meta.Float("bucket_width"));
  if (w.degree != 0 && w.degree != 1) RETURN_IF_ERROR(WithFile(file, w.Validate()));
  int64_t hashes = 0;
  if (__builtin_mul_overflow(w.num_tables, w.num_hashes, &hashes)) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": tables x hashes overflows"));
  }
  // Three tensors per table must be in the file before a table is made.
  if (w.num_tables > tensors.Count() / 3) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": tables=", w.num_tables, " needs ",
                                                   3 * w.num_tables, " table tensors; the file holds ",
                                                   tensors.Count(), " tensors in all"));
  }
  UnitRange owned{0, w.num_tables};
  if (part.role == ModelPart::Role::kShard) {
    if (w.num_tables < part.shard.count) {
      return absl::InvalidArgumentError(absl::StrCat(
          file, ": ", w.num_tables, " tables cannot be split across ", part.shard.count,
          " shards (each shard needs at least one table)"));
    }
    owned = OwnedUnits(w.num_tables, part.shard.index, part.shard.count);
    w.first_table = owned.begin;
    w.total_tables = w.num_tables;
  }
  const Selection tables_hashes{0, {{owned.begin * w.num_hashes, owned.end * w.num_hashes}}};
  const Selection tables{0, {owned}};
  const bool shard = part.role == ModelPart::Role::kShard;
  ASSIGN_OR_RETURN(w.projection, tensors.F32("hash.projection", {hashes, w.input_dim},
                                             shard ? &tables_hashes : nullptr));
  ASSIGN_OR_RETURN(w.offset, tensors.F32("hash.offset", {hashes}, shard ? &tables_hashes : nullptr));
  const bool front = part.role == ModelPart::Role::kFront;
  // A mapped model's skeleton: the tables' bucket counts, their arrays
  // coming from the weight cache file.
  const bool skeleton = part.role == ModelPart::Role::kSkeleton;
  if (front) {
    tensors.Skip("alpha");
  } else {
    ASSIGN_OR_RETURN(w.alpha, tensors.F32("alpha", {w.num_tables}, shard ? &tables : nullptr));
  }
  const std::vector<int64_t> per_bucket = BucketShape(w);
  for (int64_t i = 0; i < w.num_tables; ++i) {
    const std::string prefix = absl::StrCat("table.", i);
    if (front || i < owned.begin || i >= owned.end) {
      for (const char* t : {".keys", ".values", ".fallback"}) tensors.Skip(prefix + t);
      continue;
    }
    auto& table = w.tables.emplace_back();
    ASSIGN_OR_RETURN(int64_t n, tensors.Length(prefix + ".keys"));
    if (skeleton) {
      table.skeleton_buckets = n;
      for (const char* t : {".keys", ".values", ".fallback"}) tensors.Skip(prefix + t);
      continue;
    }
    ASSIGN_OR_RETURN(table.keys, tensors.Get<uint64_t>(prefix + ".keys", DType::kU64, {n}));
    std::vector<int64_t> values_shape = {n};
    values_shape.insert(values_shape.end(), per_bucket.begin(), per_bucket.end());
    ASSIGN_OR_RETURN(table.values, tensors.F32(prefix + ".values", values_shape));
    ASSIGN_OR_RETURN(table.fallback, tensors.F32(prefix + ".fallback", per_bucket));
  }
  if (shard) w.num_tables = owned.size();
  return SparseWeights(std::move(w));
}

KindLoadCost LshTableCodec::LoadCost(const SparseWeights& w, int64_t rows) const {
  const auto& lsh = std::get<LshTableWeights>(w);
  KindLoadCost cost;
  cost.file_copies = kLshFileCopies;
  uint64_t keys = 0;
  for (const auto& t : lsh.tables) keys = SatAdd(keys, t.keys.size());
  cost.index_bytes = SatAdd(SatMul(keys, kIndexBytesPerKey),
                            SatMul(static_cast<uint64_t>(lsh.num_tables), kBytesPerTable));
  cost.workspace_floats =
      SatAdd(SatMul({rows, lsh.num_tables, lsh.num_hashes}), SatAdd(lsh.input_dim, 1));
  cost.workspace_indices = SatMul({rows, lsh.num_tables});
  return cost;
}

absl::StatusOr<ModelInfo> LshTableCodec::FrontInfo(const SparseWeights& front, int shards,
                                                   const FrontFigures& figures) const {
  const auto& lsh = std::get<LshTableWeights>(front);
  if (lsh.num_tables < shards) {
    return absl::InvalidArgumentError(
        absl::StrCat(lsh.num_tables, " tables cannot be split across ", shards, " shards"));
  }
  ModelInfo info;
  info.flops_per_row = LshTableFlopsPerRow(lsh);
  info.description = Describe(lsh);
  // Every row reads the front's hash functions and each shard's buckets.
  info.weight_bytes_per_row = figures.routing_weight_bytes_per_row;
  for (const FrontFigures::Part& part : figures.parts) {
    info.parameters += part.parameters;
    info.weight_bytes_per_row += part.weight_bytes_per_row;
  }
  info.resident_bytes = figures.routing_resident_bytes;
  return info;
}

}  // namespace

template <>
const KindCodec& CodecFor<LshTableWeights>() {
  static const KindCodec* const codec = new LshTableCodec;
  return *codec;
}

}  // namespace sparse
