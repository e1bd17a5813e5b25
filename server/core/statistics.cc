#include "server/core/statistics.h"

#include "absl/time/clock.h"

namespace sparse {

void ServableStatistics::RecordRequest(bool dense, const RequestTimes& times) {
  absl::MutexLock lock(&mu_);
  PathStatistics& s = paths_[dense ? 1 : 0];
  if (!times.ok) {
    s.fail.Add(times.total_ns);
    return;
  }
  s.success.Add(times.total_ns);
  s.inference_count += static_cast<uint64_t>(times.rows);
  s.last_inference_ms = static_cast<uint64_t>(absl::ToUnixMillis(absl::Now()));
  s.compute_input.Add(times.decode_ns);
  s.queue.Add(times.queue_ns);
  s.compute_infer.Add(times.infer_ns);
  s.compute_output.Add(times.output_ns);
}

void ServableStatistics::RecordExecution(bool dense, const ExecutionTimes& times) {
  absl::MutexLock lock(&mu_);
  PathStatistics& s = paths_[dense ? 1 : 0];
  ++s.execution_count;
  BatchStatistics& b = s.batches[times.rows];
  b.compute_input.Add(times.input_ns);
  b.compute_infer.Add(times.infer_ns);
  b.compute_output.Add(times.output_ns);
}

PathStatistics ServableStatistics::Get(bool dense) const {
  absl::MutexLock lock(&mu_);
  return paths_[dense ? 1 : 0];
}

}  // namespace sparse
