#include "server/inference_service.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/process_cpu.h"
#include "engine/matmul_kernel.h"
#include "engine/status_macros.h"
#include "common/client_text.h"
#include "server/grpc_status.h"
#include "server/raw_unary.h"

namespace sparse {
namespace {

using Clock = std::chrono::steady_clock;
using sparse::v1::PredictRequest;
using sparse::v1::PredictResponse;

void FillStatus(const std::string& name, const ModelState& state,
                sparse::v1::ModelStatus* out) {
  out->set_name(name);
  out->set_serving_version(state.versions.empty() ? 0 : state.versions.rbegin()->first);
  for (const auto& [number, servable] : state.versions) {
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
  for (const auto& [number, failure] : state.failures) {
    sparse::v1::VersionFailure* f = out->add_failed_versions();
    f->set_version(number);
    f->set_error(failure.error);
  }
  out->set_config_error(state.config_error);
}

// The checks that need no compute, run on the gRPC thread before a request
// is queued: so a bad request gets its own code even when the queue is full,
// never occupies the queue and never joins a batch. Returns the version to run.
absl::StatusOr<std::shared_ptr<const Servable>> Admit(const ModelRepository& repository,
                                                      int64_t max_batch_rows,
                                                      const PredictRequest& request, bool dense) {
  ASSIGN_OR_RETURN(std::shared_ptr<const Servable> servable,
                   repository.Find(request.model(), request.version()));
  const LoadedModel& loaded = servable->loaded;
  const Model* model = dense ? static_cast<const Model*>(loaded.dense.get()) : loaded.sparse.get();
  if (model == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model '", ClientText(request.model()), "' version ", servable->version,
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
        "model '", ClientText(request.model()), "' takes ", d,
        " inputs per row: expected rows x d = ", rows, " x ", d, " = ", rows * d, " values, got ",
        request.inputs_size()));
  }
  // Every value finite, checked per request: a NaN names this request's own
  // row, and never reaches a batch shared with other requests.
  RETURN_IF_ERROR(
      ValidateBatch(absl::MakeConstSpan(request.inputs().data(), request.inputs_size()), rows, d));
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

const Model& PathModel(const Servable& servable, bool dense) {
  const LoadedModel& loaded = servable.loaded;
  return dense ? static_cast<const Model&>(*loaded.dense) : *loaded.sparse;
}

int64_t NanosBetween(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(to - from).count();
}

// Fills `response` for rows [first_row, first_row + rows) of a batch of
// `batch_rows` rows that ran as one (`batch` holds its FLOPs and times;
// FLOPs per row are the same for every row of a model, so a request's share
// is exact). `outputs` is the batch's output (null when the kernels wrote
// into the response already); `route` the batch's route, or null.
void FillResponse(const Servable& servable, bool dense, const PredictRequest& request,
                  const PredictStats& batch, int64_t batch_rows, int64_t first_row,
                  const float* outputs, const Route* route, Clock::time_point arrival,
                  Clock::time_point start, PredictResponse* response) {
  const LoadedModel& loaded = servable.loaded;
  const int64_t rows = request.rows(), o = PathModel(servable, dense).info().output_dim;
  if (outputs != nullptr) {
    response->mutable_outputs()->Add(outputs + first_row * o, outputs + (first_row + rows) * o);
  }
  response->set_model(servable.model);
  response->set_version(servable.version);
  response->set_rows(rows);
  response->set_output_dim(o);
  response->set_dense_cost_only(dense && loaded.dense_cost_only);
  sparse::v1::Cost* cost = response->mutable_cost();
  cost->set_flops(batch.flops / batch_rows * rows);
  cost->set_dense_flops(loaded.dense != nullptr ? rows * loaded.dense->info().flops_per_row : 0);
  cost->set_queue_ns(NanosBetween(arrival, start));
  cost->set_route_ns(batch.route_ns);
  cost->set_compute_ns(batch.compute_ns);
  cost->set_batch_size(batch_rows);
  if (route != nullptr && request.return_route() && !dense) {
    sparse::v1::Route* r = response->mutable_route();
    const int64_t keys = route->keys_per_row, experts = route->experts_per_row;
    r->set_keys_per_row(keys);
    r->mutable_bucket_keys()->Add(route->bucket_keys.begin() + first_row * keys,
                                  route->bucket_keys.begin() + (first_row + rows) * keys);
    for (int64_t i = first_row * keys; i < (first_row + rows) * keys; ++i) {
      r->add_bucket_missed(route->bucket_missed[i] != 0);
    }
    r->set_experts_per_row(experts);
    r->mutable_expert_ids()->Add(route->expert_ids.begin() + first_row * experts,
                                 route->expert_ids.begin() + (first_row + rows) * experts);
  }
  cost->set_total_ns(NanosBetween(arrival, Clock::now()));
}

// Runs one admitted request on the calling thread (a worker or, for a cheap
// request, the gRPC thread); the kernels write straight into the response.
absl::Status Handle(const Servable& servable, const PredictRequest& request, bool dense,
                    Clock::time_point arrival, PredictResponse* response) {
  const auto start = Clock::now();
  const Model& model = PathModel(servable, dense);
  const int64_t rows = request.rows(), o = model.info().output_dim;
  response->mutable_outputs()->Resize(static_cast<int>(rows * o), 0.0f);
  PredictStats stats;
  Route route;
  const bool want_route = request.return_route() && !dense;
  RETURN_IF_ERROR(model.Predict(absl::MakeConstSpan(request.inputs().data(), request.inputs_size()),
                                rows, absl::MakeSpan(response->mutable_outputs()->mutable_data(), rows * o),
                                &stats, want_route ? &route : nullptr));
  FillResponse(servable, dense, request, stats, rows, 0, nullptr, want_route ? &route : nullptr,
               arrival, start, response);
  return absl::OkStatus();
}

// Finishes a request whose deadline passed or whose client left while it
// was queued, before any compute; false if it is still wanted.
bool DropIfStale(const PendingRequest& p) {
  // An in-process caller (no gRPC call) has no deadline and cannot leave.
  if (p.context == nullptr) return false;
  // gRPC also cancels a call at its deadline, so the deadline is checked
  // first to report the right code.
  if (p.context->deadline() < std::chrono::system_clock::now()) {
    p.done(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                        "deadline passed while the request was queued"));
    return true;
  }
  if (p.context->IsCancelled()) {
    p.done(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled while queued"));
    return true;
  }
  return false;
}

// Runs queued requests of one version and path as one batch: their rows
// are concatenated and computed together (a DSM groups them by expert, an
// LSH table projects them in one product), then each gets its own rows.
// A request fails alone: each row's outputs depend on that row only, so an
// output that overflows fails the request that sent the row, naming its own
// row, and the others get their answers (and their own rows' FLOPs). Should
// the batch fail as a whole (it cannot for admitted requests, but oneDNN may
// still), each request is run again on its own.
void RunBatch(const Servable& servable, bool dense, std::vector<PendingRequest> batch) {
  const auto start = Clock::now();
  std::vector<PendingRequest> live;
  for (PendingRequest& p : batch) {
    if (!DropIfStale(p)) live.push_back(std::move(p));
  }
  if (live.empty()) return;
  UseOneKernelThread();
  if (live.size() == 1) {
    PendingRequest& p = live.front();
    p.done(ToGrpcStatus(Handle(servable, *p.request, dense, p.arrival, p.response)));
    return;
  }
  const Model& model = PathModel(servable, dense);
  const int64_t d = model.info().input_dim, o = model.info().output_dim;
  int64_t rows = 0;
  bool want_route = false;
  for (const PendingRequest& p : live) {
    rows += p.request->rows();
    want_route = want_route || (p.request->return_route() && !dense);
  }
  std::vector<float> x;
  x.reserve(rows * d);
  for (const PendingRequest& p : live) x.insert(x.end(), p.request->inputs().begin(), p.request->inputs().end());
  std::vector<float> y(rows * o, 0.0f);
  PredictStats stats;
  Route route;
  const absl::Status s =
      model.PredictRows(x, rows, absl::MakeSpan(y), &stats, want_route ? &route : nullptr);
  if (!s.ok()) {
    for (PendingRequest& p : live) {
      p.done(ToGrpcStatus(Handle(servable, *p.request, dense, p.arrival, p.response)));
    }
    return;
  }
  int64_t first = 0;
  for (PendingRequest& p : live) {
    const int64_t own_rows = p.request->rows();
    const absl::Status own =
        CheckOutputs(absl::MakeConstSpan(y).subspan(first * o, own_rows * o), o);
    if (own.ok()) {
      FillResponse(servable, dense, *p.request, stats, rows, first, y.data(),
                   want_route ? &route : nullptr, p.arrival, start, p.response);
    }
    first += own_rows;
    p.done(ToGrpcStatus(own));
  }
}

}  // namespace

InferenceService::InferenceService(const ModelRepository* repository, WorkerPool* pool,
                                   const Options& options)
    : repository_(repository),
      pool_(pool),
      options_(options),
      start_(Clock::now()) {}

grpc::ServerUnaryReactor* InferenceService::Predict(grpc::CallbackServerContext* context,
                                                    const grpc::ByteBuffer* request,
                                                    grpc::ByteBuffer* response) {
  return Infer(context, request, response, /*dense=*/false);
}

grpc::ServerUnaryReactor* InferenceService::PredictDense(grpc::CallbackServerContext* context,
                                                         const grpc::ByteBuffer* request,
                                                         grpc::ByteBuffer* response) {
  return Infer(context, request, response, /*dense=*/true);
}

grpc::ServerUnaryReactor* InferenceService::Infer(grpc::CallbackServerContext* context,
                                                  const grpc::ByteBuffer* request,
                                                  grpc::ByteBuffer* response, bool dense) {
  return ServeUnary<PredictRequest, PredictResponse>(
      context, request, response,
      [this, context, dense](const PredictRequest& r, PredictResponse* out, UnaryDone done) {
        Run(context, &r, out, dense, std::move(done));
      });
}

void InferenceService::Run(grpc::CallbackServerContext* context, const PredictRequest* request,
                           PredictResponse* response, bool dense,
                           std::function<void(grpc::Status)> done) {
  const auto arrival = Clock::now();
  // Counted in flight until answered, so a drain knows when it is done.
  in_flight_.fetch_add(1, std::memory_order_relaxed);
  done = [this, request, dense, response, done = std::move(done)](grpc::Status s) {
    // ServerMetrics counts a model that is not loaded under model="".
    if (options_.metrics != nullptr) {
      options_.metrics->Observe(request->model(), dense, s, response->cost());
    }
    done(std::move(s));
    in_flight_.fetch_sub(1, std::memory_order_release);
  };
  if (draining_.load(std::memory_order_relaxed)) {
    done(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      "sparse-server is shutting down; send the request to another replica"));
    return;
  }
  absl::StatusOr<std::shared_ptr<const Servable>> servable =
      Admit(*repository_, options_.max_batch_rows, *request, dense);
  if (!servable.ok()) {
    done(ToGrpcStatus(servable.status()));
    return;
  }
  const Servable* servable_ref = servable->get();
  if (request->rows() * PathModel(*servable_ref, dense).info().flops_per_row <=
      options_.inline_max_flops) {
    UseOneKernelThread();
    done(ToGrpcStatus(Handle(**servable, *request, dense, arrival, response)));
    return;
  }
  PendingRequest pending{context, request, response, arrival, std::move(done)};
  if (servable_ref->batcher(dense).enabled()) {
    Enqueue(*std::move(servable), dense, std::move(pending));
    return;
  }
  // Shared: if the queue is full the task is dropped, and `done` still runs.
  auto shared = std::make_shared<PendingRequest>(std::move(pending));
  const bool queued = pool_->Submit([shared, dense, servable = *std::move(servable)] {
    RunBatch(*servable, dense, {std::move(*shared)});
  });
  if (!queued) {
    shared->done(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                              "the inference queue is full; retry with backoff"));
  }
}

