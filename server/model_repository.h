// ModelRepository: every valid version of every model under a repository
// root (DESIGN.md §3), loaded at start.
//
// Layout: <root>/<model>/<version>/ with integer versions >= 1. Hidden
// entries (".tmp-*" from a publisher in progress) are ignored; a version
// that fails to load (no manifest, corrupt files) is skipped and reported,
// and the others still serve. Immutable after Load(), so every method is
// safe from any number of threads. Requests hold a shared_ptr to the
// version they run on. (Polling and explicit load/unload come with the
// production-serving issue.)
#ifndef SPARSE_SERVER_MODEL_REPOSITORY_H_
#define SPARSE_SERVER_MODEL_REPOSITORY_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model_store/checkpoint.h"

namespace sparse {

struct Servable {
  std::string model;
  int64_t version = 0;
  LoadedModel loaded;
};

class ModelRepository {
 public:
  // Loads `root`. Errors only if `root` is not a readable directory; each
  // version that fails to load adds a line to *errors (which may be null).
  static absl::StatusOr<std::unique_ptr<ModelRepository>> Load(const std::string& root,
                                                               std::vector<std::string>* errors);

  // The version to serve: `version`, or the newest when it is 0.
  // NOT_FOUND names the model or version asked for and what is loaded.
  absl::StatusOr<std::shared_ptr<const Servable>> Find(absl::string_view model,
                                                       int64_t version) const;

  // model name -> version -> servable, for listing.
  using Versions = std::map<int64_t, std::shared_ptr<const Servable>>;
  const std::map<std::string, Versions>& models() const { return models_; }

 private:
  std::map<std::string, Versions> models_;
};

}  // namespace sparse

#endif  // SPARSE_SERVER_MODEL_REPOSITORY_H_
