// Per-version inference statistics, kept by the serving core for each
// servable and path, in the shape of Triton's ModelStatistics extension
// (docs/api.md, "Statistics"). Every duration is a count and a cumulative
// nanosecond total.
//
// Per request (one count per request):
//   success / fail  the request's whole time in the server: the frontend's
//                   decoding, then from the core's arrival until its answer
//                   is encoded (its `done` has returned)
//   queue           arrival until its batch starts to compute
//   compute_input   the frontend decoding the request into rows
//                   (InferRequest::decode_ns)
//   compute_infer   routing and compute of the batch it ran in
//   compute_output  encoding its answer for the protocol (its `done`)
// Per execution, keyed by the batch's rows (one count per batch):
//   compute_input   gathering the batch's rows (0 for a lone request, which
//                   computes straight from its input)
//   compute_infer   routing and compute
//   compute_output  splitting the outputs and answering every request
// inference_count adds the rows of each successful request;
// execution_count adds one per batch computed.
#ifndef SPARSE_SERVER_CORE_STATISTICS_H_
#define SPARSE_SERVER_CORE_STATISTICS_H_

#include <atomic>
#include <cstdint>
#include <map>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace sparse {

struct StatDuration {
  uint64_t count = 0;
  uint64_t ns = 0;
  void Add(int64_t nanos) {
    ++count;
    ns += static_cast<uint64_t>(nanos > 0 ? nanos : 0);
  }
};

struct BatchStatistics {
  StatDuration compute_input;
  StatDuration compute_infer;
  StatDuration compute_output;
};

struct PathStatistics {
  uint64_t last_inference_ms = 0;  // milliseconds since the Unix epoch; 0: never
  uint64_t inference_count = 0;
  uint64_t execution_count = 0;
  StatDuration success;
  StatDuration fail;
  StatDuration queue;
  StatDuration compute_input;
  StatDuration compute_infer;
  StatDuration compute_output;
  std::map<int64_t, BatchStatistics> batches;  // by the batch's rows
};

// What one answered request took, for RecordRequest.
struct RequestTimes {
  bool ok = false;
  int64_t rows = 0;
  int64_t total_ns = 0;   // decode + arrival..answer encoded
  int64_t decode_ns = 0;  // compute_input
  // The rest only for a successful request (which reached compute):
  int64_t queue_ns = 0;
  int64_t infer_ns = 0;   // route + compute
  int64_t output_ns = 0;  // encoding its answer
};

// One execution (batch) of a path, for RecordExecution.
struct ExecutionTimes {
  int64_t rows = 0;
  int64_t input_ns = 0;
  int64_t infer_ns = 0;
  int64_t output_ns = 0;
};

// The statistics of one servable (model version), both paths, and its load
// now (the gauges an autoscaler reads). Thread-safe.
class ServableStatistics {
 public:
  void RecordRequest(bool dense, const RequestTimes& times);
  void RecordExecution(bool dense, const ExecutionTimes& times);
  PathStatistics Get(bool dense) const;

  // Requests admitted to a path and not yet answered (`delta` +1 at
  // admission, -1 once answered), and of them those waiting for a worker
  // (in the batching queue or the worker queue; +1 when queued, -1 when
  // their batch starts or they are refused).
  void AddInFlight(bool dense, int64_t delta) {
    in_flight_[dense].fetch_add(delta, std::memory_order_relaxed);
  }
  void AddQueued(bool dense, int64_t delta) {
    queued_[dense].fetch_add(delta, std::memory_order_relaxed);
  }
  int64_t in_flight(bool dense) const { return in_flight_[dense].load(std::memory_order_relaxed); }
  int64_t queued(bool dense) const { return queued_[dense].load(std::memory_order_relaxed); }

 private:
  mutable absl::Mutex mu_;
  PathStatistics paths_[2] ABSL_GUARDED_BY(mu_);  // sparse, dense
  std::atomic<int64_t> in_flight_[2] = {0, 0};
  std::atomic<int64_t> queued_[2] = {0, 0};
};

}  // namespace sparse

#endif  // SPARSE_SERVER_CORE_STATISTICS_H_
