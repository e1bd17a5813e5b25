#include "server/core/admission_gate.h"

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sparse {
namespace {

using ::testing::HasSubstr;

sparse::v1::Limits Limits(int64_t max_in_flight, int64_t delay_us = 0) {
  sparse::v1::Limits limits;
  limits.set_max_in_flight(max_in_flight);
  if (delay_us > 0) {
    limits.set_over_limit(sparse::v1::Limits::DELAY);
    limits.set_max_delay_us(delay_us);
  }
  return limits;
}

// Where a waiter's resume lands.
struct Outcome {
  absl::Notification resumed;
  absl::Status status;
  AdmissionGates::Resume Resume() {
    return [this](const absl::Status& s) {
      status = s;
      resumed.Notify();
    };
  }
};

TEST(AdmissionGatesTest, OverTheLimitARequestIsRefusedAtOnceWithReject) {
  AdmissionGates gates;
  Outcome unused;
  for (int i = 0; i < 2; ++i) {
    auto entry = gates.Enter("m", Limits(2), 1, absl::InfiniteFuture(), unused.Resume());
    ASSERT_TRUE(entry.ok());
    EXPECT_EQ(*entry, AdmissionGates::Entry::kEntered);
  }
  auto third = gates.Enter("m", Limits(2), 1, absl::InfiniteFuture(), unused.Resume());
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(third.status().message()),
              HasSubstr("model 'm' has its limit of 2 requests in flight"));
  EXPECT_THAT(std::string(third.status().message()), HasSubstr("limits.max_in_flight"));
  // Another model has its own limit.
  EXPECT_TRUE(gates.Enter("other", Limits(1), 1, absl::InfiniteFuture(), unused.Resume()).ok());
  gates.Leave("m");
  EXPECT_EQ(gates.in_flight("m"), 1);
  EXPECT_TRUE(gates.Enter("m", Limits(2), 1, absl::InfiniteFuture(), unused.Resume()).ok());
  EXPECT_FALSE(unused.resumed.HasBeenNotified());
}

TEST(AdmissionGatesTest, WaitersTakeFreedPlacesByLevelThenArrival) {
  AdmissionGates gates;
  Outcome first, low, high_a, high_b;
  const sparse::v1::Limits limits = Limits(1, 60'000'000);
  ASSERT_EQ(*gates.Enter("m", limits, 1, absl::InfiniteFuture(), first.Resume()),
            AdmissionGates::Entry::kEntered);
  ASSERT_EQ(*gates.Enter("m", limits, 2, absl::InfiniteFuture(), low.Resume()),
            AdmissionGates::Entry::kWaiting);
  ASSERT_EQ(*gates.Enter("m", limits, 1, absl::InfiniteFuture(), high_a.Resume()),
            AdmissionGates::Entry::kWaiting);
  ASSERT_EQ(*gates.Enter("m", limits, 1, absl::InfiniteFuture(), high_b.Resume()),
            AdmissionGates::Entry::kWaiting);
  EXPECT_EQ(gates.waiting("m"), 3);
  gates.Leave("m");
  ASSERT_TRUE(high_a.resumed.HasBeenNotified());
  EXPECT_TRUE(high_a.status.ok());
  EXPECT_FALSE(high_b.resumed.HasBeenNotified());
  gates.Leave("m");
  ASSERT_TRUE(high_b.resumed.HasBeenNotified());
  EXPECT_FALSE(low.resumed.HasBeenNotified());
  gates.Leave("m");
  ASSERT_TRUE(low.resumed.HasBeenNotified());
  EXPECT_EQ(gates.in_flight("m"), 1);
  EXPECT_EQ(gates.waiting("m"), 0);
  EXPECT_FALSE(first.resumed.HasBeenNotified());  // it entered: nothing to resume
}

TEST(AdmissionGatesTest, AWaiterWhoseDelayRunsOutIsResourceExhausted) {
  AdmissionGates gates;
  Outcome first, late;
  const sparse::v1::Limits limits = Limits(1, 20'000);
  ASSERT_TRUE(gates.Enter("m", limits, 1, absl::InfiniteFuture(), first.Resume()).ok());
  const absl::Time start = absl::Now();
  ASSERT_EQ(*gates.Enter("m", limits, 1, absl::InfiniteFuture(), late.Resume()),
            AdmissionGates::Entry::kWaiting);
  ASSERT_TRUE(late.resumed.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(20));
  EXPECT_EQ(late.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(late.status.message()), HasSubstr("limits.max_delay_us (20000 us)"));
  EXPECT_EQ(gates.waiting("m"), 0);
  gates.Leave("m");  // the place freed later goes to no one
  EXPECT_EQ(gates.in_flight("m"), 0);
}

TEST(AdmissionGatesTest, AWaiterWhoseOwnDeadlineComesFirstIsDeadlineExceeded) {
  AdmissionGates gates;
  Outcome first, late;
  const sparse::v1::Limits limits = Limits(1, 60'000'000);
  ASSERT_TRUE(gates.Enter("m", limits, 1, absl::InfiniteFuture(), first.Resume()).ok());
  ASSERT_EQ(*gates.Enter("m", limits, 1, absl::Now() + absl::Milliseconds(10), late.Resume()),
            AdmissionGates::Entry::kWaiting);
  ASSERT_TRUE(late.resumed.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_EQ(late.status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(late.status.message()), HasSubstr("timeout passed while it waited"));
}

TEST(AdmissionGatesTest, WaitersLeftAtDestructionAreAnsweredUnavailable) {
  Outcome first, waiter;
  {
    AdmissionGates gates;
    const sparse::v1::Limits limits = Limits(1, 60'000'000);
    ASSERT_TRUE(gates.Enter("m", limits, 1, absl::InfiniteFuture(), first.Resume()).ok());
    ASSERT_TRUE(gates.Enter("m", limits, 1, absl::InfiniteFuture(), waiter.Resume()).ok());
  }
  ASSERT_TRUE(waiter.resumed.HasBeenNotified());
  EXPECT_EQ(waiter.status.code(), absl::StatusCode::kUnavailable);
}

TEST(AdmissionGatesTest, ALongLineOfWaitersThatFailAtOnceDoesNotNest) {
  // Each resumed waiter leaves at once (as one whose worker queue is full
  // does); 100,000 of them would overflow the stack if each Leave() called
  // the next resume inside itself.
  AdmissionGates gates;
  const sparse::v1::Limits limits = Limits(1, 60'000'000);
  Outcome first;
  ASSERT_TRUE(gates.Enter("m", limits, 1, absl::InfiniteFuture(), first.Resume()).ok());
  constexpr int kWaiters = 100'000;
  std::atomic<int> resumed{0};
  for (int i = 0; i < kWaiters; ++i) {
    ASSERT_TRUE(gates
                    .Enter("m", limits, 1, absl::InfiniteFuture(),
                           [&](const absl::Status& s) {
                             if (s.ok()) ++resumed;
                             gates.Leave("m");
                           })
                    .ok());
  }
  gates.Leave("m");
  EXPECT_EQ(resumed.load(), kWaiters);
  EXPECT_EQ(gates.in_flight("m"), 0);
}

}  // namespace
}  // namespace sparse
