#include "model_store/kinds/dense_codec.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace sparse {

void EncodeNetwork(const DenseWeights& w, TensorWriter* out) {
  out->Set("input_dim", absl::StrCat(w.input_dim));
  out->Set("output_dim", absl::StrCat(w.output_dim));
  out->Set("width", absl::StrCat(w.width));
  out->Set("activation", std::string(ActivationName(w.activation)));
  out->Matrix("bottom.weight", w.width, w.input_dim, w.bottom_weight);
  out->F32("bottom.bias", {w.width}, w.bottom_bias);
  out->Matrix("top.weight", w.output_dim, w.width, w.top_weight);
  out->F32("top.bias", {w.output_dim}, w.top_bias);
}

absl::StatusOr<DenseWeights> DecodeNetwork(MetadataReader& meta, TensorReader& tensors,
                                           const Selection* units, bool router_only) {
  DenseWeights w;
  ASSIGN_OR_RETURN(w.input_dim, meta.Dim("input_dim"));
  ASSIGN_OR_RETURN(w.output_dim, meta.Dim("output_dim"));
  ASSIGN_OR_RETURN(w.width, meta.Dim("width"));
  ASSIGN_OR_RETURN(w.activation, meta.Enum("activation", &ParseActivation));
  ASSIGN_OR_RETURN(w.top_bias, tensors.F32("top.bias", {w.output_dim}));
  if (router_only) {
    for (const char* name : {"bottom.weight", "bottom.weight.scale", "bottom.bias", "top.weight",
                             "top.weight.scale"}) {
      tensors.Skip(name);
    }
    return w;
  }
  Selection columns;
  if (units != nullptr) {
    columns = *units;
    columns.axis = 1;
  }
  ASSIGN_OR_RETURN(w.bottom_weight, tensors.Matrix("bottom.weight", w.width, w.input_dim, units));
  ASSIGN_OR_RETURN(w.bottom_bias, tensors.F32("bottom.bias", {w.width}, units));
  ASSIGN_OR_RETURN(w.top_weight, tensors.Matrix("top.weight", w.output_dim, w.width,
                                                units != nullptr ? &columns : nullptr));
  if (units != nullptr) w.width = units->Units();
  return w;
}

}  // namespace sparse
