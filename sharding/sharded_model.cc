#include "sharding/sharded_model.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "absl/random/distributions.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "client/client.h"
#include "common/client_text.h"
#include "common/internal_error.h"
#include "common/page_faults.h"
#include "common/status_macros.h"
#include "engine/matmul_kernel.h"
#include "engine/sharding.h"
#include "sharding/grpc_shard_connection.h"

namespace sparse {
namespace {

using Clock = std::chrono::steady_clock;
using sparse::v1::PartialRequest;
using sparse::v1::PartialResponse;

int64_t NanosSinceStart(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count();
}

// Log lines go to stderr unless options.log says otherwise.
ShardSet::Options WithLog(ShardSet::Options options) {
  if (!options.log) {
    options.log = [](const std::string& line) {
      std::fprintf(stderr, "sparse-server: %s\n", line.c_str());
    };
  }
  return options;
}

}  // namespace

ShardSet::ShardSet(Options options) : options_(WithLog(std::move(options))) {
  if (options_.credentials == nullptr) options_.credentials = grpc::InsecureChannelCredentials();
  for (const std::string& target : options_.targets) {
    shards_.push_back(std::make_unique<GrpcShardConnection>(
        target, options_.credentials, options_.channel_args, options_.max_reconnect_backoff));
  }
}

ShardSet::ShardSet(Options options, std::vector<std::unique_ptr<ShardConnection>> connections)
    : options_(WithLog(std::move(options))), shards_(std::move(connections)) {
  for (size_t i = options_.targets.size(); i < shards_.size(); ++i) {
    options_.targets.push_back(absl::StrCat("connection ", i));
  }
}

absl::StatusOr<std::unique_ptr<ShardSet>> ShardSet::Create(Options options, const ClientTls& tls) {
  ASSIGN_OR_RETURN(options.credentials,
                   ChannelCredentialsFor(tls, "--shard_", &options.channel_args));
  return std::make_unique<ShardSet>(std::move(options));
}

absl::StatusOr<std::vector<sparse::v1::VersionStatus>> ShardSet::WaitForVersion(
    const std::string& model, int64_t version, Precision precision,
    const std::string& model_sha256) const {
  const absl::Time give_up = absl::Now() + options_.wait_for_shards;
  std::vector<sparse::v1::VersionStatus> found(count());
  std::vector<std::string> missing;
  while (true) {
    missing.clear();
    for (int i = 0; i < count(); ++i) {
      if (found[i].version() == version) continue;
      const std::string why = AskForVersion(i, model, version, precision, model_sha256, &found[i]);
      if (found[i].version() != version) {
        missing.push_back(absl::StrCat("shard ", i, "/", count(), " (", target(i), "): ", why));
      }
    }
    if (missing.empty()) return found;
    if (absl::Now() >= give_up) {
      return absl::UnavailableError(absl::StrCat(
          "not every shard serves version ", version, " at ", PrecisionName(precision), " after ",
          absl::FormatDuration(options_.wait_for_shards), ": ", absl::StrJoin(missing, "; ")));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

std::string ShardSet::AskForVersion(int i, const std::string& model, int64_t version,
                                     Precision precision, const std::string& model_sha256,
                                     sparse::v1::VersionStatus* found) const {
  // Not waiting for the shard to be reachable: one that cannot be reached
  // fails at once with gRPC's reason (refused, TLS handshake failed), which
  // the caller reports if it never serves; one still starting is asked
  // again.
  sparse::v1::GetModelRequest request;
  request.set_model(model);
  sparse::v1::ModelStatus status;
  const absl::Status s = shards_[i]->GetModel(request, absl::Now() + absl::Seconds(2), &status);
  if (!s.ok()) {
    return s.message().empty() ? absl::StrCat("gRPC code ", static_cast<int>(s.code()))
                               : std::string(s.message());
  }
  std::string why = absl::StrCat(
      "it serves versions [",
      absl::StrJoin(status.versions(), ", ",
                    [](std::string* out, const sparse::v1::VersionStatus& v) {
                      absl::StrAppend(out, v.version(), " ", v.precision());
                    }),
      "]");
  for (const sparse::v1::VersionStatus& v : status.versions()) {
    if (v.version() != version || v.precision() != PrecisionName(precision)) continue;
    if (v.model_sha256() != model_sha256) {
      absl::StrAppend(&why, "; its version ", version, " holds other files (model.safetensors "
                      "SHA-256 ", v.model_sha256(), ", the front's ", model_sha256,
                      "): front and shards must read one repository");
      continue;
    }
    if (v.shard() != absl::StrCat(i, "/", count())) {
      absl::StrAppend(&why, "; it is shard '", v.shard(), "', not ", i, "/", count(),
                      " (check the order of --shard_targets)");
      continue;
    }
    *found = v;
  }
  for (const sparse::v1::VersionFailure& f : status.failed_versions()) {
    if (f.version() == version) absl::StrAppend(&why, "; version ", version, " failed: ", f.error());
  }
  return why;
}

absl::StatusOr<std::unique_ptr<Model>> ShardSet::MakeFront(const std::string& model,
                                                           int64_t version, Precision precision,
                                                           const Checkpoint& front) const {
  ASSIGN_OR_RETURN(std::vector<sparse::v1::VersionStatus> statuses,
                   WaitForVersion(model, version, precision, front.model_sha256));
  ASSIGN_OR_RETURN(std::unique_ptr<ShardedModel> sharded,
                   ShardedModel::Create(this, model, version, precision, front, statuses));
  return std::unique_ptr<Model>(std::move(sharded));
}

struct ShardedModel::Call {
  int shard = 0;
  std::vector<int64_t> rows;  // the batch's rows it carries, in order
  PartialRequest request;
  PartialResponse response;
  absl::Status status;
};

absl::StatusOr<std::unique_ptr<ShardedModel>> ShardedModel::Create(
    const ShardSet* shards, const std::string& model, int64_t version, Precision precision,
    const Checkpoint& front, const std::vector<sparse::v1::VersionStatus>& shard_versions) {
  // The front routes with the model's own router (DSM) or hash functions
  // (LSH); its kind describes the whole model from them and the shards.
  std::optional<ExpertRouter> router;
  std::optional<TableHasher> hasher;
  std::vector<float> top_bias;
  FrontFigures figures;
  for (const sparse::v1::VersionStatus& v : shard_versions) {
    figures.parts.push_back({v.weight_bytes_per_row(), v.parameters()});
  }
  if (const auto* dsm = std::get_if<DsmWeights>(&front.sparse)) {
    ASSIGN_OR_RETURN(router, ExpertRouter::Create(*dsm));
    figures.routing_weight_bytes_per_row = router->weight_bytes_per_row();
    figures.routing_resident_bytes = router->resident_bytes();
    top_bias = dsm->network.top_bias;
  } else {
    ASSIGN_OR_RETURN(hasher, TableHasher::Create(std::get<LshTableWeights>(front.sparse)));
    figures.routing_weight_bytes_per_row = hasher->weight_bytes_per_row();
    figures.routing_resident_bytes = hasher->resident_bytes();
  }
  ASSIGN_OR_RETURN(ModelInfo info, FrontModelInfo(front, precision, shards->count(), figures));
  return std::unique_ptr<ShardedModel>(new ShardedModel(std::move(info), shards, model,
                                                        front.model_sha256, version, precision,
                                                        std::move(router), std::move(hasher),
                                                        std::move(top_bias)));
}

ShardedModel::ShardedModel(ModelInfo info, const ShardSet* shards, std::string model,
                           std::string model_sha256, int64_t version, Precision precision,
                           std::optional<ExpertRouter> router, std::optional<TableHasher> hasher,
                           std::vector<float> top_bias)
    : Model(std::move(info)), shards_(shards), model_(std::move(model)),
      model_sha256_(std::move(model_sha256)), version_(version),
      precision_(precision), router_(std::move(router)), hasher_(std::move(hasher)),
      top_bias_(std::move(top_bias)), d_(this->info().input_dim), o_(this->info().output_dim),
      keepalive_([this] { KeepAlive(); }) {}

ShardedModel::~ShardedModel() {
  stop_.Notify();
  keepalive_.join();
}

PartialRequest ShardedModel::CallTo(int shard) const {
  PartialRequest request;
  request.set_model(model_);
  request.set_model_sha256(model_sha256_);
  request.set_version(version_);
  request.set_precision(static_cast<sparse::v1::Precision>(precision_));
  request.set_shard_index(shard);
  request.set_shard_count(shards_->count());
  return request;
}

void ShardedModel::KeepAlive() {
  // A shard keeps an older version only while fronts call it
  // (--shard_retain_seconds after the last call): without these calls a
  // front idle for that long would find its version gone on its next
  // request. They carry no rows and are not counted in the shard metrics.
  //
  // gRPC sends a target's calls round robin over its replicas, and every
  // version a front serves shares that rotation: one call per round would
  // reach the same replica each time whenever two versions' rounds
  // alternate, and the other replicas would drop the version. So each round
  // sends a burst of 8 calls per shard index (KeepAliveRound), one per replica
  // (up to that many) when nothing else uses the channel meanwhile; calls
  // in between shift it, and the next rounds (several per retention) reach
  // a replica one missed. Rounds are jittered so that two versions' bursts
  // rarely overlap. A replica that answers an error (one that lacks the
  // version) does not end the burst; an unreachable index or a deadline
  // does, as does stop_, so a destructor waits for one call at most.
  const int count = shards_->count();
  std::vector<bool> failing(count, false);
  absl::BitGen jitter;
  const absl::Duration interval = shards_->options().keepalive;
  while (!stop_.WaitForNotificationWithTimeout(interval * absl::Uniform(jitter, 0.8, 1.0))) {
    for (int i = 0; i < count && !stop_.HasBeenNotified(); ++i) {
      // What a round throws is counted and the next round goes on.
      (void)CatchInternal(ErrorSite::kShardKeepalive, [&] { KeepAliveRound(i, &failing); });
    }
  }
}

void ShardedModel::KeepAliveRound(int i, std::vector<bool>* failing) {
  constexpr int kKeepAliveBurst = 8;  // calls per shard index (KeepAlive)
  FaultPoint(ErrorSite::kShardKeepalive);
  const int count = shards_->count();
  const PartialRequest request = CallTo(i);
  absl::Status status;  // the first failure of the burst
  for (int call = 0; call < kKeepAliveBurst && !stop_.HasBeenNotified(); ++call) {
    PartialResponse response;
    const absl::Status answer =
        shards_->shard(i).ComputePartial(request, absl::Now() + absl::Seconds(1), &response);
    if (!answer.ok() && status.ok()) status = answer;
    if (answer.code() == absl::StatusCode::kUnavailable ||
        answer.code() == absl::StatusCode::kDeadlineExceeded) {
      break;
    }
  }
  // Said once when it starts failing and once when it works again.
  if (!status.ok() && !(*failing)[i]) {
    shards_->options().log(absl::StrCat(
        "model ", model_, " version ", version_, ": keep-alive to shard ", i, "/", count, " (",
        shards_->target(i), ") failed: ", absl::StatusCodeToString(status.code()), ": ",
        status.message(), "; a shard drops the version --shard_retain_seconds after "
        "its last call"));
  } else if (status.ok() && (*failing)[i]) {
    shards_->options().log(absl::StrCat("model ", model_, " version ", version_,
                                        ": keep-alive to shard ", i, "/", count, " (",
                                        shards_->target(i), ") works again"));
  }
  (*failing)[i] = !status.ok();
}

absl::Status ShardedModel::PredictValidated(const float* x, int64_t rows, float* y,
                                            PredictStats* stats, Route* route,
                                            const PredictOptions& options) const {
  Calls planned(shards_->count());
  if (router_.has_value()) {
    RETURN_IF_ERROR(PlanDsm(x, rows, stats, route, &planned));
  } else {
    RETURN_IF_ERROR(PlanLsh(x, rows, stats, route, &planned));
  }
  Calls sent;
  for (auto& c : planned) {
    if (c != nullptr) sent.push_back(std::move(c));
  }
  absl::Time deadline = options.deadline;
  if (deadline == absl::InfiniteFuture()) deadline = absl::Now() + shards_->options().default_deadline;
  RETURN_IF_ERROR(Fanout(sent, deadline, stats));
  return AddPartials(sent, rows, y, stats, route);
}

ShardedModel::Call& ShardedModel::CallFor(int shard, Calls* calls) const {
  std::unique_ptr<Call>& c = (*calls)[shard];
  if (c == nullptr) {
    c = std::make_unique<Call>();
    c->shard = shard;
    c->request = CallTo(shard);
  }
  return *c;
}

absl::Status ShardedModel::PlanDsm(const float* x, int64_t rows, PredictStats* stats,
                                   Route* route, Calls* calls) const {
  // Route every row here; each shard gets the rows whose experts it holds.
  const int64_t chunk = MatmulKernel::kMaxBucketRows;
  const int count = shards_->count();
  const int64_t L = router_->blocks(), E = router_->experts();
  std::vector<int32_t> experts(rows * L);
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    RETURN_IF_ERROR(router_->Route(x + r0 * d_, std::min(chunk, rows - r0),
                                   experts.data() + r0 * L, stats));
  }
  if (route != nullptr) {
    route->experts_per_row = L;
    route->expert_ids = experts;
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t l = 0; l < L; ++l) {
      Call& c = CallFor(ShardOfUnit(experts[r * L + l], E, count), calls);
      if (!c.rows.empty() && c.rows.back() == r) continue;
      // The shard computes this batch's chunks apart, as the whole model
      // would: the same reads, the same weight_bytes.
      if (c.rows.empty() || c.rows.back() / chunk != r / chunk) c.request.add_chunk_rows(0);
      c.request.set_chunk_rows(c.request.chunk_rows_size() - 1,
                               c.request.chunk_rows(c.request.chunk_rows_size() - 1) + 1);
      c.rows.push_back(r);
      c.request.mutable_inputs()->Add(x + r * d_, x + (r + 1) * d_);
      c.request.mutable_expert_ids()->Add(experts.begin() + r * L, experts.begin() + (r + 1) * L);
    }
  }
  for (auto& c : *calls) {
    if (c == nullptr) continue;
    c->request.set_rows(static_cast<int64_t>(c->rows.size()));
    c->request.set_experts_per_row(L);
  }
  return absl::OkStatus();
}

absl::Status ShardedModel::PlanLsh(const float* x, int64_t rows, PredictStats* stats,
                                   Route* route, Calls* calls) const {
  // Every shard holds some of the tables: every row goes to all of them.
  const int64_t chunk = MatmulKernel::kMaxBucketRows;
  const int count = shards_->count();
  const int64_t s = hasher_->tables();
  std::vector<uint64_t> keys(rows * s);
  const auto start = Clock::now();
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    RETURN_IF_ERROR(hasher_->Keys(x + r0 * d_, std::min(chunk, rows - r0),
                                  keys.data() + r0 * s, stats));
  }
  stats->route_ns += NanosSinceStart(start);
  if (route != nullptr) {
    route->keys_per_row = s;
    route->bucket_keys = keys;
    route->bucket_missed.assign(rows * s, 0);
  }
  for (int i = 0; i < count; ++i) {
    Call& c = CallFor(i, calls);
    const UnitRange owned = OwnedUnits(s, i, count);
    c.request.set_rows(rows);
    c.request.mutable_inputs()->Add(x, x + rows * d_);
    c.request.set_keys_per_row(owned.size());
    for (int64_t r = 0; r < rows; ++r) {
      c.request.mutable_bucket_keys()->Add(keys.begin() + r * s + owned.begin,
                                           keys.begin() + r * s + owned.end);
    }
  }
  return absl::OkStatus();
}

absl::Status ShardedModel::AddPartials(const Calls& calls, int64_t rows, float* y,
                                       PredictStats* stats, Route* route) const {
  const int count = shards_->count();
  // a0 (DSM), then every shard's partial sums.
  for (int64_t r = 0; r < rows; ++r) {
    float* out = y + r * o_;
    if (top_bias_.empty()) {
      std::fill(out, out + o_, 0.0f);
    } else {
      std::copy(top_bias_.begin(), top_bias_.end(), out);
    }
  }
  if (!top_bias_.empty()) stats->weight_bytes += 4 * o_;
  for (const auto& c : calls) {
    const int64_t call_rows = c->request.rows();
    const auto& outputs = c->response.outputs();
    if (outputs.size() != call_rows * o_) {
      return absl::InternalError(absl::StrCat("shard ", c->shard, "/", count, " answered ",
                                              outputs.size(), " outputs for ", call_rows,
                                              " rows of ", o_));
    }
    for (int64_t i = 0; i < call_rows; ++i) {
      const int64_t r = c->rows.empty() ? i : c->rows[i];
      for (int64_t j = 0; j < o_; ++j) y[r * o_ + j] += outputs[i * o_ + j];
    }
    if (route != nullptr && hasher_.has_value()) {
      const int64_t s = hasher_->tables();
      const UnitRange owned = OwnedUnits(s, c->shard, count);
      const std::string& missed = c->response.bucket_missed();
      if (static_cast<int64_t>(missed.size()) != call_rows * owned.size()) {
        return absl::InternalError(absl::StrCat("shard ", c->shard, "/", count, " answered ",
                                                missed.size(), " miss flags for ", call_rows,
                                                " rows of ", owned.size(), " tables"));
      }
      for (int64_t r = 0; r < call_rows; ++r) {
        for (int64_t t = 0; t < owned.size(); ++t) {
          route->bucket_missed[r * s + owned.begin + t] = missed[r * owned.size() + t] != 0;
        }
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ShardedModel::Fanout(const Calls& calls, absl::Time deadline,
                                  PredictStats* stats) const {
  // Shared with the callbacks, which may still be unlocking it when the
  // waiter has returned.
  struct Pending {
    absl::Mutex mu;
    int64_t left ABSL_GUARDED_BY(mu) = 0;
  };
  auto pending = std::make_shared<Pending>();
  {
    absl::MutexLock lock(&pending->mu);
    pending->left = static_cast<int64_t>(calls.size());
  }
  const auto start = Clock::now();
  for (const auto& c : calls) {
    Call* call = c.get();
    const ShardSet* shards = shards_;
    if (shards->options().on_send) shards->options().on_send(call->shard);
    shards_->shard(c->shard).StartComputePartial(
        &call->request, deadline, &call->response,
        [pending, call, shards, start](absl::Status status) {
          if (shards->options().on_call) {
            shards->options().on_call(call->shard, static_cast<int>(status.code()),
                                      static_cast<double>(NanosSinceStart(start)) * 1e-9);
          }
          call->status = std::move(status);
          absl::MutexLock lock(&pending->mu);
          --pending->left;
        });
  }
  {
    absl::MutexLock lock(&pending->mu);
    pending->mu.Await(absl::Condition(
        +[](int64_t* left) { return *left == 0; }, &pending->left));
  }
  stats->fanout_ns += NanosSinceStart(start);
  stats->shards += static_cast<int64_t>(calls.size());
  for (const auto& c : calls) {
    if (!c->status.ok()) return CallError(*c);
  }
  // What a shard reports is added as it is, but bounded (2^48 per call):
  // a misbehaving shard cannot overflow the sums.
  auto bounded = [](int64_t v) { return std::clamp<int64_t>(v, 0, int64_t{1} << 48); };
  for (const auto& c : calls) {
    const sparse::v1::Cost& cost = c->response.cost();
    stats->flops += bounded(cost.flops());
    stats->weight_bytes += bounded(cost.weight_bytes());
    stats->compute_ns += bounded(cost.route_ns()) + bounded(cost.compute_ns());
    // The shards' page faults: not the engine's to count (PredictStats), but
    // the core's, around this thread's compute (common/page_faults.h).
    AddMajorFaultsTakenElsewhere(bounded(cost.major_faults()));
  }
  return absl::OkStatus();
}

absl::Status ShardedModel::CallError(const Call& c) const {
  const std::string where = absl::StrCat("shard ", c.shard, "/", shards_->count(), " (",
                                         shards_->target(c.shard), ")");
  const std::string message = ClientText(c.status.message());
  if (c.status.code() == absl::StatusCode::kNotFound) {
    // Another version, or the model unloaded there: a state that passes.
    return absl::UnavailableError(absl::StrCat(where, " does not serve version ", version_,
                                               " of model '", ClientText(model_), "': ", message));
  }
  return absl::Status(c.status.code(),
                      absl::StrCat(where, ": ", message.empty() ? "no message" : message));
}

}  // namespace sparse
