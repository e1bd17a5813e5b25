#include "model_store/model_loader.h"

#include <algorithm>
#include <new>
#include <stdexcept>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/matmul_kernel.h"

namespace sparse {
namespace {

// A front's part: the router (or hash functions) and a0 read from the
// version, the model made by `make_front`, and the dense twin whole when the
// version has one (a front has no cost-only twin: that would need every
// expert).
absl::StatusOr<LoadedModel> LoadFront(const std::string& model, int64_t version,
                                      const std::string& dir, const LoadOptions& options,
                                      const FrontFactory& make_front) {
  if (make_front == nullptr) {
    return absl::FailedPreconditionError("this server has no shards to route a front's rows to");
  }
  ASSIGN_OR_RETURN(Checkpoint checkpoint, ReadCheckpoint(dir, options));
  LoadedModel loaded;
  ASSIGN_OR_RETURN(loaded.sparse, make_front(model, version, options.precision, checkpoint));
  if (checkpoint.dense.has_value()) {
    ASSIGN_OR_RETURN(loaded.dense, DenseModel::Create(*checkpoint.dense, options.precision));
  }
  loaded.info = std::move(checkpoint.info);
  loaded.model_sha256 = checkpoint.model_sha256;
  return loaded;
}

absl::StatusOr<std::unique_ptr<Servable>> LoadAndWarmUp(const std::string& model, int64_t version,
                                                        const std::string& dir,
                                                        const LoaderOptions& options,
                                                        Precision precision) {
  const int64_t warmup_rows = std::min<int64_t>(options.max_batch_rows, 128);
  LoadOptions load_options;
  load_options.max_bytes = options.max_model_bytes;
  load_options.batch_rows = warmup_rows;
  load_options.threads = options.workers + 1;  // the workers and the loading thread
  load_options.budget_name = "--max_model_bytes";
  load_options.precision = precision;
  load_options.part = options.part;
  load_options.cost_only_dense = options.cost_only_dense;
  if (!options.weight_cache_dir.empty()) {
    load_options.weight_cache_dir = absl::StrCat(options.weight_cache_dir, "/", model, "/", version);
  }
  load_options.weight_verify = options.weight_verify;
  absl::StatusOr<LoadedModel> loaded;
  if (options.part.role == ModelPart::Role::kFront) {
    loaded = LoadFront(model, version, dir, load_options, options.make_front);
  } else {
    loaded = LoadCheckpoint(dir, load_options);
  }
  if (!loaded.ok()) return loaded.status();
  // Warm up on this thread, with one kernel thread as the workers use.
  SetKernelThreads(1);
  for (const Model* path : {static_cast<const Model*>(loaded->sparse.get()),
                            static_cast<const Model*>(loaded->dense.get())}) {
    if (path == nullptr) continue;
    const int64_t d = path->info().input_dim, o = path->info().output_dim;
    std::vector<float> x(warmup_rows * d, 0.0f), y(warmup_rows * o);
    for (int64_t rows = 1; rows <= warmup_rows; rows *= 2) {
      PredictStats stats;
      const Route given = path->WarmupRoute(rows);
      PredictOptions predict_options;
      if (path->info().needs_given_route) predict_options.given = &given;
      const absl::Status s =
          path->Predict(absl::MakeConstSpan(x.data(), rows * d), rows,
                        absl::MakeSpan(y.data(), rows * o), &stats, nullptr, predict_options);
      if (!s.ok()) {
        return absl::FailedPreconditionError(
            absl::StrCat("warm-up prediction of ", rows, " rows failed: ", s.message()));
      }
    }
  }
  auto servable = std::make_unique<Servable>();
  servable->model = model;
  servable->version = version;
  servable->loaded = *std::move(loaded);
  servable->warmup_routing = servable->loaded.sparse->Routing();
  servable->precision = precision;
  servable->part = options.part;
  return servable;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Servable>> LoadServable(const std::string& model, int64_t version,
                                                       const std::string& dir,
                                                       const LoaderOptions& options,
                                                       Precision precision) {
  // Whatever a checkpoint holds, running out of memory while loading or
  // warming it up fails this version, never the process.
  try {
    return LoadAndWarmUp(model, version, dir, options, precision);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        "out of memory while loading or warming up the version (std::bad_alloc); see "
        "--max_model_bytes");
  } catch (const std::length_error& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat("a size too large to allocate while loading the version (", e.what(),
                     "); see --max_model_bytes"));
  }
}

}  // namespace sparse
