#include "server/core/worker_pool.h"

#include <algorithm>
#include <chrono>
#include <utility>

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

bool WorkerPool::Submit(std::function<void()> task, int level, const Share& share) {
  absl::MutexLock lock(&mu_);
  if (stopping_ || queued_ >= max_queue_) return false;
  Line& line = lines_[share.line];
  line.weight = std::max<uint32_t>(1, share.weight);
  line.max_running = std::max(0, share.max_running);
  // A line that waited for nothing starts level with the one in service.
  if (line.queued == 0 && line.running == 0) line.used = std::max(line.used, clock_);
  ++line.queued;
  queues_[level][share.line].push_back(Task{std::move(task), seq_++});
  ++queued_;
  return true;
}

std::optional<WorkerPool::Pick> WorkerPool::Next() {
  for (auto level = queues_.begin(); level != queues_.end(); ++level) {
    std::optional<Pick> best;
    const Line* best_line = nullptr;
    for (auto it = level->second.begin(); it != level->second.end(); ++it) {
      const Line& line = lines_.at(it->first);
      if (line.max_running > 0 && line.running >= line.max_running) continue;
      if (!best.has_value() || line.used < best_line->used ||
          (line.used == best_line->used &&
           it->second.front().seq < best->line->second.front().seq)) {
        best = Pick{level, it};
        best_line = &line;
      }
    }
    // Lines at their cap leave the workers to lower levels' tasks.
    if (best.has_value()) return best;
  }
  return std::nullopt;
}

void WorkerPool::Work() {
  SetKernelThreads(1);
  while (true) {
    std::function<void()> task;
    std::string line_name;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &WorkerPool::HasRunnableOrStopping));
      const std::optional<Pick> pick = Next();
      if (!pick.has_value()) return;  // stopping and drained
      line_name = pick->line->first;
      std::deque<Task>& tasks = pick->line->second;
      task = std::move(tasks.front().run);
      tasks.pop_front();
      if (tasks.empty()) pick->level->second.erase(pick->line);
      if (pick->level->second.empty()) queues_.erase(pick->level);
      Line& line = lines_.at(line_name);
      --line.queued;
      ++line.running;
      clock_ = std::max(clock_, line.used);
      --queued_;
    }
    // A task answers its own requests, failing them when what it runs
    // throws (InferenceCore); this catches what escapes even that, so the
    // worker lives on.
    busy_.fetch_add(1, std::memory_order_relaxed);
    const auto start = std::chrono::steady_clock::now();
    (void)CatchInternal(ErrorSite::kWorker, task);
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                        std::chrono::steady_clock::now() - start)
                        .count();
    busy_.fetch_sub(1, std::memory_order_relaxed);
    absl::MutexLock lock(&mu_);
    Line& line = lines_.at(line_name);
    --line.running;
    line.used += static_cast<double>(ns) / line.weight;
    if (line.running == 0 && line.queued == 0) lines_.erase(line_name);
  }
}

int64_t WorkerPool::queued() const {
  absl::MutexLock lock(&mu_);
  return queued_;
}

}  // namespace sparse
