#include "server/core/model_control.h"

#include <memory>
#include <utility>

#include "common/internal_error.h"
#include "model_store/model_repository.h"

namespace sparse {

void ModelControl::Load(std::string model,
                        std::function<void(absl::StatusOr<ModelStatus>)> done) {
  // Shared: if the loader's queue is full the task is dropped, and the
  // caller is still answered here.
  auto shared = std::make_shared<std::function<void(absl::StatusOr<ModelStatus>)>>(std::move(done));
  const bool queued = loader_.Submit([this, model = std::move(model), shared] {
    absl::StatusOr<ModelState> state = absl::InternalError("not loaded");
    const absl::Status loaded = CatchInternal(ErrorSite::kModelControl, [&] {
      FaultPoint(ErrorSite::kModelControl);
      state = repository_->LoadModel(model);
    });
    if (!loaded.ok()) {
      (*shared)(loaded);
    } else if (!state.ok()) {
      (*shared)(state.status());
    } else {
      (*shared)(ToModelStatus(model, *state, ModelReads::kResidency));
    }
  });
  if (!queued) {
    (*shared)(absl::UnavailableError("too many model loads wait already; retry when they are done"));
  }
}

absl::Status ModelControl::Unload(absl::string_view model) {
  return repository_->UnloadModel(model);
}

}  // namespace sparse
