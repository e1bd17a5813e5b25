#include "server/core/worker_pool.h"

#include "common/internal_error.h"
#include "engine/matmul_kernel.h"

namespace sparse {

WorkerPool::WorkerPool(int threads, int64_t max_queue) : max_queue_(max_queue) {
  for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { Work(); });
}

WorkerPool::~WorkerPool() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : workers_) t.join();
}

bool WorkerPool::Submit(std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  if (stopping_ || static_cast<int64_t>(queue_.size()) >= max_queue_) return false;
  queue_.push_back(std::move(task));
  return true;
}

void WorkerPool::Work() {
  SetKernelThreads(1);
  while (true) {
    std::function<void()> task;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &WorkerPool::HasWorkOrStopping));
      if (queue_.empty()) return;  // stopping and drained
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    // A task answers its own requests, failing them when what it runs
    // throws (InferenceCore); this catches what escapes even that, so the
    // worker lives on.
    busy_.fetch_add(1, std::memory_order_relaxed);
    (void)CatchInternal(ErrorSite::kWorker, task);
    busy_.fetch_sub(1, std::memory_order_relaxed);
  }
}

int64_t WorkerPool::queued() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(queue_.size());
}

}  // namespace sparse
