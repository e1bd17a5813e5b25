#include "server/inference_service.h"

#include <algorithm>
#include <chrono>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/process_cpu.h"
#include "engine/matmul_kernel.h"
#include "engine/status_macros.h"
#include "server/grpc_status.h"

namespace sparse {
namespace {

using Clock = std::chrono::steady_clock;
using sparse::v1::PredictRequest;
using sparse::v1::PredictResponse;

void FillStatus(const std::string& name, const ModelRepository::Versions& versions,
                sparse::v1::ModelStatus* out) {
  out->set_name(name);
  out->set_serving_version(versions.rbegin()->first);
  for (const auto& [number, servable] : versions) {
    const LoadedModel& m = servable->loaded;
    const ModelInfo& info = m.sparse->info();
    sparse::v1::VersionStatus* v = out->add_versions();
    v->set_version(number);
    v->set_kind(std::string(ModelKindName(info.kind)));
    v->set_description(info.description);
    v->set_input_dim(info.input_dim);
    v->set_output_dim(info.output_dim);
    v->set_flops_per_row(info.flops_per_row);
    v->set_parameters(info.parameters);
    v->set_has_dense(m.dense != nullptr);
    v->set_dense_cost_only(m.dense_cost_only);
    if (m.dense != nullptr) {
      v->set_dense_flops_per_row(m.dense->info().flops_per_row);
      v->set_dense_parameters(m.dense->info().parameters);
    }
    for (const auto& [key, value] : m.info) (*v->mutable_info())[key] = value;
  }
}

// The checks that need no compute, run on the gRPC thread before a request
// is queued: so a bad request gets its own code even when the queue is full,
// and never occupies the queue. Returns the version to run.
absl::StatusOr<std::shared_ptr<const Servable>> Admit(const ModelRepository& repository,
                                                      int64_t max_batch_rows,
                                                      const PredictRequest& request, bool dense) {
  ASSIGN_OR_RETURN(std::shared_ptr<const Servable> servable,
                   repository.Find(request.model(), request.version()));
  const LoadedModel& loaded = servable->loaded;
  const Model* model = dense ? static_cast<const Model*>(loaded.dense.get()) : loaded.sparse.get();
  if (model == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model '", request.model(), "' version ", servable->version,
        " has no dense twin; PredictDense needs one (train it with sparse-train)"));
  }
  const int64_t rows = request.rows();
  const int64_t d = model->info().input_dim;
  if (rows < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "empty batch: rows must be >= 1, got ", rows, " (inputs hold rows x ", d, " values)"));
  }
  if (rows > max_batch_rows) {
    return absl::InvalidArgumentError(absl::StrCat("batch of ", rows,
                                                   " rows exceeds the limit of ", max_batch_rows));
  }
  const int64_t o = model->info().output_dim;
  if (rows * std::max(d, o) > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch of ", rows, " rows x ", std::max(d, o), " values exceeds what one message can carry (",
        std::numeric_limits<int>::max(), " values); send fewer rows"));
  }
  if (request.inputs_size() != rows * d) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model '", request.model(), "' takes ", d, " inputs per row: expected rows x d = ", rows,
        " x ", d, " = ", rows * d, " values, got ", request.inputs_size()));
  }
  return servable;
}

// oneDNN runs with one OpenMP thread on every thread that computes (one
// request per core, DESIGN.md §5); gRPC's threads are set on first use.
void UseOneKernelThread() {
  thread_local bool set = false;
  if (!set) {
    SetKernelThreads(1);
    set = true;
  }
}

// Runs one admitted request on the calling thread (a worker or, for a cheap
// request, the gRPC thread).
absl::Status Handle(const Servable& servable, const PredictRequest& request, bool dense,
                    Clock::time_point arrival, PredictResponse* response) {
  const auto start = Clock::now();
  const LoadedModel& loaded = servable.loaded;
  const Model* model = dense ? static_cast<const Model*>(loaded.dense.get()) : loaded.sparse.get();
  const int64_t rows = request.rows(), o = model->info().output_dim;
  response->mutable_outputs()->Resize(static_cast<int>(rows * o), 0.0f);
  PredictStats stats;
  Route route;
  const bool want_route = request.return_route() && !dense;
  RETURN_IF_ERROR(model->Predict(absl::MakeConstSpan(request.inputs().data(), request.inputs_size()),
                                 rows, absl::MakeSpan(response->mutable_outputs()->mutable_data(), rows * o),
                                 &stats, want_route ? &route : nullptr));
  response->set_model(servable.model);
  response->set_version(servable.version);
  response->set_rows(rows);
  response->set_output_dim(o);
  response->set_dense_cost_only(dense && loaded.dense_cost_only);
  sparse::v1::Cost* cost = response->mutable_cost();
  cost->set_flops(stats.flops);
  cost->set_dense_flops(loaded.dense != nullptr ? rows * loaded.dense->info().flops_per_row : 0);
  cost->set_queue_ns(std::chrono::duration_cast<std::chrono::nanoseconds>(start - arrival).count());
  cost->set_route_ns(stats.route_ns);
  cost->set_compute_ns(stats.compute_ns);
  cost->set_batch_size(rows);
  if (want_route) {
    sparse::v1::Route* r = response->mutable_route();
    r->set_keys_per_row(route.keys_per_row);
    r->mutable_bucket_keys()->Add(route.bucket_keys.begin(), route.bucket_keys.end());
    for (uint8_t missed : route.bucket_missed) r->add_bucket_missed(missed != 0);
    r->set_experts_per_row(route.experts_per_row);
    r->mutable_expert_ids()->Add(route.expert_ids.begin(), route.expert_ids.end());
  }
  cost->set_total_ns(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - arrival).count());
  return absl::OkStatus();
}

}  // namespace

