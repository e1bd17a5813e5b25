// ServerMetrics: what sparse-server exports to Prometheus (--metrics_port),
// per model and path (sparse / dense):
//
//   sparse_requests_total{model,path,code}         counter, every answered request
//   sparse_request_seconds{model,path,stage}       histogram: stage = queue, compute, total
//   sparse_flops_total{model,path}                 counter, FLOPs the kernels executed
//   sparse_dense_flops_total{model,path}           counter, what the dense baseline costs for the same rows
//   sparse_weight_bytes_total{model,path}          counter, bytes of weights the kernels read
//   sparse_major_faults_total{model,path}          counter, major page faults the compute took
//   sparse_batch_rows{model,path}                  histogram, rows per computed batch
//   sparse_loaded_versions{model}                  gauge
//
// on a sharded model's front (sharded_model.h), per shard index:
//
//   sparse_shard_calls_total{shard,target,code}    counter, calls to the shard answered
//   sparse_shard_call_seconds{shard,target}        histogram, sent to answered, every code
//
// and, read from the models at each scrape (RoutingCollector), per loaded
// version of the sparse path:
//
//   sparse_expert_rows_total{model,version,block,expert}  counter, rows routed to each expert (DSM)
//   sparse_expert_load_imbalance{model,version}  gauge, busiest expert's rows / mean rows per expert
//   sparse_bucket_lookups_total{model,version}   counter, row x table probes (LSH table)
//   sparse_bucket_misses_total{model,version}    counter, probes that found no bucket (fallback used)
//   sparse_model_resident_bytes{model,version,precision}  gauge, bytes its weights hold in process
//                                                memory (both paths; mapped weights excluded)
//   sparse_model_mapped_bytes{model,version,precision}  gauge, bytes of weights read from its
//                                                weight cache file mapping (both paths)
//   sparse_model_mapped_resident_bytes{model,version,precision}  gauge, of those, in memory now
//                                                (mincore at the scrape)
//   sparse_expert_bytes{model,version}           gauge, bytes of one expert's mapped slice (routed DSM)
//   sparse_expert_resident_bytes{model,version,block,expert}  gauge, of each expert's mapped
//                                                slice, bytes in memory now (mincore at the scrape)
//
// and the load now, for autoscalers and alerts (LoadCollector), per serving
// version and path:
//
//   sparse_requests_in_flight{model,version,path}  gauge, admitted and not yet answered
//   sparse_requests_queued{model,version,path}     gauge, of those, waiting for a worker
//   sparse_queue_capacity{model,version,path}      gauge, requests that may wait before
//                                                UNAVAILABLE (dynamic_batching.max_queue_size,
//                                                or --max_queue when the path does not batch)
//
// per server and per model:
//
//   sparse_workers                               gauge, inference threads (--workers)
//   sparse_workers_busy                          gauge, of those, running a task now
//   sparse_worker_queue_tasks                    gauge, tasks waiting for a worker
//   sparse_worker_queue_capacity                 gauge, --max_queue
//   sparse_failed_versions{model}                gauge, versions that failed to load
//
// and on a sharded model's front, pushed as calls go out and come back:
//
//   sparse_shard_calls_in_flight{shard,target}   gauge, calls sent and not yet answered
//
// and, for the whole process (InternalErrorCollector):
//
//   sparse_internal_errors_total{where}          counter, exceptions caught at an entry point
//                                                (common/internal_error.h); each failed only its
//                                                request, connection or load
//
// MetricsEndpoint serves them all on --metrics_port (GET /metrics, the text
// format 0.0.4), through the project's own HTTP transport and its limits.
//
// Every series of a model is created when the model is loaded (by
// SetLoadedVersions, off the request path), so recording a request is a
// lookup under a reader lock and a few atomic adds (creating a labelled
// series per request measured ~15 % of the server's CPU at 16 in flight).
// A request for a model not loaded is counted under model="" (a client
// cannot grow the label set). Thread-safe.
#ifndef SPARSE_SERVER_METRICS_METRICS_H_
#define SPARSE_SERVER_METRICS_METRICS_H_

#include <array>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/node_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/status/status.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "prometheus/collectable.h"
#include "server/core/infer.h"
#include "server/core/inference_core.h"
#include "server/http/http_handler.h"

