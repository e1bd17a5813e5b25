#include "server/core/inference_core.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/client_text.h"
#include "common/internal_error.h"
#include "common/page_faults.h"
#include "common/status_macros.h"
#include "engine/matmul_kernel.h"
#include "model_store/model_repository.h"

namespace sparse {
namespace {

using Clock = std::chrono::steady_clock;

int64_t NanosBetween(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(to - from).count();
}

const Model* PathModel(const Servable& servable, bool dense) {
  const LoadedModel& loaded = servable.loaded;
  return dense ? static_cast<const Model*>(loaded.dense.get()) : loaded.sparse.get();
}

// A front's shard call (InferRequest::shard_call) reaches the shard it
// means: this server is that part of the model, and the call names a version.
absl::Status CheckShardTarget(const std::optional<ShardSpec>& shard, const InferRequest& request) {
  const InferRequest::ShardCall& call = *request.shard_call;
  if (!shard.has_value()) {
    return absl::FailedPreconditionError(
        "this server is not a shard of a sharded model (start it with --shard=i/N)");
  }
  if (call.shard_index != shard->index || call.shard_count != shard->count) {
    return absl::FailedPreconditionError(absl::StrCat(
        "this server is shard ", shard->ToString(), "; the front asked for shard ",
        call.shard_index, "/", call.shard_count, " (check the front's --shard_targets order)"));
  }
  if (request.version < 1) {
    return absl::InvalidArgumentError("a shard call names its front's version (>= 1)");
  }
  return absl::OkStatus();
}

// The shard serves the version the front routes with as the front does: at
// the same precision, from the same files.
absl::Status CheckShardVersion(const Servable& servable, const InferRequest& request) {
  const InferRequest::ShardCall& call = *request.shard_call;
  if (servable.precision != call.precision) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model '", ClientText(request.model), "' version ", request.version, " serves at ",
        PrecisionName(servable.precision), " on this shard, the front at ",
        PrecisionName(call.precision), " (config.pbtxt is read by both: is it being changed?)"));
  }
  if (!call.model_sha256.empty() && call.model_sha256 != servable.loaded.model_sha256) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model '", ClientText(request.model), "' version ", request.version,
        " holds other files on this shard than on the front (model.safetensors SHA-256 ",
        servable.loaded.model_sha256, " here): front and shards must read one repository"));
  }
  return absl::OkStatus();
}

// A request of `rows` rows over the server's limit: the two counts and the
// flag that sets the limit, for every protocol alike.
absl::Status TooManyRowsError(int64_t rows, int64_t max_batch_rows) {
  return absl::InvalidArgumentError(absl::StrCat(
      "batch of ", rows, " rows exceeds the limit of ", max_batch_rows,
      " rows per request (sparse-server --max_batch_rows): send at most ", max_batch_rows,
      " rows per request, or start the server with a larger --max_batch_rows"));
}

// The checks that need no compute, run on the caller's thread before a
// request is queued (admission happens here and nowhere else): so a bad
// request gets its own code even when the queue is full, never occupies the
// queue and never joins a batch.
absl::Status Admit(const Servable& servable, int64_t max_batch_rows,
                   const InferRequest& request) {
  const Model* model = PathModel(servable, request.dense);
  if (model == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model '", ClientText(request.model), "' version ", servable.version,
        " has no dense twin; PredictDense needs one (train it with sparse-train)"));
  }
  const int64_t rows = request.rows;
  const int64_t d = model->info().input_dim;
  if (rows < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "empty batch: rows must be >= 1, got ", rows, " (inputs hold rows x ", d, " values)"));
  }
  if (rows > max_batch_rows) return TooManyRowsError(rows, max_batch_rows);
  const int64_t o = model->info().output_dim;
  if (rows * std::max(d, o) > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch of ", rows, " rows x ", std::max(d, o), " values exceeds what one message can carry (",
        std::numeric_limits<int>::max(), " values); send fewer rows"));
  }
  if (static_cast<int64_t>(request.inputs.size()) != rows * d) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model '", ClientText(request.model), "' takes ", d,
        " inputs per row: expected rows x d = ", rows, " x ", d, " = ", rows * d, " values, got ",
        request.inputs.size()));
  }
  if (model->info().needs_given_route || request.given_route != nullptr) {
    if (request.given_route == nullptr || !model->info().needs_given_route) {
      return absl::FailedPreconditionError(absl::StrCat(
          "model '", ClientText(request.model), "' version ", servable.version,
          request.given_route == nullptr
              ? " is a shard's part of a sharded model: send predictions to a front server"
              : " routes its own rows: only a shard's part of a sharded model takes a route"));
    }
    RETURN_IF_ERROR(model->CheckGivenRoute(*request.given_route, rows));
  }
  // Every value finite, checked per request: a NaN names this request's own
  // row, and never reaches a batch shared with other requests.
  return ValidateBatch(request.inputs, rows, d);
}

