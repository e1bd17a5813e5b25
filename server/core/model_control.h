// ModelControl: explicit loading and unloading of models (--model_control),
// for every frontend that offers it (sparse.v1.ModelControl, the Open
// Inference Protocol's RepositoryModelLoad / RepositoryModelUnload).
//
// A load reads, validates and warms up whole checkpoints (seconds for a big
// one), so it runs on one of this object's two loader threads, never on a
// frontend's: two models load side by side (each model has its own lock in
// the repository). The destructor finishes the loads asked for and joins
// the threads. Thread-safe; the repository must outlive it.
#ifndef SPARSE_SERVER_CORE_MODEL_CONTROL_H_
#define SPARSE_SERVER_CORE_MODEL_CONTROL_H_

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/core/model_reads.h"
#include "server/core/worker_pool.h"

namespace sparse {

class ModelRepository;  // model_store/model_repository.h

class ModelControl {
 public:
  explicit ModelControl(ModelRepository* repository) : repository_(repository) {}

  // (Re)loads `model` on a loader thread and calls `done` there with the
  // model's state, or with the reason nothing of it serves (its previous
  // versions keep serving). UNAVAILABLE, at once, when 64 loads wait already.
  void Load(std::string model, std::function<void(absl::StatusOr<ModelStatus>)> done);
  // Stops serving every version of `model`; NOT_FOUND when none is loaded.
  absl::Status Unload(absl::string_view model);

 private:
  ModelRepository* const repository_;
  WorkerPool loader_{2, 64};
};

}  // namespace sparse

#endif  // SPARSE_SERVER_CORE_MODEL_CONTROL_H_
