#include "server/core/model_control.h"

#include <memory>
#include <utility>

namespace sparse {

void ModelControl::Load(std::string model,
                        std::function<void(absl::StatusOr<ModelState>)> done) {
  // Shared: if the loader's queue is full the task is dropped, and the
  // caller is still answered here.
  auto shared = std::make_shared<std::function<void(absl::StatusOr<ModelState>)>>(std::move(done));
  const bool queued = loader_.Submit([this, model = std::move(model), shared] {
    (*shared)(repository_->LoadModel(model));
  });
  if (!queued) {
    (*shared)(absl::UnavailableError("too many model loads wait already; retry when they are done"));
  }
}

}  // namespace sparse
