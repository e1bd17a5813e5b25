// WorkerPool: a fixed set of threads that run inference, one request per
// core, each with one OpenMP thread for oneDNN (DESIGN.md §5). The queue in
// front of them is bounded: Submit() refuses work when it is full, so an
// overloaded server answers UNAVAILABLE instead of growing without limit.
//
// Which task a free worker takes: the highest priority level waiting
// first (1 is the highest). Within a level, tasks wait in lines, one per
// share (Share::line): the line of work of no model in particular, and one
// line per model given a weight or a cap in its config.pbtxt. Within a line
// tasks run in order; between lines the worker takes the line that has
// used the least worker time for its weight (start-time fair queuing, each
// task's busy time charged to its line once it has run), skipping a line
// whose cap of running tasks is reached. A line that has waited for nothing
// starts level with the lines in service, so idle time saves no credit.
// With no weights or caps configured there is one line per level: first
// come, first served, as before per-model limits existed.
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
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace sparse {

// Whose line a task waits in and what that line may take. A task's share
// updates its line's weight and cap (the config as it is now).
struct WorkerShare {
  std::string line;     // "": the line shared by work of no model
  uint32_t weight = 1;  // worker time in proportion to it (0 counts as 1)
  int max_running = 0;  // the most of the line's tasks running at once; 0: any
};

class WorkerPool {
 public:
  using Share = WorkerShare;

  // REQUIRES: threads >= 1, max_queue >= 1.
  WorkerPool(int threads, int64_t max_queue);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Queues `task` at priority `level` in `share`'s line; false (and `task`
  // is dropped unrun) when the queue holds max_queue tasks already.
  bool Submit(std::function<void()> task, int level = 1, const Share& share = Share());

  int threads() const { return static_cast<int>(workers_.size()); }
  int64_t max_queue() const { return max_queue_; }
  // Workers running a task now, and tasks waiting for one (gauges: read
  // without stopping the pool).
  int64_t busy() const { return busy_.load(std::memory_order_relaxed); }
  int64_t queued() const;

 private:
  struct Line {
    uint32_t weight = 1;
    int max_running = 0;
    int running = 0;
    int64_t queued = 0;
    double used = 0;  // virtual time: busy nanoseconds / weight, since it last waited
  };
  struct Task {
    std::function<void()> run;
    uint64_t seq = 0;  // arrival order, across lines
  };
  // Level -> line -> its tasks in order; an empty one is dropped.
  using LineQueues = std::map<std::string, std::deque<Task>>;
  using Queues = std::map<int, LineQueues>;
  // Where the task a free worker takes next waits: its level and its line.
  struct Pick {
    Queues::iterator level;
    LineQueues::iterator line;
  };

  void Work();
  // The line a free worker serves next; nullopt when every waiting line is
  // at its cap, or nothing waits.
  std::optional<Pick> Next() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool HasRunnableOrStopping() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return (stopping_ && queued_ == 0) || Next().has_value();
  }

  const int64_t max_queue_;
  mutable absl::Mutex mu_;
  Queues queues_ ABSL_GUARDED_BY(mu_);
  // Lines with tasks queued or running; dropped when they have neither.
  absl::flat_hash_map<std::string, Line> lines_ ABSL_GUARDED_BY(mu_);
  double clock_ ABSL_GUARDED_BY(mu_) = 0;  // the virtual time of the line served last
  uint64_t seq_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t queued_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<int64_t> busy_{0};
  std::vector<std::thread> workers_;
};

}  // namespace sparse

#endif  // SPARSE_SERVER_CORE_WORKER_POOL_H_
