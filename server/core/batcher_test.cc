// Batcher: batches form from the oldest requests up to max_batch_rows, one
// drain is asked for at a time, a full queue refuses, and a free worker
// waits at most max_queue_delay_us for its fair share of the rows.
//
// Wall-clock bounds here cannot flake: "did not wait for the 5 s delay" is
// checked as "returned within 4 s" (the work itself takes microseconds),
// and the one lower bound is what the wait guarantees.
#include "server/core/batcher.h"

#include <thread>

#include "gtest/gtest.h"

namespace sparse {
namespace {

class BatcherTest : public ::testing::Test {
 protected:
  // A pending request of `rows` rows; the request objects live in the fixture.
  PendingRequest Pending(int64_t rows) {
    requests_.push_back(std::make_unique<InferRequest>());
    requests_.back()->rows = rows;
    PendingRequest p;
    p.request = requests_.back().get();
    p.arrival = std::chrono::steady_clock::now();
    return p;
  }
  std::vector<std::unique_ptr<InferRequest>> requests_;
};

std::vector<int64_t> Rows(const std::vector<PendingRequest>& batch) {
  std::vector<int64_t> rows;
  for (const PendingRequest& p : batch) rows.push_back(p.request->rows);
  return rows;
}

// Priority levels: a batch takes the highest level first, oldest first
// within a level; a request that outranks the drain task asked for gets one
// more at its own level.
TEST_F(BatcherTest, TakesTheHighestLevelFirstAndAsksForADrainAtAHigherLevel) {
  Batcher b;
  BatchingOptions o{.enabled = true, .workers = 1, .max_batch_rows = 2, .max_queue_delay_us = 0,
                    .max_queue_size = 10};
  auto at = [&](int64_t rows, int level) {
    PendingRequest p = Pending(rows);
    p.level = level;
    return p;
  };
  PendingRequest low = at(1, 3), low2 = at(2, 3), high = at(3, 1), mid = at(4, 2);
  EXPECT_EQ(b.Add(&low, o), Batcher::AddResult::kQueuedScheduleDrain);
  EXPECT_EQ(b.DrainLevel(), 3);
  EXPECT_EQ(b.Add(&low2, o), Batcher::AddResult::kQueued);
  EXPECT_EQ(b.Add(&high, o), Batcher::AddResult::kQueuedScheduleDrain);  // outranks level 3
  EXPECT_EQ(b.DrainLevel(), 1);
  EXPECT_EQ(b.Add(&mid, o), Batcher::AddResult::kQueued);  // level 1 is asked for already
  bool another = false;
  EXPECT_EQ(Rows(b.Take(&another)), (std::vector<int64_t>{3}));
  EXPECT_TRUE(another);
  EXPECT_EQ(b.DrainLevel(), 2);
  EXPECT_EQ(Rows(b.Take(&another)), (std::vector<int64_t>{4}));
  EXPECT_EQ(Rows(b.Take(&another)), (std::vector<int64_t>{1}));  // 1 + 2 > 2 rows
  EXPECT_EQ(Rows(b.Take(&another)), (std::vector<int64_t>{2}));
  EXPECT_FALSE(another);
}

TEST_F(BatcherTest, TakesTheOldestRequestsUpToMaxRowsAndAsksForOneDrainAtATime) {
  Batcher b;
  BatchingOptions o = BatchingOptions{.enabled = true, .workers = 1, .max_batch_rows = 8, .max_queue_delay_us = 0, .max_queue_size = 10};
  PendingRequest p = Pending(3);
  EXPECT_EQ(b.Add(&p, o), Batcher::AddResult::kQueuedScheduleDrain);
  for (int64_t rows : {4, 2, 5}) {
    PendingRequest q = Pending(rows);
    EXPECT_EQ(b.Add(&q, o), Batcher::AddResult::kQueued);
  }
  bool another = false;
  EXPECT_EQ(Rows(b.Take(&another)), (std::vector<int64_t>{3, 4}));  // 3+4 = 7; +2 > 8
  EXPECT_TRUE(another);
  EXPECT_EQ(Rows(b.Take(&another)), (std::vector<int64_t>{2, 5}));
  EXPECT_FALSE(another);
  // Idle again: the next request asks for a drain.
  PendingRequest r = Pending(20);  // larger than a batch: runs alone
  EXPECT_EQ(b.Add(&r, o), Batcher::AddResult::kQueuedScheduleDrain);
  EXPECT_EQ(Rows(b.Take(&another)), (std::vector<int64_t>{20}));
}

TEST_F(BatcherTest, AFullQueueRefusesAndHandsTheRequestBack) {
  Batcher b;
  BatchingOptions o = BatchingOptions{.enabled = true, .workers = 1, .max_batch_rows = 8, .max_queue_delay_us = 0, .max_queue_size = 2};
  for (int i = 0; i < 2; ++i) {
    PendingRequest p = Pending(1);
    EXPECT_NE(b.Add(&p, o), Batcher::AddResult::kFull);
  }
  PendingRequest refused = Pending(1);
  refused.done = [](absl::Status) {};
  EXPECT_EQ(b.Add(&refused, o), Batcher::AddResult::kFull);
  EXPECT_TRUE(refused.done != nullptr);  // still the caller's to finish
  EXPECT_EQ(b.TakeAll().size(), 2u);
}

// The `< 4 s` checks below tell "went without waiting out the 5 s delay"
// from "waited it out": only a 4 s stall of the whole machine fails them.
TEST_F(BatcherTest, AFreeWorkerWaitsForItsFairShareAtMostTheQueueDelay) {
  Batcher b;
  BatchingOptions o = BatchingOptions{.enabled = true, .workers = 2, .max_batch_rows = 8, .max_queue_delay_us = 5'000'000,
                .max_queue_size = 64};
  bool another = false;
  // Nothing computes: a lone request goes at once despite the 5 s delay.
  PendingRequest lone = Pending(1);
  b.Add(&lone, o);
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(b.Take(&another).size(), 1u);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(4));
  b.Finished(1);