// oneDNN runs with one OpenMP thread on every thread that computes (one
// request per core, DESIGN.md §5); a frontend's threads are set on first use.
void UseOneKernelThread() {
  thread_local bool set = false;
  if (!set) {
    SetKernelThreads(1);
    set = true;
  }
}

// What a batch of `rows` rows did when it ran as one.
struct BatchRun {
  const Servable* servable = nullptr;
  bool dense = false;
  int64_t rows = 0;
  PredictStats stats;
  // Major page faults its compute took on the computing thread (and, for a
  // sharded front, on its shards): common/page_faults.h.
  int64_t major_faults = 0;
  bool want_route = false;       // a request asked for its route
  const Route* route = nullptr;  // the batch's, once computed; null unless wanted
  Clock::time_point start;
};

// Builds the answer of the request whose rows are [first_row, first_row +
// request.rows) of `batch`, its outputs already in response->outputs. The
// one place an answer is built, for a request run alone or batched.
void Answer(const BatchRun& batch, int64_t first_row, const InferRequest& request,
            Clock::time_point arrival, InferResponse* response) {
  const LoadedModel& loaded = batch.servable->loaded;
  const int64_t rows = request.rows;
  response->model = batch.servable->model;
  response->version = batch.servable->version;
  response->rows = rows;
  response->output_dim = PathModel(*batch.servable, batch.dense)->info().output_dim;
  response->dense_cost_only = batch.dense && loaded.dense_cost_only;
  InferCost& cost = response->cost;
  // Rows [first_row, first_row + rows) of the batch get the FLOPs and
  // bytes between their cumulative shares, so the requests' add up to the
  // batch's. FLOPs per row are the same for every row of a model, so their
  // share is exact; a shard's part, whose rows differ, runs each call alone.
  auto share = [&batch](int64_t total, int64_t row) {
    return static_cast<int64_t>(static_cast<__int128>(total) * row / batch.rows);
  };
  cost.flops = share(batch.stats.flops, first_row + rows) - share(batch.stats.flops, first_row);
  cost.dense_flops = loaded.dense != nullptr ? rows * loaded.dense->info().flops_per_row : 0;
  cost.queue_ns = NanosBetween(arrival, batch.start);
  cost.route_ns = batch.stats.route_ns;
  cost.compute_ns = batch.stats.compute_ns;
  cost.batch_rows = batch.rows;
  cost.shards = batch.stats.shards;
  cost.fanout_ns = batch.stats.fanout_ns;
  cost.weight_bytes = share(batch.stats.weight_bytes, first_row + rows) -
                      share(batch.stats.weight_bytes, first_row);
  // Faults, like bytes, are the batch's: whichever request's slice took
  // them, each request gets its rows' share.
  cost.major_faults =
      share(batch.major_faults, first_row + rows) - share(batch.major_faults, first_row);
  response->has_route = batch.route != nullptr && request.return_route && !batch.dense;
  if (response->has_route) {
    const Route& from = *batch.route;
    Route& r = response->route;
    const int64_t keys = from.keys_per_row, experts = from.experts_per_row;
    r.keys_per_row = keys;
    r.bucket_keys.assign(from.bucket_keys.begin() + first_row * keys,
                         from.bucket_keys.begin() + (first_row + rows) * keys);
    r.bucket_missed.assign(from.bucket_missed.begin() + first_row * keys,
                           from.bucket_missed.begin() + (first_row + rows) * keys);
    r.experts_per_row = experts;
    r.expert_ids.assign(from.expert_ids.begin() + first_row * experts,
                        from.expert_ids.begin() + (first_row + rows) * experts);
  }
  cost.total_ns = NanosBetween(arrival, Clock::now());
}

