// WorkerPool: a fixed set of threads that run inference, one request per
// core, each with one OpenMP thread for oneDNN (DESIGN.md §5). The queue in
// front of them is bounded: Submit() refuses work when it is full, so an
// overloaded server answers UNAVAILABLE instead of growing without limit.
//
// Thread-safety: Submit() may be called from any thread. The destructor
// runs every queued task, then joins the workers.
#ifndef SPARSE_SERVER_CORE_WORKER_POOL_H_
#define SPARSE_SERVER_CORE_WORKER_POOL_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace sparse {

class WorkerPool {
 public:
  // REQUIRES: threads >= 1, max_queue >= 1.
  WorkerPool(int threads, int64_t max_queue);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Queues `task` at priority `level` (1 is the highest; a free worker
  // takes the first task of the highest level waiting); false (and `task`
  // is dropped unrun) when the queue holds max_queue tasks already.
  bool Submit(std::function<void()> task, int level = 1);

  int threads() const { return static_cast<int>(workers_.size()); }
  int64_t max_queue() const { return max_queue_; }
  // Workers running a task now, and tasks waiting for one (gauges: read
  // without stopping the pool).
  int64_t busy() const { return busy_.load(std::memory_order_relaxed); }
  int64_t queued() const;

 private:
  void Work();
  bool HasWorkOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || queued_ > 0;
  }

  const int64_t max_queue_;
  mutable absl::Mutex mu_;
  // By level; a level's queue is dropped when it empties.
  std::map<int, std::deque<std::function<void()>>> queues_ ABSL_GUARDED_BY(mu_);
  int64_t queued_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<int64_t> busy_{0};
  std::vector<std::thread> workers_;
};

}  // namespace sparse

#endif  // SPARSE_SERVER_CORE_WORKER_POOL_H_
