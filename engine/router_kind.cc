#include "engine/router_kind.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace sparse {

absl::string_view RouterKindName(RouterKind router) {
  switch (router) {
    case RouterKind::kLsh: return "lsh";
    case RouterKind::kHash: return "hash";
    case RouterKind::kKmeans: return "kmeans";
    case RouterKind::kTopk: return "topk";
  }
  return "unknown";
}

absl::StatusOr<RouterKind> ParseRouterKind(absl::string_view name) {
  if (name == "lsh") return RouterKind::kLsh;
  if (name == "hash") return RouterKind::kHash;
  if (name == "kmeans") return RouterKind::kKmeans;
  if (name == "topk") return RouterKind::kTopk;
  return absl::InvalidArgumentError(absl::StrCat(
      "router must be one of lsh, hash, kmeans, topk; got '", name, "'"));
}

}  // namespace sparse