  // Six rows queued, none computing: the share of one of 2 workers is 3, so
  // the first worker takes all six at once.
  for (int i = 0; i < 6; ++i) {
    PendingRequest p = Pending(1);
    b.Add(&p, o);
  }
  EXPECT_EQ(b.Take(&another).size(), 6u);
  // Those 6 compute. The next worker waits for its share: q queued rows
  // with q >= (q + 6) / 2, so 6; it goes as soon as they are there, long
  // before the 5 s delay.
  PendingRequest first = Pending(1);
  b.Add(&first, o);
  std::thread adder([&] {
    for (int i = 0; i < 5; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      PendingRequest p = Pending(1);
      b.Add(&p, o);
    }
  });
  start = std::chrono::steady_clock::now();
  std::vector<PendingRequest> batch = b.Take(&another);
  adder.join();
  EXPECT_EQ(batch.size(), 6u);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(4));

  // 12 rows compute; with a short delay and nobody else coming, the next
  // worker takes what is there once the delay is over.
  o = BatchingOptions{.enabled = true, .workers = 2, .max_batch_rows = 8, .max_queue_delay_us = 2000,
                .max_queue_size = 64};
  PendingRequest alone = Pending(1);
  const auto arrival = alone.arrival;
  b.Add(&alone, o);
  EXPECT_EQ(b.Take(&another).size(), 1u);
  // A lower bound: the wait lasts at least the delay after the request's
  // arrival, however slow the machine.
  EXPECT_GE(std::chrono::steady_clock::now() - arrival, std::chrono::microseconds(2000));

  // When the computing batches finish, a waiting worker's share is what is
  // queued: it stops waiting.
  o = BatchingOptions{.enabled = true, .workers = 2, .max_batch_rows = 8, .max_queue_delay_us = 5'000'000,
                .max_queue_size = 64};
  PendingRequest last = Pending(1);
  b.Add(&last, o);
  std::thread finisher([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    b.Finished(13);
  });
  start = std::chrono::steady_clock::now();
  EXPECT_EQ(b.Take(&another).size(), 1u);
  finisher.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(4));
}

}  // namespace
}  // namespace sparse