// A request whose deadline passed or whose caller left while it was queued,
// before any compute: its status, or OK if it is still wanted.
absl::Status Stale(const PendingRequest& p) {
  // The deadline first: a gRPC call is also cancelled at its deadline, and
  // the deadline is the code to report then.
  if (p.deadline < absl::Now()) {
    return absl::DeadlineExceededError("the request's deadline passed before it could run");
  }
  if (p.request->cancelled && p.request->cancelled()) {
    return absl::CancelledError("the caller cancelled the request before it could run");
  }
  return absl::OkStatus();
}

// The requests of `batch` still wanted; the others (past their deadline,
// their caller gone) are answered now.
template <typename Finish>
std::vector<PendingRequest> LiveRequests(std::vector<PendingRequest> batch, const Finish& finish) {
  std::vector<PendingRequest> live;
  for (PendingRequest& p : batch) {
    if (absl::Status stale = Stale(p); !stale.ok()) {
      finish(p, stale);
    } else {
      live.push_back(std::move(p));
    }
  }
  return live;
}

// The latest deadline of the batch goes to the shards a front calls; a
// given route comes with a request that runs alone (Infer).
PredictOptions BatchPredictOptions(const std::vector<PendingRequest>& live) {
  PredictOptions options;
  options.deadline = absl::InfinitePast();
  for (const PendingRequest& p : live) options.deadline = std::max(options.deadline, p.deadline);
  if (live.size() == 1) options.given = live.front().request->given_route;
  return options;
}

// Records a batch's execution once it has computed and every request of it
// is answered.
void RecordExecution(const std::shared_ptr<ServableStatistics>& statistics, const BatchRun& run,
                     ExecutionTimes times, Clock::time_point computed_at) {
  if (statistics == nullptr) return;
  times.rows = run.rows;
  times.infer_ns = run.stats.route_ns + run.stats.compute_ns;
  times.output_ns = NanosBetween(computed_at, Clock::now());
  statistics->RecordExecution(run.dense, times);
}

// A lone request, computed straight into its response.
template <typename Finish>
void RunAlone(const Model& model, BatchRun& run, const PredictOptions& options, PendingRequest& p,
              const Finish& finish) {
  const int64_t o = model.info().output_dim;
  const std::shared_ptr<ServableStatistics> statistics = p.statistics;
  std::vector<float>& y = p.response->outputs;
  y.assign(run.rows * o, 0.0f);
  Route route;
  const MajorFaultCounter faults;
  absl::Status s = CatchInternal(ErrorSite::kCompute, [&] {
    FaultPoint(ErrorSite::kCompute);
    return model.PredictAdmitted(p.request->inputs, run.rows, absl::MakeSpan(y), &run.stats,
                                 run.want_route ? &route : nullptr, options);
  });
  run.major_faults = faults.Count();
  if (run.want_route) run.route = &route;
  const bool computed = s.ok();
  const auto computed_at = Clock::now();
  // A shard's partial sums go back as computed, Inf included: the front
  // checks the sums, so its error names the row of the client's request.
  if (s.ok() && !model.info().needs_given_route) s = CheckOutputs(y, o);
  if (s.ok()) Answer(run, 0, *p.request, p.arrival, p.response);
  finish(p, s);
  if (computed) RecordExecution(statistics, run, {}, computed_at);
}

template <typename Finish>
void RunBatch(const Servable& servable, bool dense, std::vector<PendingRequest> batch,
              const Finish& finish);