void InferenceService::Enqueue(std::shared_ptr<const Servable> servable, bool dense,
                               PendingRequest pending) {
  switch (servable->batcher(dense).Add(&pending)) {
    case Batcher::AddResult::kFull:
      pending.done(grpc::Status(
          grpc::StatusCode::UNAVAILABLE,
          absl::StrCat("the batching queue of model '", servable->model,
                       "' is full (dynamic_batching.max_queue_size); retry with backoff")));
      return;
    case Batcher::AddResult::kQueued:
      return;
    case Batcher::AddResult::kQueuedScheduleDrain:
      ScheduleDrain(std::move(servable), dense);
      return;
  }
}

void InferenceService::ScheduleDrain(std::shared_ptr<const Servable> servable, bool dense) {
  const bool queued = pool_->Submit([this, servable, dense] {
    Batcher& batcher = servable->batcher(dense);
    bool another = false;
    std::vector<PendingRequest> batch = batcher.Take(&another);
    if (another) ScheduleDrain(servable, dense);
    if (batch.empty()) return;
    int64_t rows = 0;
    for (const PendingRequest& p : batch) rows += p.request->rows();
    RunBatch(*servable, dense, std::move(batch));
    batcher.Finished(rows);
  });
  if (!queued) {
    for (PendingRequest& p : servable->batcher(dense).TakeAll()) {
      p.done(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "the inference queue is full; retry with backoff"));
    }
  }
}

