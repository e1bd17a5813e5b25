#include "server/core/model_control.h"

#include <memory>
#include <utility>

#include "common/internal_error.h"

namespace sparse {

void ModelControl::Load(std::string model,
                        std::function<void(absl::StatusOr<ModelState>)> done) {
  // Shared: if the loader's queue is full the task is dropped, and the
  // caller is still answered here.
  auto shared = std::make_shared<std::function<void(absl::StatusOr<ModelState>)>>(std::move(done));
  const bool queued = loader_.Submit([this, model = std::move(model), shared] {
    absl::StatusOr<ModelState> state = absl::InternalError("not loaded");
    const absl::Status loaded = CatchInternal(ErrorSite::kModelControl, [&] {
      FaultPoint(ErrorSite::kModelControl);
      state = repository_->LoadModel(model);
    });
    (*shared)(loaded.ok() ? std::move(state) : absl::StatusOr<ModelState>(loaded));
  });
  if (!queued) {
    (*shared)(absl::UnavailableError("too many model loads wait already; retry when they are done"));
  }
}

}  // namespace sparse