// Several requests, their rows concatenated and computed together; should
// the batch fail as a whole, each is run again on its own.
template <typename Finish>
void RunTogether(const Model& model, BatchRun& run, const PredictOptions& options,
                 std::vector<PendingRequest>& live, const Finish& finish) {
  const int64_t d = model.info().input_dim, o = model.info().output_dim;
  // Every request of a batch belongs to one servable: one statistics record.
  const std::shared_ptr<ServableStatistics> statistics = live.front().statistics;
  ExecutionTimes times;
  std::vector<float> x;
  x.reserve(run.rows * d);
  for (const PendingRequest& p : live) x.insert(x.end(), p.request->inputs.begin(), p.request->inputs.end());
  times.input_ns = NanosBetween(run.start, Clock::now());
  std::vector<float> y(run.rows * o, 0.0f);
  Route route;
  const MajorFaultCounter faults;
  const absl::Status batch_status = CatchInternal(ErrorSite::kCompute, [&] {
    FaultPoint(ErrorSite::kCompute);
    return model.PredictAdmitted(x, run.rows, absl::MakeSpan(y), &run.stats,
                                 run.want_route ? &route : nullptr, options);
  });
  run.major_faults = faults.Count();
  if (!batch_status.ok()) {
    for (PendingRequest& p : live) {
      std::vector<PendingRequest> alone;
      alone.push_back(std::move(p));
      RunBatch(*run.servable, run.dense, std::move(alone), finish);
    }
    return;
  }
  if (run.want_route) run.route = &route;
  const auto computed_at = Clock::now();
  int64_t first = 0;
  for (PendingRequest& p : live) {
    const int64_t own_rows = p.request->rows;
    const absl::Span<const float> own = absl::MakeConstSpan(y).subspan(first * o, own_rows * o);
    const absl::Status s = CheckOutputs(own, o);
    if (s.ok()) {
      p.response->outputs.assign(own.begin(), own.end());
      Answer(run, first, *p.request, p.arrival, p.response);
    }
    first += own_rows;
    finish(p, s);
  }
  RecordExecution(statistics, run, times, computed_at);
}

// Runs admitted requests of one servable and path as one batch, on this
// thread: their rows are concatenated and computed together (a DSM groups
// them by expert, an LSH table projects them in one product), then each gets
// its own rows. A request fails alone: each row's outputs depend on that row
// only, so an output that overflows fails the request that sent the row,
// naming its own row, and the others get their answers (and their own rows'
// FLOPs). Should the batch fail as a whole (it cannot for admitted requests,
// but oneDNN may still, or throw), each request is run again on its own. A lone
// request is computed straight into its response. `finish(p, status)`
// answers one request.
template <typename Finish>
void RunBatch(const Servable& servable, bool dense, std::vector<PendingRequest> batch,
              const Finish& finish) {
  std::vector<PendingRequest> live = LiveRequests(std::move(batch), finish);
  if (live.empty()) return;
  UseOneKernelThread();
  BatchRun run;
  run.servable = &servable;
  run.dense = dense;
  run.start = Clock::now();
  for (const PendingRequest& p : live) {
    run.rows += p.request->rows;
    run.want_route = run.want_route || (p.request->return_route && !dense);
  }
  const Model& model = *PathModel(servable, dense);
  const PredictOptions options = BatchPredictOptions(live);
  if (live.size() == 1) return RunAlone(model, run, options, live.front(), finish);
  RunTogether(model, run, options, live, finish);
}

// The priority level of a request asking for `priority` (InferRequest::
// priority) of a model scheduled by `config`: Triton's rules. Without
// priority_levels every request runs at level 1 (levels compare across
// models: the worker queue is shared).
absl::StatusOr<int> PriorityLevel(const Scheduling& config, uint32_t priority) {
  const uint32_t levels = config.priority_levels;
  if (levels == 0) return 1;
  if (priority == 0) {
    const uint32_t fallback = config.default_priority_level;
    return static_cast<int>(fallback >= 1 && fallback <= levels ? fallback : levels);
  }
  if (priority > levels) {
    return absl::InvalidArgumentError(absl::StrCat(
        "priority ", priority, " is not one of the model's priority levels 1 (highest) to ",
        levels, " (config.pbtxt priority_levels); 0 asks for its default"));
  }
  return static_cast<int>(priority);
}