bool InferenceService::Drain(std::chrono::system_clock::time_point deadline) {
  draining_.store(true, std::memory_order_relaxed);
  while (in_flight_.load(std::memory_order_acquire) > 0) {
    if (std::chrono::system_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

grpc::ServerUnaryReactor* InferenceService::Echo(grpc::CallbackServerContext* context,
                                                 const grpc::ByteBuffer* request,
                                                 grpc::ByteBuffer* response) {
  const auto arrival = Clock::now();
  // A model of zero FLOPs: answered on the gRPC thread, like any request
  // under inline_max_flops.
  return ServeUnaryNow<sparse::v1::EchoRequest, sparse::v1::EchoResponse>(
      context, request, response,
      [arrival](const sparse::v1::EchoRequest& r, sparse::v1::EchoResponse* out) {
        out->set_payload(r.payload());
        out->set_queue_ns(NanosBetween(arrival, Clock::now()));
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* InferenceService::GetServerStats(grpc::CallbackServerContext* context,
                                                           const grpc::ByteBuffer* request,
                                                           grpc::ByteBuffer* response) {
  return ServeUnaryNow<sparse::v1::ServerStatsRequest, sparse::v1::ServerStats>(
      context, request, response,
      [this](const sparse::v1::ServerStatsRequest&, sparse::v1::ServerStats* out) {
        const ProcessCpu cpu = ReadProcessCpu();
        out->set_cpu_user_ns(cpu.user_ns);
        out->set_cpu_system_ns(cpu.system_ns);
        out->set_uptime_ns(NanosBetween(start_, Clock::now()));
        out->set_cores(UsableCores());
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* InferenceService::ListModels(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request,
                                                       grpc::ByteBuffer* response) {
  return ServeUnaryNow<sparse::v1::ListModelsRequest, sparse::v1::ListModelsResponse>(
      context, request, response,
      [this](const sparse::v1::ListModelsRequest&, sparse::v1::ListModelsResponse* out) {
        for (const auto& [name, state] : *repository_->snapshot()) {
          FillStatus(name, state, out->add_models());
        }
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* InferenceService::GetModel(grpc::CallbackServerContext* context,
                                                     const grpc::ByteBuffer* request,
                                                     grpc::ByteBuffer* response) {
  return ServeUnaryNow<sparse::v1::GetModelRequest, sparse::v1::ModelStatus>(
      context, request, response,
      [this](const sparse::v1::GetModelRequest& r, sparse::v1::ModelStatus* out) -> absl::Status {
        const std::shared_ptr<const RepositorySnapshot> snapshot = repository_->snapshot();
        auto it = snapshot->find(r.model());
        // Find() words the error (and lists what is loaded).
        if (it == snapshot->end()) return repository_->Find(r.model(), 0).status();
        FillStatus(it->first, it->second, out);
        return absl::OkStatus();
      });
}

ModelControlService::ModelControlService(ModelRepository* repository) : repository_(repository) {}

grpc::ServerUnaryReactor* ModelControlService::LoadModel(grpc::CallbackServerContext* context,
                                                         const grpc::ByteBuffer* request,
                                                         grpc::ByteBuffer* response) {
  return ServeUnary<sparse::v1::LoadModelRequest, sparse::v1::ModelStatus>(
      context, request, response,
      [this](const sparse::v1::LoadModelRequest& r, sparse::v1::ModelStatus* out, UnaryDone done) {
        // Loading reads, validates and warms up whole checkpoints (seconds
        // for a big one): on its own thread, never on one of gRPC's. The
        // server's shutdown waits for the call, so the repository outlives
        // the thread's use.
        std::thread([this, &r, out, done = std::move(done)] {
          absl::StatusOr<ModelState> state = repository_->LoadModel(r.model());
          if (state.ok()) FillStatus(r.model(), *state, out);
          done(ToGrpcStatus(state.status()));
        }).detach();
      });
}

grpc::ServerUnaryReactor* ModelControlService::UnloadModel(grpc::CallbackServerContext* context,
                                                           const grpc::ByteBuffer* request,
                                                           grpc::ByteBuffer* response) {
  return ServeUnaryNow<sparse::v1::UnloadModelRequest, sparse::v1::UnloadModelResponse>(
      context, request, response,
      [this](const sparse::v1::UnloadModelRequest& r, sparse::v1::UnloadModelResponse*) {
        return repository_->UnloadModel(r.model());
      });
}

}  // namespace sparse
