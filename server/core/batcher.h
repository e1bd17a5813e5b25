// Batcher: dynamic batching for one model version and path (DESIGN.md §5).
//
// Requests too dear to run on the caller's thread wait here instead of going
// to the worker pool one by one. The first request into an idle queue asks for
// one drain task; the worker that runs it calls Take(), which hands back the
// oldest requests up to max_batch_rows rows. If requests remain, Take() says
// so and the caller schedules another drain task, so every free worker forms
// its own batch while the others compute. Under load a batch holds whatever
// arrived while the workers were busy. With max_queue_delay_us set, a free
// worker waits (at most that long) for its fair share of the rows in the
// server: (rows queued + rows computing) / workers, capped at
// max_batch_rows. So under a steady load every worker runs batches of about
// the same size, instead of one grabbing the few requests that arrived just
// after it answered; and when nothing computes the share is what is queued,
// so a lone request never waits.
//
// The options come with each Add() (the model's config.pbtxt as it is now),
// so they can change while requests wait; Take() uses the latest. One
// Batcher per servable and path, kept by the InferenceCore. Thread-safe.
#ifndef SPARSE_SERVER_CORE_BATCHER_H_
#define SPARSE_SERVER_CORE_BATCHER_H_

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/core/infer.h"
#include "server/core/statistics.h"

namespace sparse {

struct BatchingOptions {
  bool enabled = false;
  int workers = 1;  // threads that run batches (the fair share divides by it)
  int64_t max_batch_rows = 64;
  int64_t max_queue_delay_us = 0;
  int64_t max_queue_size = 1024;
  bool operator==(const BatchingOptions&) const = default;
};

// One queued request. Everything it points to stays alive until `done`.
struct PendingRequest {
  const InferRequest* request = nullptr;
  InferResponse* response = nullptr;
  std::chrono::steady_clock::time_point arrival;
  InferDone done;
  // Where its servable's statistics go; null before the servable is known.
  std::shared_ptr<ServableStatistics> statistics;
  // When it is answered DEADLINE_EXCEEDED if still queued: the earlier of
  // the request's deadline and its arrival + timeout.
  absl::Time deadline = absl::InfiniteFuture();
  // Its priority level (1 highest; InferRequest::priority resolved against
  // the model's levels): what orders the queues it waits in.
  int level = 1;
  // The model whose limits.max_in_flight it holds a place under (left when
  // it is answered); empty when the model has no limit.
  std::string gate = {};
};

class Batcher {
 public:
  Batcher() = default;
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  enum class AddResult { kQueued, kQueuedScheduleDrain, kFull };
  // Adopts `options` (when they differ from the last ones), then queues
  // `request` by its level (PendingRequest::level) unless max_queue_size
  // requests wait already (then it is handed back untouched in *request,
  // and kFull is returned). On kQueuedScheduleDrain the caller must run (or
  // schedule, at DrainLevel()) a drain task that calls Take().
  AddResult Add(PendingRequest* request, const BatchingOptions& options);

  // For a drain task: returns the first requests (highest level, then
  // oldest) up to max_batch_rows rows
  // (at least one request; none only if TakeAll() emptied the queue). With
  // max_queue_delay_us set, it first waits for the fair share of rows (see
  // above), up to max_queue_delay_us after the oldest request arrived.
  // *schedule_another is true when requests remain; the caller then
  // schedules one more drain task. Call Finished(rows) once the batch has
  // run, unless it was empty.
  std::vector<PendingRequest> Take(bool* schedule_another);
  void Finished(int64_t rows);

  // The priority level a drain task asked for now should wait at (the
  // level of the best request waiting).
  int DrainLevel() const;

  // Removes every waiting request (for when a drain task cannot be
  // scheduled); the caller finishes them.
  std::vector<PendingRequest> TakeAll();

 private:
  bool BatchFull() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return queued_rows_ >= options_.max_batch_rows;
  }
  // Enough rows queued for one worker's fair share.
  bool FairShareQueued() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const int64_t share = (queued_rows_ + running_rows_ + options_.workers - 1) / options_.workers;
    return queued_rows_ >= std::min(share, options_.max_batch_rows);
  }

  mutable absl::Mutex mu_;
  BatchingOptions options_ ABSL_GUARDED_BY(mu_);
  std::deque<PendingRequest> queue_ ABSL_GUARDED_BY(mu_);
  int64_t queued_rows_ ABSL_GUARDED_BY(mu_) = 0;
  bool drain_scheduled_ ABSL_GUARDED_BY(mu_) = false;
  int64_t running_rows_ ABSL_GUARDED_BY(mu_) = 0;  // rows taken and not Finished()
  int drain_level_ ABSL_GUARDED_BY(mu_) = 1;  // of the drain task asked for last
};

}  // namespace sparse

#endif  // SPARSE_SERVER_CORE_BATCHER_H_