// Requests waiting for a worker: `delta` for each of `batch` (one servable's).
void CountQueued(const std::vector<PendingRequest>& batch, bool dense, int64_t delta) {
  for (const PendingRequest& p : batch) {
    if (p.statistics != nullptr) p.statistics->AddQueued(dense, delta);
  }
}

// The worker pool's line for `model`'s work: its own when its config gives
// it a weight or a cap on workers, else the line shared by every model
// without one (first come, first served among them).
WorkerPool::Share ShareOf(const std::string& model, const Scheduling& config) {
  const uint32_t weight = config.limits.worker_weight();
  if (weight == 0 && config.instance_count <= 0) return WorkerPool::Share();
  return WorkerPool::Share{.line = model,
                           .weight = std::max<uint32_t>(1, weight),
                           .max_running = std::max(0, config.instance_count)};
}

}  // namespace

BatchingOptions ToBatchingOptions(const std::optional<sparse::v1::DynamicBatching>& config,
                                  int workers, bool dense) {
  if (!config.has_value()) return BatchingOptions{.enabled = false, .workers = workers};
  using P = sparse::v1::DynamicBatching;
  const bool path_on =
      config->paths() == P::BOTH || config->paths() == (dense ? P::DENSE_ONLY : P::SPARSE_ONLY);
  return BatchingOptions{.enabled = path_on,
                         .workers = workers,
                         .max_batch_rows = config->max_batch_rows() > 0 ? config->max_batch_rows() : 64,
                         .max_queue_delay_us = config->max_queue_delay_us(),
                         .max_queue_size = config->max_queue_size() > 0 ? config->max_queue_size() : 1024};
}

struct InferenceCore::ServableState {
  std::weak_ptr<const Servable> servable;
  Batcher batchers[2];  // sparse, dense
  std::shared_ptr<ServableStatistics> statistics = std::make_shared<ServableStatistics>();
};

InferenceCore::InferenceCore(const ModelRepository* repository, const Options& options)
    : repository_(repository),
      options_(options),
      pool_(std::max(1, options.workers), std::max<int64_t>(1, options.max_queue)) {}

InferenceCore::~InferenceCore() = default;  // pool_ goes first and runs what is queued

void InferenceCore::FinishPending(PendingRequest& p, const absl::Status& status) {
  if (options_.observe) options_.observe(*p.request, status, *p.response);
  // Read now: the request and response may be gone once `done` returns.
  RequestTimes times;
  const bool dense = p.request->dense;
  if (p.statistics != nullptr) {
    times.ok = status.ok();
    times.rows = p.request->rows;
    times.decode_ns = p.request->decode_ns;
    const InferCost& cost = p.response->cost;
    times.queue_ns = cost.queue_ns;
    times.infer_ns = cost.route_ns + cost.compute_ns;
  }
  const auto answering = Clock::now();
  p.done(status);
  if (p.statistics != nullptr) {
    const auto answered = Clock::now();
    times.output_ns = NanosBetween(answering, answered);
    times.total_ns = times.decode_ns + NanosBetween(p.arrival, answered);
    p.statistics->RecordRequest(dense, times);
    p.statistics->AddInFlight(dense, -1);
  }
  // Its place goes to the next request waiting, before the drain can see
  // this one gone.
  if (!p.gate.empty()) gates_.Leave(p.gate);
  absl::MutexLock lock(&mu_);
  --in_flight_;
}

