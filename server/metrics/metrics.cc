#include "server/metrics/metrics.h"

#include <algorithm>
#include <iterator>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/client_text.h"
#include "common/internal_error.h"
#include "prometheus/family.h"
#include "prometheus/text_serializer.h"

namespace sparse {
namespace {

// 10 us to ~10 s, x2 per bucket.
prometheus::Histogram::BucketBoundaries SecondsBuckets() {
  prometheus::Histogram::BucketBoundaries b;
  for (double s = 10e-6; s < 20; s *= 2) b.push_back(s);
  return b;
}

prometheus::Histogram::BucketBoundaries RowBuckets() {
  prometheus::Histogram::BucketBoundaries b;
  for (double r = 1; r <= (1 << 20); r *= 2) b.push_back(r);
  return b;
}

constexpr const char* kCodeNames[] = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED"};

// An empty gauge family, filled at a scrape.
prometheus::MetricFamily GaugeFamily(const char* name, const char* help) {
  return prometheus::MetricFamily{name, help, prometheus::MetricType::Gauge, {}};
}

}  // namespace

ServerMetrics::ServerMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      requests_(prometheus::BuildCounter()
                    .Name("sparse_requests_total")
                    .Help("Answered Predict/PredictDense/ModelInfer requests by model, path and gRPC code")
                    .Register(*registry_)),
      seconds_(prometheus::BuildHistogram()
                   .Name("sparse_request_seconds")
                   .Help("Server time per successful request: stage queue (waiting for a worker or "
                         "a batch), compute (route + compute) and total (arrival to answer)")
                   .Register(*registry_)),
      flops_(prometheus::BuildCounter()
                 .Name("sparse_flops_total")
                 .Help("FLOPs the kernels executed")
                 .Register(*registry_)),
      dense_flops_(prometheus::BuildCounter()
                       .Name("sparse_dense_flops_total")
                       .Help("FLOPs the dense baseline costs for the same rows")
                       .Register(*registry_)),
      weight_bytes_(prometheus::BuildCounter()
                        .Name("sparse_weight_bytes_total")
                        .Help("Bytes of weights the kernels read (a batch's shared by rows)")
                        .Register(*registry_)),
      major_faults_(prometheus::BuildCounter()
                        .Name("sparse_major_faults_total")
                        .Help("Major page faults (pages read from disk) the compute took, counted "
                              "per worker thread (a batch's shared by rows; a sharded front's "
                              "include its shards')")
                        .Register(*registry_)),
      batch_rows_(prometheus::BuildHistogram()
                      .Name("sparse_batch_rows")
                      .Help("Rows computed together with each request (its batch)")
                      .Register(*registry_)),
      loaded_(prometheus::BuildGauge()
                  .Name("sparse_loaded_versions")
                  .Help("Versions of each model serving")
                  .Register(*registry_)),
      shard_calls_(prometheus::BuildCounter()
                       .Name("sparse_shard_calls_total")
                       .Help("A front's calls to each shard index, by gRPC code")
                       .Register(*registry_)),
      shard_seconds_(prometheus::BuildHistogram()
                         .Name("sparse_shard_call_seconds")
                         .Help("A front's calls to each shard index, from sent to answered "
                               "(every code)")
                         .Register(*registry_)),
      shard_in_flight_(prometheus::BuildGauge()
                           .Name("sparse_shard_calls_in_flight")
                           .Help("A front's calls to each shard index sent and not yet answered")
                           .Register(*registry_)) {
  absl::MutexLock lock(&mu_);
  AddModel("");  // requests for models that are not loaded
}

void ServerMetrics::AddModel(const std::string& model) {
  if (series_.contains(model)) return;
  if (!model.empty()) loaded_gauges_[model] = &loaded_.Add({{"model", model}});
  std::array<PathSeries, 2>& paths = series_[model];
  for (int dense = 0; dense < 2; ++dense) {
    const std::string path = dense ? "dense" : "sparse";
    PathSeries& s = paths[dense];
    for (int code = 0; code < kCodes; ++code) {
      s.requests[code] = &requests_.Add({{"model", model}, {"path", path}, {"code", kCodeNames[code]}});
    }
    if (model.empty()) continue;  // nothing succeeds for a model that is not loaded
    s.queue = &seconds_.Add({{"model", model}, {"path", path}, {"stage", "queue"}}, SecondsBuckets());
    s.compute = &seconds_.Add({{"model", model}, {"path", path}, {"stage", "compute"}}, SecondsBuckets());
    s.total = &seconds_.Add({{"model", model}, {"path", path}, {"stage", "total"}}, SecondsBuckets());
    s.flops = &flops_.Add({{"model", model}, {"path", path}});
    s.dense_flops = &dense_flops_.Add({{"model", model}, {"path", path}});
    s.weight_bytes = &weight_bytes_.Add({{"model", model}, {"path", path}});
    s.major_faults = &major_faults_.Add({{"model", model}, {"path", path}});
    s.batch_rows = &batch_rows_.Add({{"model", model}, {"path", path}}, RowBuckets());
  }
}

void ServerMetrics::SetLoadedVersions(const std::map<std::string, int>& versions) {
  absl::MutexLock lock(&mu_);
  for (const auto& [model, count] : versions) AddModel(model);
  for (const auto& [model, gauge] : loaded_gauges_) {
    auto it = versions.find(model);
    gauge->Set(it == versions.end() ? 0 : it->second);
  }
}

void ServerMetrics::Observe(const std::string& model, bool dense, absl::StatusCode code,
                            const InferCost& cost) {
  const PathSeries* found;
  {
    absl::ReaderMutexLock lock(&mu_);
    auto it = series_.find(model);
    if (it == series_.end()) it = series_.find("");
    found = &it->second[dense ? 1 : 0];  // never erased; node map: never moved
  }
  const PathSeries& s = *found;
  const int n = static_cast<int>(code);
  s.requests[n >= 0 && n < kCodes ? n : 2]->Increment();  // 2: UNKNOWN
  if (code != absl::StatusCode::kOk || s.total == nullptr) return;
  s.queue->Observe(cost.queue_ns * 1e-9);
  s.compute->Observe((cost.route_ns + cost.compute_ns) * 1e-9);
  s.total->Observe(cost.total_ns * 1e-9);
  s.flops->Increment(static_cast<double>(cost.flops));
  s.dense_flops->Increment(static_cast<double>(cost.dense_flops));
  s.weight_bytes->Increment(static_cast<double>(cost.weight_bytes));
  s.major_faults->Increment(static_cast<double>(cost.major_faults));
  s.batch_rows->Observe(static_cast<double>(cost.batch_rows));
}

void ServerMetrics::AddShards(const std::vector<std::string>& targets) {
  const int count = static_cast<int>(targets.size());
  shards_.resize(targets.size());
  for (int i = 0; i < count; ++i) {
    const prometheus::Labels labels = {{"shard", absl::StrCat(i, "/", count)}, {"target", targets[i]}};
    for (int code = 0; code < kCodes; ++code) {
      prometheus::Labels with_code = labels;
      with_code["code"] = kCodeNames[code];
      shards_[i].calls[code] = &shard_calls_.Add(with_code);
    }
    shards_[i].seconds = &shard_seconds_.Add(labels, SecondsBuckets());
    shards_[i].in_flight = &shard_in_flight_.Add(labels);
  }
}

void ServerMetrics::ShardCallSent(int shard) const {
  if (shard < 0 || shard >= static_cast<int>(shards_.size())) return;
  shards_[shard].in_flight->Increment();
}

void ServerMetrics::ObserveShardCall(int shard, int code, double seconds) const {
  if (shard < 0 || shard >= static_cast<int>(shards_.size())) return;
  const ShardSeries& s = shards_[shard];
  s.calls[code >= 0 && code < kCodes ? code : 2]->Increment();  // 2: UNKNOWN
  s.seconds->Observe(seconds);
  s.in_flight->Decrement();
}

std::vector<prometheus::MetricFamily> RoutingCollector::Collect() const {
  prometheus::MetricFamily rows{"sparse_expert_rows_total",
                                "Rows the router sent to each expert of each block (DSM), since the "
                                "version loaded",
                                prometheus::MetricType::Counter,
                                {}};
  prometheus::MetricFamily imbalance{
      "sparse_expert_load_imbalance",
      "Rows of the busiest expert over the mean rows per expert, worst block (1 = balanced); "
      "0 before any row",
      prometheus::MetricType::Gauge,
      {}};
  prometheus::MetricFamily lookups{"sparse_bucket_lookups_total",
                                   "Bucket probes (rows x tables) of an LSH table since the version "
                                   "loaded",
                                   prometheus::MetricType::Counter,
                                   {}};
  prometheus::MetricFamily misses{"sparse_bucket_misses_total",
                                  "Bucket probes that found no stored bucket (the fallback value "
                                  "answered); miss rate = misses / lookups",
                                  prometheus::MetricType::Counter,
                                  {}};
  prometheus::MetricFamily resident = GaugeFamily(
      "sparse_model_resident_bytes",
      "Bytes a loaded version holds for its weights in process memory, both paths (every packed "
      "copy, biases, tables, indexes), by precision; weights mapped from the weight cache file are "
      "excluded (sparse_model_mapped_bytes)");
  prometheus::MetricFamily mapped = GaugeFamily(
      "sparse_model_mapped_bytes",
      "Bytes of a loaded version's weights read from its weight cache file mapping, both paths "
      "(0: copied into process memory)");
  prometheus::MetricFamily mapped_resident = GaugeFamily(
      "sparse_model_mapped_resident_bytes",
      "Of sparse_model_mapped_bytes, the bytes in memory (page cache, mincore) at the scrape");
  prometheus::MetricFamily expert_bytes = GaugeFamily(
      "sparse_expert_bytes",
      "Bytes of one expert's mapped weight slice (its rows of B and A transposed, and their "
      "biases) of a routed DSM");
  prometheus::MetricFamily expert_resident = GaugeFamily(
      "sparse_expert_resident_bytes",
      "Bytes of each expert's mapped weight slice in memory (page cache, mincore) at the scrape, "
      "of sparse_expert_bytes (routed DSMs served from a weight cache file)");
  for (const VersionRouting& v : core_->Routing()) {
    const RoutingCounts& counts = v.since_warmup;
    const std::string& name = v.model;
    const std::string version = std::to_string(v.version);
    using Label = prometheus::ClientMetric::Label;
    {
      prometheus::ClientMetric m;
      m.label = {Label{"model", name}, Label{"precision", std::string(PrecisionName(v.precision))},
                 Label{"version", version}};
      m.gauge.value = static_cast<double>(v.resident_bytes);
      prometheus::ClientMetric in_mapping = m, in_memory = m;
      resident.metric.push_back(std::move(m));
      in_mapping.gauge.value = static_cast<double>(v.mapped_bytes);
      mapped.metric.push_back(std::move(in_mapping));
      in_memory.gauge.value = static_cast<double>(v.mapped_resident_bytes);
      mapped_resident.metric.push_back(std::move(in_memory));
    }
    if (counts.experts > 0 && !v.expert_resident_bytes.empty() &&
        static_cast<int64_t>(v.expert_resident_bytes.size()) == counts.blocks * counts.experts) {
      prometheus::ClientMetric size;
      size.label = {Label{"model", name}, Label{"version", version}};
      size.gauge.value = static_cast<double>(v.expert_bytes);
      expert_bytes.metric.push_back(std::move(size));
      for (int64_t i = 0; i < counts.blocks * counts.experts; ++i) {
        prometheus::ClientMetric m;
        m.label = {Label{"block", std::to_string(i / counts.experts)},
                   Label{"expert", std::to_string(i % counts.experts)}, Label{"model", name},
                   Label{"version", version}};
        m.gauge.value = static_cast<double>(v.expert_resident_bytes[i]);
        expert_resident.metric.push_back(std::move(m));
      }
    }
    if (counts.experts > 0) {
      double worst = 0;
      for (int64_t l = 0; l < counts.blocks; ++l) {
        int64_t total = 0, busiest = 0;
        for (int64_t e = 0; e < counts.experts; ++e) {
          const int64_t n = counts.expert_rows[l * counts.experts + e];
          total += n;
          busiest = std::max(busiest, n);
          prometheus::ClientMetric m;
          m.label = {Label{"block", std::to_string(l)}, Label{"expert", std::to_string(e)},
                     Label{"model", name}, Label{"version", version}};
          m.counter.value = static_cast<double>(n);
          rows.metric.push_back(std::move(m));
        }
        if (total > 0) {
          worst = std::max(worst, static_cast<double>(busiest) * counts.experts / total);
        }
      }
      prometheus::ClientMetric m;
      m.label = {Label{"model", name}, Label{"version", version}};
      m.gauge.value = worst;
      imbalance.metric.push_back(std::move(m));
    }
    if (v.kind == ModelKind::kLshTable) {
      prometheus::ClientMetric l, x;
      l.label = x.label = {Label{"model", name}, Label{"version", version}};
      l.counter.value = static_cast<double>(counts.lookups);
      x.counter.value = static_cast<double>(counts.misses);
      lookups.metric.push_back(std::move(l));
      misses.metric.push_back(std::move(x));
    }
  }
  return {std::move(rows),          std::move(imbalance),     std::move(lookups),
          std::move(misses),        std::move(resident),      std::move(mapped),
          std::move(mapped_resident), std::move(expert_bytes), std::move(expert_resident)};
}

std::vector<prometheus::MetricFamily> LoadCollector::Collect() const {
  prometheus::MetricFamily in_flight = GaugeFamily(
      "sparse_requests_in_flight",
      "Requests admitted to a path of a serving version and not yet answered (those run on the "
      "caller's thread included)");
  prometheus::MetricFamily queued = GaugeFamily(
      "sparse_requests_queued",
      "Of sparse_requests_in_flight, the requests waiting for a worker (in the batching queue or "
      "the worker queue)");
  prometheus::MetricFamily capacity = GaugeFamily(
      "sparse_queue_capacity",
      "Requests that may wait on a path before the next is refused with UNAVAILABLE: its "
      "dynamic_batching.max_queue_size, or --max_queue (shared by every path) when it does not "
      "batch");
  prometheus::MetricFamily workers = GaugeFamily("sparse_workers", "Inference threads (--workers)");
  prometheus::MetricFamily busy =
      GaugeFamily("sparse_workers_busy", "Inference threads running a task now");
  prometheus::MetricFamily tasks =
      GaugeFamily("sparse_worker_queue_tasks", "Tasks (requests or batches) waiting for a worker");
  prometheus::MetricFamily task_capacity = GaugeFamily(
      "sparse_worker_queue_capacity", "Tasks that may wait for a worker (--max_queue)");
  prometheus::MetricFamily failed = GaugeFamily(
      "sparse_failed_versions",
      "Versions of a model that failed to load (GetModel says why; retried when their files "
      "change); 0 when every version loads");
  using Label = prometheus::ClientMetric::Label;
  const ServerLoad load = core_->Load();
  for (const PathLoad& p : load.paths) {
    prometheus::ClientMetric m;
    m.label = {Label{"model", p.model}, Label{"path", p.dense ? "dense" : "sparse"},
               Label{"version", std::to_string(p.version)}};
    prometheus::ClientMetric q = m, c = m;
    m.gauge.value = static_cast<double>(p.in_flight);
    q.gauge.value = static_cast<double>(p.queued);
    c.gauge.value = static_cast<double>(p.queue_capacity);
    in_flight.metric.push_back(std::move(m));
    queued.metric.push_back(std::move(q));
    capacity.metric.push_back(std::move(c));
  }
  auto one = [](prometheus::MetricFamily& family, double value) {
    prometheus::ClientMetric m;
    m.gauge.value = value;
    family.metric.push_back(std::move(m));
  };
  one(workers, load.workers);
  one(busy, static_cast<double>(load.busy_workers));
  one(tasks, static_cast<double>(load.worker_queue));
  one(task_capacity, static_cast<double>(load.worker_queue_capacity));
  for (const auto& [model, versions] : load.failed_versions) {
    prometheus::ClientMetric m;
    m.label = {Label{"model", model}};
    m.gauge.value = static_cast<double>(versions);
    failed.metric.push_back(std::move(m));
  }
  return {std::move(in_flight), std::move(queued), std::move(capacity), std::move(workers),
          std::move(busy),      std::move(tasks),  std::move(task_capacity), std::move(failed)};
}

std::vector<prometheus::MetricFamily> InternalErrorCollector::Collect() const {
  prometheus::MetricFamily errors{"sparse_internal_errors_total",
                                  "Exceptions caught at an entry point of the server (where: http, "
                                  "metrics, grpc, compute, worker, loader, model_control, "
                                  "shard_keepalive); each failed only its request, connection or "
                                  "load, and the log says what it was",
                                  prometheus::MetricType::Counter,
                                  {}};
  for (int i = 0; i < kErrorSites; ++i) {
    const auto site = static_cast<ErrorSite>(i);
    prometheus::ClientMetric m;
    m.label = {prometheus::ClientMetric::Label{"where", std::string(ErrorSiteName(site))}};
    m.counter.value = static_cast<double>(InternalErrors(site));
    errors.metric.push_back(std::move(m));
  }
  return {std::move(errors)};
}

void MetricsEndpoint::Handle(const HttpRequest& request, std::function<void(HttpReply)> done) {
  if (request.path != "/metrics") {
    return done(ErrorReply(404, absl::StrCat("no endpoint ", ClientText(request.method), " ",
                                             ClientText(request.path),
                                             " on the metrics port; Prometheus reads GET /metrics")));
  }
  if (request.method != "GET") {
    return done(ErrorReply(405, absl::StrCat("/metrics answers GET, not ",
                                             ClientText(request.method))));
  }
  std::vector<prometheus::MetricFamily> families;
  for (const auto& collectable : collectables_) {
    std::vector<prometheus::MetricFamily> more = collectable->Collect();
    families.insert(families.end(), std::make_move_iterator(more.begin()),
                    std::make_move_iterator(more.end()));
  }
  HttpReply reply;
  reply.content_type = "text/plain; version=0.0.4; charset=utf-8";
  reply.body = prometheus::TextSerializer().Serialize(families);
  done(std::move(reply));
}

}  // namespace sparse
