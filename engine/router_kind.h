// RouterKind: how a DSM picks each row's expert (the paper's §3 routers),
// the router's own vocabulary, used by its weights (engine/weights.h), the
// router (engine/expert_router.h), the DSM model and the trainer.
#ifndef SPARSE_ENGINE_ROUTER_KIND_H_
#define SPARSE_ENGINE_ROUTER_KIND_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sparse {

// lsh: a hyperplane hash of the row (its bucket's expert); hash: a random
// hash of the row's bytes; kmeans: the nearest trained centroid; topk: no
// router, the top-k units of the whole hidden layer (a dense baseline).
enum class RouterKind { kLsh, kHash, kKmeans, kTopk };

// "lsh", "hash", "kmeans", "topk", as checkpoints and --router spell them.
absl::string_view RouterKindName(RouterKind router);
// INVALID_ARGUMENT listing the names for anything else.
absl::StatusOr<RouterKind> ParseRouterKind(absl::string_view name);

}  // namespace sparse

#endif  // SPARSE_ENGINE_ROUTER_KIND_H_