void InferenceCore::Infer(const InferRequest& request, InferResponse* response, InferDone done) {
  const auto arrival = Clock::now();
  bool draining;
  {
    // Counted in flight until answered, so a drain knows when it is done.
    absl::MutexLock lock(&mu_);
    ++in_flight_;
    draining = draining_;
  }
  PendingRequest pending{&request, response, arrival, std::move(done), nullptr};
  pending.deadline = request.timeout == absl::InfiniteDuration()
                         ? request.deadline
                         : std::min(request.deadline, absl::Now() + request.timeout);
  // A front's keep-alive is answered while draining: the version stays
  // retained until the front moves on.
  const bool keepalive = request.shard_call.has_value() && request.rows == 0;
  if (draining && !keepalive) {
    FinishPending(pending, absl::UnavailableError(
                               "sparse-server is shutting down; send the request to another replica"));
    return;
  }
  if (request.shard_call.has_value()) {
    if (absl::Status s = CheckShardTarget(options_.shard, request); !s.ok()) {
      FinishPending(pending, s);
      return;
    }
  }
  Scheduling scheduling;
  absl::StatusOr<std::shared_ptr<const Servable>> servable;
  if (!request.resolved.empty()) {
    servable = request.resolved.servable_;
    if (request.resolved.scheduling_ != nullptr) scheduling = *request.resolved.scheduling_;
  } else {
    servable = repository_->Find(request.model, request.version, &scheduling);
  }
  const std::optional<sparse::v1::DynamicBatching>& batching = scheduling.batching;
  if (!servable.ok()) {
    FinishPending(pending, servable.status());
    return;
  }
  if (request.shard_call.has_value()) {
    if (absl::Status s = CheckShardVersion(**servable, request); !s.ok()) {
      FinishPending(pending, s);
      return;
    }
    (*servable)->MarkUsed();
    if (keepalive) {  // not a request: answered, not observed or counted
      pending.done(absl::OkStatus());
      absl::MutexLock lock(&mu_);
      --in_flight_;
      return;
    }
  }
  std::shared_ptr<ServableState> state = StateFor(*servable);
  pending.statistics = state->statistics;
  pending.statistics->AddInFlight(request.dense, 1);
  if (absl::Status admitted = Admit(**servable, options_.max_batch_rows, request); !admitted.ok()) {
    FinishPending(pending, admitted);
    return;
  }
  absl::StatusOr<int> level = PriorityLevel(scheduling, request.priority);
  if (!level.ok()) {
    FinishPending(pending, level.status());
    return;
  }
  pending.level = *level;
  Admitted admitted{.pending = std::move(pending),
                    .servable = *std::move(servable),
                    .state = std::move(state),
                    .batching = batching,
                    .share = ShareOf(request.model, scheduling)};
  const int32_t instances = scheduling.instance_count;
  admitted.workers = instances > 0 ? std::min(instances, workers()) : workers();
  if (scheduling.limits.max_in_flight() > 0) {
    return EnterGate(std::move(admitted), scheduling.limits);
  }
  Dispatch(std::move(admitted), /*on_worker=*/false);
}

void InferenceCore::EnterGate(Admitted admitted, const sparse::v1::Limits& limits) {
  // Kept here while it waits: the gate holds only how to resume it.
  auto held = std::make_shared<Admitted>(std::move(admitted));
  PendingRequest& pending = held->pending;
  const bool dense = pending.request->dense;
  const std::string model = pending.request->model;
  pending.statistics->AddQueued(dense, 1);  // waiting counts as queued
  absl::StatusOr<AdmissionGates::Entry> entry = gates_.Enter(
      model, limits, pending.level, pending.deadline, [this, held, dense](const absl::Status& s) {
        PendingRequest& p = held->pending;
        p.statistics->AddQueued(dense, -1);
        if (!s.ok()) return FinishPending(p, s);
        p.gate = p.request->model;
        // Resumed on the thread that freed the place: the request goes on
        // from a worker, so that no thread runs a chain of them.
        const int level = p.level;
        const WorkerPool::Share share = held->share;
        if (!pool_.Submit([this, held] { Dispatch(std::move(*held), /*on_worker=*/true); }, level,
                          share)) {
          FinishPending(p, absl::UnavailableError("the inference queue is full; retry with backoff"));
        }
      });
  if (!entry.ok()) {
    pending.statistics->AddQueued(dense, -1);
    return FinishPending(pending, entry.status());
  }
  if (*entry == AdmissionGates::Entry::kWaiting) return;
  pending.statistics->AddQueued(dense, -1);
  pending.gate = model;
  Dispatch(std::move(*held), /*on_worker=*/false);
}

