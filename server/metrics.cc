#include "server/metrics.h"

#include "prometheus/family.h"

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

}  // namespace

ServerMetrics::ServerMetrics(const std::map<std::string, int>& versions)
    : registry_(std::make_shared<prometheus::Registry>()) {
  auto& requests = prometheus::BuildCounter()
                       .Name("sparse_requests_total")
                       .Help("Answered Predict/PredictDense/ModelInfer requests by model, path and gRPC code")
                       .Register(*registry_);
  auto& seconds = prometheus::BuildHistogram()
                      .Name("sparse_request_seconds")
                      .Help("Server time per successful request: stage queue (waiting for a worker), "
                            "compute (route + compute) and total (arrival to answer)")
                      .Register(*registry_);
  auto& flops = prometheus::BuildCounter()
                    .Name("sparse_flops_total")
                    .Help("FLOPs the kernels executed")
                    .Register(*registry_);
  auto& dense_flops = prometheus::BuildCounter()
                          .Name("sparse_dense_flops_total")
                          .Help("FLOPs the dense baseline costs for the same rows")
                          .Register(*registry_);
  auto& batch_rows = prometheus::BuildHistogram()
                         .Name("sparse_batch_rows")
                         .Help("Rows computed together per request")
                         .Register(*registry_);
  auto& loaded = prometheus::BuildGauge()
                     .Name("sparse_loaded_versions")
                     .Help("Versions of each model loaded")
                     .Register(*registry_);
  std::map<std::string, int> models = versions;
  models.emplace("", 0);  // requests for models that are not loaded
  for (const auto& [model, count] : models) {
    if (!model.empty()) loaded.Add({{"model", model}}).Set(count);
    std::array<PathSeries, 2>& paths = series_[model];
    for (int dense = 0; dense < 2; ++dense) {
      const std::string path = dense ? "dense" : "sparse";
      PathSeries& s = paths[dense];
      for (int code = 0; code < kCodes; ++code) {
        s.requests[code] = &requests.Add({{"model", model}, {"path", path}, {"code", kCodeNames[code]}});
      }
      if (model.empty()) continue;  // nothing succeeds for a model that is not loaded
      s.queue = &seconds.Add({{"model", model}, {"path", path}, {"stage", "queue"}}, SecondsBuckets());
      s.compute = &seconds.Add({{"model", model}, {"path", path}, {"stage", "compute"}}, SecondsBuckets());
      s.total = &seconds.Add({{"model", model}, {"path", path}, {"stage", "total"}}, SecondsBuckets());
      s.flops = &flops.Add({{"model", model}, {"path", path}});
      s.dense_flops = &dense_flops.Add({{"model", model}, {"path", path}});
      s.batch_rows = &batch_rows.Add({{"model", model}, {"path", path}}, RowBuckets());
    }
  }
}

void ServerMetrics::Observe(const std::string& model, bool dense, const grpc::Status& status,
                            const sparse::v1::Cost& cost) {
  auto it = series_.find(model);
  if (it == series_.end()) it = series_.find("");
  const PathSeries& s = it->second[dense ? 1 : 0];
  const int code = static_cast<int>(status.error_code());
  s.requests[code >= 0 && code < kCodes ? code : 2]->Increment();  // 2: UNKNOWN
  if (!status.ok() || s.total == nullptr) return;
  s.queue->Observe(cost.queue_ns() * 1e-9);
  s.compute->Observe((cost.route_ns() + cost.compute_ns()) * 1e-9);
  s.total->Observe(cost.total_ns() * 1e-9);
  s.flops->Increment(static_cast<double>(cost.flops()));
  s.dense_flops->Increment(static_cast<double>(cost.dense_flops()));
  s.batch_rows->Observe(static_cast<double>(cost.batch_size()));
}

}  // namespace sparse
