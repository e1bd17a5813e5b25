#include "server/core/worker_pool.h"

#include <algorithm>
#include <atomic>
#include <string>
#include <stdexcept>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/internal_error.h"
#include "gtest/gtest.h"

namespace sparse {
namespace {

// Occupies one of `pool`'s workers until `release` is notified, so that
// what is submitted next waits in the queue.
void Hold(WorkerPool& pool, absl::Notification* release) {
  absl::Notification started;
  ASSERT_TRUE(pool.Submit([&started, release] {
    started.Notify();
    release->WaitForNotification();
  }));
  started.WaitForNotification();
}

TEST(WorkerPoolTest, ATaskThatThrowsIsCountedAndTheWorkerGoesOn) {
  const int64_t before = InternalErrors(ErrorSite::kWorker);
  std::atomic<int> done{0};
  {
    WorkerPool pool(1, 10);
    ASSERT_TRUE(pool.Submit([] { throw std::runtime_error("a task's bug"); }));
    ASSERT_TRUE(pool.Submit([&done] { ++done; }));
  }
  EXPECT_EQ(done.load(), 1);
  EXPECT_EQ(InternalErrors(ErrorSite::kWorker), before + 1);
}

TEST(WorkerPoolTest, AFreeWorkerTakesTheHighestLevelFirstInOrderWithinALevel) {
  absl::Notification release;
  absl::Mutex mu;
  std::vector<int> order;
  {
    WorkerPool pool(1, 100);
    Hold(pool, &release);
    auto record = [&](int id) {
      return [&, id] {
        absl::MutexLock lock(&mu);
        order.push_back(id);
      };
    };
    ASSERT_TRUE(pool.Submit(record(30), 3));
    ASSERT_TRUE(pool.Submit(record(10), 1));
    ASSERT_TRUE(pool.Submit(record(20), 2));
    ASSERT_TRUE(pool.Submit(record(11), 1));
    ASSERT_TRUE(pool.Submit(record(31), 3));
    EXPECT_EQ(pool.queued(), 5);
    release.Notify();
  }
  EXPECT_EQ(order, (std::vector<int>{10, 11, 20, 30, 31}));
}

TEST(WorkerPoolTest, RunsEveryTaskAndDrainsOnDestruction) {
  std::atomic<int> done{0};
  {
    WorkerPool pool(2, 1000);
    EXPECT_EQ(pool.threads(), 2);
    for (int i = 0; i < 500; ++i) ASSERT_TRUE(pool.Submit([&done] { ++done; }));
  }
  EXPECT_EQ(done.load(), 500);
}

TEST(WorkerPoolTest, AFullQueueRefusesExactlyTheOverflow) {
  absl::Notification release;
  std::atomic<int> done{0};
  WorkerPool pool(1, 3);
  // Occupy the only worker, then fill the queue.
  Hold(pool, &release);
  int accepted = 0, refused = 0;
  for (int i = 0; i < 10; ++i) (pool.Submit([&done] { ++done; }) ? accepted : refused)++;
  EXPECT_EQ(accepted, 3);
  EXPECT_EQ(refused, 7);
  release.Notify();
  // Queued work still runs; the pool accepts again once it drains.
  while (done.load() < 3) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_TRUE(pool.Submit([&done] { ++done; }));
}

TEST(WorkerPoolTest, LinesShareTheWorkersByWeightChargedByBusyTime) {
  // One worker, two models' lines flooded alike; "b" weighs 3 times "a":
  // it gets about three of every four tasks, each taking the same time.
  absl::Notification release;
  absl::Mutex mu;
  std::vector<char> order;
  {
    WorkerPool pool(1, 1000);
    Hold(pool, &release);
    auto task = [&](char line) {
      return [&, line] {
        absl::SleepFor(absl::Milliseconds(2));
        absl::MutexLock lock(&mu);
        order.push_back(line);
      };
    };
    for (int i = 0; i < 40; ++i) {
      ASSERT_TRUE(pool.Submit(task('a'), 1, {.line = "a", .weight = 1}));
      ASSERT_TRUE(pool.Submit(task('b'), 1, {.line = "b", .weight = 3}));
    }
    release.Notify();
  }
  ASSERT_EQ(order.size(), 80u);
  const int b_first_40 = static_cast<int>(std::count(order.begin(), order.begin() + 40, 'b'));
  EXPECT_GE(b_first_40, 26) << std::string(order.begin(), order.end());
  EXPECT_LE(b_first_40, 34) << std::string(order.begin(), order.end());
}

TEST(WorkerPoolTest, LinesWithoutWeightsServeInArrivalOrder) {
  // Today's behaviour when no model sets a weight or a cap: one line.
  absl::Notification release;
  absl::Mutex mu;
  std::vector<int> order;
  {
    WorkerPool pool(1, 100);
    Hold(pool, &release);
    for (int i = 0; i < 6; ++i) {
      ASSERT_TRUE(pool.Submit([&, i] {
        absl::SleepFor(absl::Milliseconds(i % 2 == 0 ? 5 : 0));  // unequal: no effect
        absl::MutexLock lock(&mu);
        order.push_back(i);
      }));
    }
    release.Notify();
  }
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4, 5}));
}

TEST(WorkerPoolTest, ALineAtItsCapLeavesTheOtherWorkersToOtherLines) {
  // Two workers; line "a" may run one task at a time (instance_count 1).
  // A task of line "b" queued behind four of a's runs beside them at once.
  std::atomic<int> a_running{0}, a_most{0}, a_done{0};
  absl::Notification b_ran;
  int a_done_when_b_ran = -1;
  {
    WorkerPool pool(2, 100);
    const WorkerPool::Share a{.line = "a", .weight = 1, .max_running = 1};
    for (int i = 0; i < 4; ++i) {
      ASSERT_TRUE(pool.Submit([&] {
        const int now = ++a_running;
        int most = a_most.load();
        while (now > most && !a_most.compare_exchange_weak(most, now)) {
        }
        absl::SleepFor(absl::Milliseconds(30));
        --a_running;
        ++a_done;
      }, 1, a));
    }
    ASSERT_TRUE(pool.Submit([&] {
      a_done_when_b_ran = a_done.load();
      b_ran.Notify();
    }, 1, {.line = "b"}));
    ASSERT_TRUE(b_ran.WaitForNotificationWithTimeout(absl::Seconds(30)));
  }
  EXPECT_EQ(a_most.load(), 1);
  EXPECT_EQ(a_done.load(), 4);
  EXPECT_LE(a_done_when_b_ran, 1);  // it did not wait for the line ahead of it
}

}  // namespace
}  // namespace sparse
