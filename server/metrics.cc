#include "server/metrics.h"

#include "absl/strings/ascii.h"
#include "prometheus/counter.h"

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

std::string CodeName(grpc::StatusCode code) {
  static const char* const kNames[] = {
      "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
      "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
      "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
      "UNAUTHENTICATED"};
  const int i = static_cast<int>(code);
  return i >= 0 && i < static_cast<int>(std::size(kNames)) ? kNames[i] : "UNKNOWN";
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
                   .Help("Server time per successful request: stage queue (waiting for a worker), "
                         "compute (route + compute) and total (arrival to answer)")
                   .Register(*registry_)),
      flops_(prometheus::BuildCounter()
                 .Name("sparse_flops_total")
                 .Help("FLOPs the kernels executed")
                 .Register(*registry_)),
      dense_flops_(prometheus::BuildCounter()
                       .Name("sparse_dense_flops_total")
                       .Help("FLOPs the dense baseline costs for the same rows")
                       .Register(*registry_)),
      batch_rows_(prometheus::BuildHistogram()
                      .Name("sparse_batch_rows")
                      .Help("Rows computed together per request")
                      .Register(*registry_)),
      loaded_versions_(prometheus::BuildGauge()
                           .Name("sparse_loaded_versions")
                           .Help("Versions of each model loaded")
                           .Register(*registry_)) {}

void ServerMetrics::Observe(const std::string& model, bool dense, const grpc::Status& status,
                            const sparse::v1::Cost& cost) {
  const std::string path = dense ? "dense" : "sparse";
  requests_.Add({{"model", model}, {"path", path}, {"code", CodeName(status.error_code())}})
      .Increment();
  if (!status.ok()) return;
  seconds_.Add({{"model", model}, {"path", path}, {"stage", "queue"}}, SecondsBuckets())
      .Observe(cost.queue_ns() * 1e-9);
  seconds_.Add({{"model", model}, {"path", path}, {"stage", "compute"}}, SecondsBuckets())
      .Observe((cost.route_ns() + cost.compute_ns()) * 1e-9);
  seconds_.Add({{"model", model}, {"path", path}, {"stage", "total"}}, SecondsBuckets())
      .Observe(cost.total_ns() * 1e-9);
  flops_.Add({{"model", model}, {"path", path}}).Increment(static_cast<double>(cost.flops()));
  dense_flops_.Add({{"model", model}, {"path", path}})
      .Increment(static_cast<double>(cost.dense_flops()));
  batch_rows_.Add({{"model", model}, {"path", path}}, RowBuckets())
      .Observe(static_cast<double>(cost.batch_size()));
}

void ServerMetrics::SetLoadedVersions(const std::string& model, int versions) {
  loaded_versions_.Add({{"model", model}}).Set(versions);
}

}  // namespace sparse
