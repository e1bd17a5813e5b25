// ServerMetrics: what sparse-server exports to Prometheus (--metrics_port),
// per model and path (sparse / dense):
//
//   sparse_requests_total{model,path,code}         counter, every answered request
//   sparse_request_seconds{model,path,stage}       histogram: stage = queue, compute, total
//   sparse_flops_total{model,path}                 counter, FLOPs the kernels executed
//   sparse_dense_flops_total{model,path}           counter, what the dense baseline costs for the same rows
//   sparse_batch_rows{model,path}                  histogram, rows per computed batch
//   sparse_loaded_versions{model}                  gauge
//
// A request for a model that is not loaded is counted under model="" (a
// client cannot grow the label set). Thread-safe.
#ifndef SPARSE_SERVER_METRICS_H_
#define SPARSE_SERVER_METRICS_H_

#include <memory>
#include <string>

#include "grpcpp/support/status.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "sparse/v1/inference.pb.h"

namespace sparse {

class ServerMetrics {
 public:
  ServerMetrics();

  // One answered request; `cost` is read only when `status` is OK.
  void Observe(const std::string& model, bool dense, const grpc::Status& status,
               const sparse::v1::Cost& cost);
  void SetLoadedVersions(const std::string& model, int versions);

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& seconds_;
  prometheus::Family<prometheus::Counter>& flops_;
  prometheus::Family<prometheus::Counter>& dense_flops_;
  prometheus::Family<prometheus::Histogram>& batch_rows_;
  prometheus::Family<prometheus::Gauge>& loaded_versions_;
};

}  // namespace sparse

#endif  // SPARSE_SERVER_METRICS_H_
