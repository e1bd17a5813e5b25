#include "server/core/batcher.h"

#include <algorithm>
#include <iterator>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace sparse {

Batcher::AddResult Batcher::Add(PendingRequest* request, const BatchingOptions& options) {
  BatchingOptions sane = options;
  sane.max_batch_rows = std::max<int64_t>(1, sane.max_batch_rows);
  sane.max_queue_delay_us = std::max<int64_t>(0, sane.max_queue_delay_us);
  sane.max_queue_size = std::max<int64_t>(1, sane.max_queue_size);
  sane.workers = std::max(1, sane.workers);
  absl::MutexLock lock(&mu_);
  if (!(sane == options_)) options_ = sane;
  if (static_cast<int64_t>(queue_.size()) >= options_.max_queue_size) return AddResult::kFull;
  queued_rows_ += request->request->rows;
  const int level = request->level;
  // Highest level (lowest number) first, in arrival order within a level.
  auto at = queue_.end();
  while (at != queue_.begin() && std::prev(at)->level > level) --at;
  queue_.insert(at, std::move(*request));
  // One drain task waits for a worker at a time, unless this request
  // outranks it: then one more, at this request's level, so that it does
  // not wait behind the worker queue's lower levels.
  if (drain_scheduled_ && level >= drain_level_) return AddResult::kQueued;
  drain_scheduled_ = true;
  drain_level_ = level;
  return AddResult::kQueuedScheduleDrain;
}

std::vector<PendingRequest> Batcher::Take(bool* schedule_another) {
  absl::MutexLock lock(&mu_);
  const int64_t max_rows = options_.max_batch_rows;
  if (options_.max_queue_delay_us > 0 && !queue_.empty() && !FairShareQueued()) {
    // Wait for this worker's fair share of the rows in the server, at most
    // until the oldest request has waited max_queue_delay_us.
    const auto waited = std::chrono::steady_clock::now() - queue_.front().arrival;
    const absl::Duration left =
        absl::Microseconds(options_.max_queue_delay_us) - absl::FromChrono(waited);
    if (left > absl::ZeroDuration()) {
      mu_.AwaitWithTimeout(absl::Condition(this, &Batcher::FairShareQueued), left);
    }
  }
  std::vector<PendingRequest> batch;
  int64_t rows = 0;
  while (!queue_.empty()) {
    const int64_t next = queue_.front().request->rows;
    if (!batch.empty() && rows + next > max_rows) break;
    rows += next;
    batch.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  queued_rows_ -= rows;
  running_rows_ += rows;
  drain_scheduled_ = !queue_.empty();
  if (drain_scheduled_) drain_level_ = queue_.front().level;
  *schedule_another = drain_scheduled_;
  return batch;
}

int Batcher::DrainLevel() const {
  absl::MutexLock lock(&mu_);
  return drain_level_;
}

void Batcher::Finished(int64_t rows) {
  absl::MutexLock lock(&mu_);
  running_rows_ -= rows;
}

std::vector<PendingRequest> Batcher::TakeAll() {
  absl::MutexLock lock(&mu_);
  std::vector<PendingRequest> all(std::make_move_iterator(queue_.begin()),
                                  std::make_move_iterator(queue_.end()));
  queue_.clear();
  queued_rows_ = 0;
  drain_scheduled_ = false;
  return all;
}

}  // namespace sparse