InferenceService::InferenceService(const ModelRepository* repository, WorkerPool* pool,
                                   const Options& options)
    : repository_(repository),
      pool_(pool),
      options_(options),
      start_(Clock::now()) {}

grpc::ServerUnaryReactor* InferenceService::Predict(grpc::CallbackServerContext* context,
                                                    const PredictRequest* request,
                                                    PredictResponse* response) {
  return Infer(context, request, response, /*dense=*/false);
}

grpc::ServerUnaryReactor* InferenceService::PredictDense(grpc::CallbackServerContext* context,
                                                         const PredictRequest* request,
                                                         PredictResponse* response) {
  return Infer(context, request, response, /*dense=*/true);
}

grpc::ServerUnaryReactor* InferenceService::Infer(grpc::CallbackServerContext* context,
                                                  const PredictRequest* request,
                                                  PredictResponse* response, bool dense) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Run(context, request, response, dense, [reactor](grpc::Status s) { reactor->Finish(s); });
  return reactor;
}

void InferenceService::Run(grpc::CallbackServerContext* context, const PredictRequest* request,
                           PredictResponse* response, bool dense,
                           std::function<void(grpc::Status)> done) {
  const auto arrival = Clock::now();
  if (options_.metrics != nullptr) {
    // ServerMetrics counts a model that is not loaded under model="".
    done = [metrics = options_.metrics, request, dense, response,
            done = std::move(done)](grpc::Status s) {
      metrics->Observe(request->model(), dense, s, response->cost());
      done(std::move(s));
    };
  }
  absl::StatusOr<std::shared_ptr<const Servable>> servable =
      Admit(*repository_, options_.max_batch_rows, *request, dense);
  if (!servable.ok()) {
    done(ToGrpcStatus(servable.status()));
    return;
  }
  const LoadedModel& loaded = (*servable)->loaded;
  const Model& model = dense ? static_cast<const Model&>(*loaded.dense) : *loaded.sparse;
  if (request->rows() * model.info().flops_per_row <= options_.inline_max_flops) {
    UseOneKernelThread();
    done(ToGrpcStatus(Handle(**servable, *request, dense, arrival, response)));
    return;
  }
  // Shared: if the queue is full the task is dropped, and `done` still runs.
  auto finish = std::make_shared<std::function<void(grpc::Status)>>(std::move(done));
  const bool queued = pool_->Submit([context, request, response, dense, arrival, finish,
                                     servable = *std::move(servable)] {
    // A request whose deadline passed or whose client left while queued is
    // dropped before compute. (gRPC also cancels a call at its deadline, so
    // the deadline is checked first to report the right code.)
    if (context->deadline() < std::chrono::system_clock::now()) {
      (*finish)(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                             "deadline passed while the request was queued"));
      return;
    }
    if (context->IsCancelled()) {
      (*finish)(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled while queued"));
      return;
    }
    (*finish)(ToGrpcStatus(Handle(*servable, *request, dense, arrival, response)));
  });
  if (!queued) {
    (*finish)(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                           "the inference queue is full; retry with backoff"));
  }
}

grpc::ServerUnaryReactor* InferenceService::Echo(grpc::CallbackServerContext* context,
                                                 const sparse::v1::EchoRequest* request,
                                                 sparse::v1::EchoResponse* response) {
  const auto arrival = Clock::now();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  // A model of zero FLOPs: answered on the gRPC thread, like any request
  // under inline_max_flops.
  response->set_payload(request->payload());
  response->set_queue_ns(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - arrival).count());
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::GetServerStats(grpc::CallbackServerContext* context,
                                                           const sparse::v1::ServerStatsRequest*,
                                                           sparse::v1::ServerStats* response) {
  const ProcessCpu cpu = ReadProcessCpu();
  response->set_cpu_user_ns(cpu.user_ns);
  response->set_cpu_system_ns(cpu.system_ns);
  response->set_uptime_ns(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start_).count());
  response->set_cores(UsableCores());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::ListModels(grpc::CallbackServerContext* context,
                                                       const sparse::v1::ListModelsRequest*,
                                                       sparse::v1::ListModelsResponse* response) {
  for (const auto& [name, versions] : repository_->models()) {
    FillStatus(name, versions, response->add_models());
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::GetModel(grpc::CallbackServerContext* context,
                                                     const sparse::v1::GetModelRequest* request,
                                                     sparse::v1::ModelStatus* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<std::shared_ptr<const Servable>> found = repository_->Find(request->model(), 0);
  if (!found.ok()) {
    reactor->Finish(ToGrpcStatus(found.status()));
    return reactor;
  }
  FillStatus(request->model(), repository_->models().at(request->model()), response);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace sparse