void InferenceCore::Dispatch(Admitted admitted, bool on_worker) {
  const InferRequest& request = *admitted.pending.request;
  const ModelInfo& info = PathModel(*admitted.servable, request.dense)->info();
  const BatchingOptions options =
      ToBatchingOptions(admitted.batching, admitted.workers, request.dense);
  // A shard's calls each come with their own route, and each reports its own
  // exact FLOPs (its rows hold different numbers of this shard's experts):
  // they are not batched together. Their front batches.
  const bool batched = options.enabled && !info.needs_given_route;
  // A front waits on its shards: never on the caller's (a protocol's) thread.
  const bool cheap = !info.remote && request.rows * info.flops_per_row <= options_.inline_max_flops;
  std::vector<PendingRequest> batch;
  if (cheap || (on_worker && !batched)) {
    batch.push_back(std::move(admitted.pending));
    RunBatch(*admitted.servable, request.dense, std::move(batch),
             [this](PendingRequest& p, const absl::Status& s) { FinishPending(p, s); });
    return;
  }
  if (batched) {
    Enqueue(std::move(admitted.servable), std::move(admitted.state), request.dense, options,
            admitted.share, std::move(admitted.pending));
    return;
  }
  batch.push_back(std::move(admitted.pending));
  Submit(std::move(admitted.servable), request.dense, admitted.share, std::move(batch));
}

void InferenceCore::Submit(std::shared_ptr<const Servable> servable, bool dense,
                           const WorkerPool::Share& share, std::vector<PendingRequest> batch) {
  // Shared: if the pool's queue is full the task is dropped, and the
  // requests are still answered here.
  auto shared = std::make_shared<std::vector<PendingRequest>>(std::move(batch));
  CountQueued(*shared, dense, 1);
  const int level = shared->front().level;
  const bool queued = pool_.Submit([this, shared, dense, servable = std::move(servable)] {
    CountQueued(*shared, dense, -1);
    RunBatch(*servable, dense, std::move(*shared), [this](PendingRequest& p, const absl::Status& s) {
      FinishPending(p, s);
    });
  }, level, share);
  if (!queued) {
    CountQueued(*shared, dense, -1);
    for (PendingRequest& p : *shared) {
      FinishPending(p, absl::UnavailableError("the inference queue is full; retry with backoff"));
    }
  }
}

std::shared_ptr<InferenceCore::ServableState> InferenceCore::StateFor(
    const std::shared_ptr<const Servable>& servable) {
  {
    // Every admitted request looks its servable up: shared, the common case.
    absl::ReaderMutexLock lock(&states_mu_);
    if (std::shared_ptr<ServableState> state = FindState(*servable)) return state;
  }
  absl::MutexLock lock(&states_mu_);
  if (std::shared_ptr<ServableState> state = FindState(*servable)) return state;
  absl::erase_if(states_, [](const auto& entry) { return entry.second->servable.expired(); });
  auto state = std::make_shared<ServableState>();
  state->servable = servable;
  states_[servable.get()] = state;
  return state;
}

PathStatistics InferenceCore::Statistics(const ModelHandle& path) const {
  std::shared_ptr<ServableState> state;
  {
    absl::ReaderMutexLock lock(&states_mu_);
    state = FindState(*path.servable_);
  }
  return state != nullptr ? state->statistics->Get(path.dense()) : PathStatistics{};
}

