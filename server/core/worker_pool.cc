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

bool WorkerPool::Submit(std::function<void()> task, int level) {
  absl::MutexLock lock(&mu_);
  if (stopping_ || queued_ >= max_queue_) return false;
  queues_[level].push_back(std::move(task));
  ++queued_;
  return true;
}

void WorkerPool::Work() {
  SetKernelThreads(1);
  while (true) {
    std::function<void()> task;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &WorkerPool::HasWorkOrStopping));
      if (queued_ == 0) return;  // stopping and drained
      auto first = queues_.begin();  // the highest level waiting
      task = std::move(first->second.front());
      first->second.pop_front();
      if (first->second.empty()) queues_.erase(first);
      --queued_;
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
  return queued_;
}

}  // namespace sparse