namespace sparse {

class ServerMetrics {
 public:
  ServerMetrics();

  // Each model the repository knows and how many versions of it serve now;
  // models missing from `versions` that had series get 0 loaded versions.
  void SetLoadedVersions(const std::map<std::string, int>& versions);

  // One answered request; `cost` is read only when `code` is OK.
  void Observe(const std::string& model, bool dense, absl::StatusCode code, const InferCost& cost);

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // A front's shards, one target per index ("i/N" labels them). Call once,
  // before the first ObserveShardCall.
  void AddShards(const std::vector<std::string>& targets);
  // One call sent to shard `shard` (any thread): in flight until observed.
  void ShardCallSent(int shard) const;
  // One answered call to shard `shard` (any thread); `code` is gRPC's.
  void ObserveShardCall(int shard, int code, double seconds) const;

 private:
  static constexpr int kCodes = 17;  // canonical status codes 0..16 (gRPC's numbers)
  struct PathSeries {
    std::array<prometheus::Counter*, kCodes> requests{};
    prometheus::Histogram* queue = nullptr;
    prometheus::Histogram* compute = nullptr;
    prometheus::Histogram* total = nullptr;
    prometheus::Counter* flops = nullptr;
    prometheus::Counter* dense_flops = nullptr;
    prometheus::Counter* weight_bytes = nullptr;
    prometheus::Counter* major_faults = nullptr;
    prometheus::Histogram* batch_rows = nullptr;
  };

  struct ShardSeries {
    std::array<prometheus::Counter*, kCodes> calls{};
    prometheus::Histogram* seconds = nullptr;
    prometheus::Gauge* in_flight = nullptr;
  };
  void AddModel(const std::string& model) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& seconds_;
  prometheus::Family<prometheus::Counter>& flops_;
  prometheus::Family<prometheus::Counter>& dense_flops_;
  prometheus::Family<prometheus::Counter>& weight_bytes_;
  prometheus::Family<prometheus::Counter>& major_faults_;
  prometheus::Family<prometheus::Histogram>& batch_rows_;
  prometheus::Family<prometheus::Gauge>& loaded_;
  prometheus::Family<prometheus::Counter>& shard_calls_;
  prometheus::Family<prometheus::Histogram>& shard_seconds_;
  prometheus::Family<prometheus::Gauge>& shard_in_flight_;
  // Set once by AddShards before any call is observed, then only read.
  std::vector<ShardSeries> shards_;
  mutable absl::Mutex mu_;
  // model -> {sparse, dense}; "" for models not loaded. Grows only; a node
  // map, so a PathSeries never moves while a request records into it.
  absl::node_hash_map<std::string, std::array<PathSeries, 2>> series_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, prometheus::Gauge*> loaded_gauges_ ABSL_GUARDED_BY(mu_);
};

// The routing metrics above, built from the repository's snapshot when
// Prometheus scrapes; nothing is recorded on the request path but the
// models' own atomic counters. Counts start at zero when a version loads
// (warm-up excluded) and go when it unloads.
class RoutingCollector final : public prometheus::Collectable {
 public:
  explicit RoutingCollector(const InferenceCore* core) : core_(core) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const InferenceCore* const core_;
};

// The load signals above, read from the core at each scrape (atomic reads;
// InferenceCore::Load): what an autoscaler or an alert targets.
class LoadCollector final : public prometheus::Collectable {
 public:
  explicit LoadCollector(const InferenceCore* core) : core_(core) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const InferenceCore* const core_;
};

// sparse_internal_errors_total{where}, one series per site (0 until the
// first), read from common/internal_error.h's counters at each scrape.
class InternalErrorCollector final : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override;
};

// The metrics port's handler: GET (or HEAD) /metrics answers every
// collectable in Prometheus' text format; any other path is 404.
class MetricsEndpoint final : public HttpHandler {
 public:
  explicit MetricsEndpoint(std::vector<std::shared_ptr<prometheus::Collectable>> collectables)
      : collectables_(std::move(collectables)) {}
  void Handle(const HttpRequest& request, std::function<void(HttpReply)> done) override;

 private:
  const std::vector<std::shared_ptr<prometheus::Collectable>> collectables_;
};

}  // namespace sparse

#endif  // SPARSE_SERVER_METRICS_METRICS_H_