ServerLoad InferenceCore::Load() const {
  ServerLoad load;
  load.workers = pool_.threads();
  load.busy_workers = pool_.busy();
  load.worker_queue = pool_.queued();
  load.worker_queue_capacity = pool_.max_queue();
  for (const auto& [name, state] : *repository_->snapshot()) {
    load.failed_versions[name] = static_cast<int64_t>(state.failures.size());
    const std::optional<sparse::v1::DynamicBatching> batching =
        state.config.has_dynamic_batching() ? std::optional(state.config.dynamic_batching())
                                            : std::nullopt;
    for (const auto& [number, servable] : state.versions) {
      std::shared_ptr<ServableState> live;
      {
        absl::ReaderMutexLock lock(&states_mu_);
        live = FindState(*servable);
      }
      for (bool dense : {false, true}) {
        if (dense && servable->loaded.dense == nullptr) continue;
        PathLoad p{.model = name, .version = number, .dense = dense};
        if (live != nullptr) {
          p.in_flight = live->statistics->in_flight(dense);
          p.queued = live->statistics->queued(dense);
        }
        const BatchingOptions options = ToBatchingOptions(batching, workers(), dense);
        p.queue_capacity = options.enabled ? options.max_queue_size : pool_.max_queue();
        load.paths.push_back(std::move(p));
      }
    }
  }
  return load;
}

std::shared_ptr<InferenceCore::ServableState> InferenceCore::FindState(
    const Servable& servable) const {
  auto it = states_.find(&servable);
  // The same address may have belonged to a servable since freed: while the
  // caller holds `servable`, a live entry at its address is its own.
  if (it == states_.end() || it->second->servable.expired()) return nullptr;
  return it->second;
}

void InferenceCore::Enqueue(std::shared_ptr<const Servable> servable,
                            std::shared_ptr<ServableState> queues, bool dense,
                            const BatchingOptions& options, const WorkerPool::Share& share,
                            PendingRequest pending) {
  // Counted before it is queued: a worker may take it at once.
  if (pending.statistics != nullptr) pending.statistics->AddQueued(dense, 1);
  switch (queues->batchers[dense ? 1 : 0].Add(&pending, options)) {
    case Batcher::AddResult::kFull:
      if (pending.statistics != nullptr) pending.statistics->AddQueued(dense, -1);
      FinishPending(pending, absl::UnavailableError(absl::StrCat(
                 "the batching queue of model '", servable->model,
                 "' is full (dynamic_batching.max_queue_size); retry with backoff")));
      return;
    case Batcher::AddResult::kQueued:
      return;
    case Batcher::AddResult::kQueuedScheduleDrain:
      ScheduleDrain(std::move(servable), std::move(queues), dense, share);
      return;
  }
}

void InferenceCore::ScheduleDrain(std::shared_ptr<const Servable> servable,
                                  std::shared_ptr<ServableState> queues, bool dense,
                                  const WorkerPool::Share& share) {
  Batcher& batcher = queues->batchers[dense ? 1 : 0];
  const bool queued = pool_.Submit([this, servable, queues, dense, &batcher, share] {
    bool another = false;
    std::vector<PendingRequest> batch = batcher.Take(&another);
    CountQueued(batch, dense, -1);
    // Another worker forms the next batch while this one computes.
    if (another) ScheduleDrain(servable, queues, dense, share);
    if (batch.empty()) return;
    int64_t rows = 0;
    for (const PendingRequest& p : batch) rows += p.request->rows;
    RunBatch(*servable, dense, std::move(batch), [this](PendingRequest& p, const absl::Status& s) {
      FinishPending(p, s);
    });
    batcher.Finished(rows);
  }, batcher.DrainLevel(), share);
  if (!queued) {
    std::vector<PendingRequest> refused = batcher.TakeAll();
    CountQueued(refused, dense, -1);
    for (PendingRequest& p : refused) {
      FinishPending(p, absl::UnavailableError("the inference queue is full; retry with backoff"));
    }
  }
}

bool InferenceCore::Drain(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  draining_ = true;
  return mu_.AwaitWithDeadline(absl::Condition(this, &InferenceCore::Idle), deadline);
}

bool InferenceCore::draining() const {
  absl::MutexLock lock(&mu_);
  return draining_;
}

int64_t InferenceCore::in_flight() const {
  absl::MutexLock lock(&mu_);
  return in_flight_;
}

absl::Status InferenceCore::TooManyRows(int64_t rows) const {
  return TooManyRowsError(rows, options_.max_batch_rows);
}

}  // namespace sparse
