#include "server/core/worker_pool.h"

#include <atomic>
#include <stdexcept>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/internal_error.h"
#include "gtest/gtest.h"

namespace sparse {
namespace {

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
  absl::Notification release, started;
  absl::Mutex mu;
  std::vector<int> order;
  {
    WorkerPool pool(1, 100);
    ASSERT_TRUE(pool.Submit([&] {
      started.Notify();
      release.WaitForNotification();
    }));
    started.WaitForNotification();
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
  absl::Notification release, started;
  std::atomic<int> done{0};
  WorkerPool pool(1, 3);
  // Occupy the only worker, then fill the queue.
  ASSERT_TRUE(pool.Submit([&] {
    started.Notify();
    release.WaitForNotification();
  }));
  started.WaitForNotification();
  int accepted = 0, refused = 0;
  for (int i = 0; i < 10; ++i) (pool.Submit([&done] { ++done; }) ? accepted : refused)++;
  EXPECT_EQ(accepted, 3);
  EXPECT_EQ(refused, 7);
  release.Notify();
  // Queued work still runs; the pool accepts again once it drains.
  while (done.load() < 3) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_TRUE(pool.Submit([&done] { ++done; }));
}

}  // namespace
}  // namespace sparse
