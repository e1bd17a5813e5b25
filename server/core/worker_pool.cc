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

std::deque<WorkerPool::Task>* WorkerPool::Next(const std::string** name) {
  for (auto& [level, by_line] : queues_) {
    std::deque<Task>* best = nullptr;
    const Line* best_line = nullptr;
    for (auto& [line_name, tasks] : by_line) {
      const Line& line = lines_.at(line_name);
      if (line.max_running > 0 && line.running >= line.max_running) continue;
      if (best == nullptr || line.used < best_line->used ||
          (line.used == best_line->used && tasks.front().seq < best->front().seq)) {
        best = &tasks;
        best_line = &line;
        *name = &line_name;
      }
    }
    // Lines at their cap leave the workers to lower levels' tasks.
    if (best != nullptr) return best;
  }
  return nullptr;
}

void WorkerPool::Work() {
  SetKernelThreads(1);
  while (true) {
    std::function<void()> task;
    std::string line_name;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &WorkerPool::HasRunnableOrStopping));
      const std::string* name = nullptr;
      std::deque<Task>* tasks = Next(&name);
      if (tasks == nullptr) return;  // stopping and drained
      line_name = *name;
      task = std::move(tasks->front().run);
      tasks->pop_front();
      for (auto level = queues_.begin(); level != queues_.end(); ++level) {
        auto it = level->second.find(line_name);
        if (it == level->second.end() || &it->second != tasks) continue;
        if (tasks->empty()) level->second.erase(it);
        if (level->second.empty()) queues_.erase(level);
        break;
      }
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
