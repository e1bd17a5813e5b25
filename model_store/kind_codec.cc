#include "model_store/kind_codec.h"

#include <tuple>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace sparse {
namespace {

// One codec per alternative of the variant, in its order.
template <typename... Weights>
std::vector<const KindCodec*> CodecsOf(const std::variant<Weights...>*) {
  return {&CodecFor<Weights>()...};
}

}  // namespace

const std::vector<const KindCodec*>& KindCodecs() {
  static const auto* const codecs =
      new std::vector<const KindCodec*>(CodecsOf(static_cast<const SparseWeights*>(nullptr)));
  return *codecs;
}

const KindCodec& CodecOf(const SparseWeights& w) { return *KindCodecs()[w.index()]; }

const KindCodec* FindCodec(absl::string_view name) {
  for (const KindCodec* codec : KindCodecs()) {
    if (codec->name() == name) return codec;
  }
  return nullptr;
}

std::string KindNames() {
  const std::vector<const KindCodec*>& codecs = KindCodecs();
  std::string names;
  for (size_t i = 0; i < codecs.size(); ++i) {
    if (i > 0) names += i + 1 == codecs.size() ? " or " : ", ";
    absl::StrAppend(&names, "'", codecs[i]->name(), "'");
  }
  return names;
}

const DenseWeights* CostOnlyDense(const Checkpoint& c, const LoadOptions& options) {
  if (c.dense.has_value() || c.part.role != ModelPart::Role::kWhole || !options.cost_only_dense) {
    return nullptr;
  }
  return CodecOf(c.sparse).CostOnlyNetwork(c.sparse);
}

absl::StatusOr<ModelInfo> FrontModelInfo(const Checkpoint& front, Precision precision, int shards,
                                         const FrontFigures& figures) {
  const KindCodec& codec = CodecOf(front.sparse);
  ASSIGN_OR_RETURN(ModelInfo info, codec.FrontInfo(front.sparse, shards, figures));
  info.kind = codec.model_kind();
  std::tie(info.input_dim, info.output_dim) = codec.Dims(front.sparse);
  info.precision = precision;
  info.remote = true;
  info.shards = shards;
  if (precision != Precision::kFp32) absl::StrAppend(&info.description, " ", PrecisionName(precision));
  absl::StrAppend(&info.description, ", sharded over ", shards, " shards");
  return info;
}

}  // namespace sparse
