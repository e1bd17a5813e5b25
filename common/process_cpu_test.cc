// ReadProcessCpu and UsableCores (common/process_cpu.h), behind the "CPU
// per request" figures: CPU time never goes backwards, grows when any
// thread of the process computes (also one that has since exited), and
// total_ns() is user + system; UsableCores() follows the affinity mask and
// is at least 1. No assertion bounds a duration: only the direction of
// change is checked.
#include "common/process_cpu.h"

#include <sched.h>
#include <time.h>

#include <cstdint>
#include <thread>

#include "gtest/gtest.h"

namespace sparse {
namespace {

// Computes for a while: enough arithmetic (tens of milliseconds of CPU)
// that the kernel's accounting must advance. The result is kept so that
// the loop cannot be optimized away.
uint64_t BurnCpu() {
  volatile uint64_t sink = 0;
  uint64_t x = 0x9e3779b97f4a7c15;
  for (int i = 0; i < 50'000'000; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    if ((i & 0xffff) == 0) sink = sink + x;
  }
  return sink + x;
}

TEST(ProcessCpuTest, TotalIsUserPlusSystem) {
  const ProcessCpu cpu = ReadProcessCpu();
  EXPECT_GE(cpu.user_ns, 0);
  EXPECT_GE(cpu.system_ns, 0);
  EXPECT_EQ(cpu.total_ns(), cpu.user_ns + cpu.system_ns);

  ProcessCpu made;
  made.user_ns = 3;
  made.system_ns = 4;
  EXPECT_EQ(made.total_ns(), 7);
  EXPECT_EQ(ProcessCpu().total_ns(), 0);
}

TEST(ProcessCpuTest, NeverDecreasesAndGrowsWhenThisThreadComputes) {
  const ProcessCpu before = ReadProcessCpu();
  EXPECT_NE(BurnCpu(), 1u);
  const ProcessCpu after = ReadProcessCpu();
  EXPECT_GE(after.system_ns, before.system_ns);
  // Pure arithmetic runs in user mode: that is where the time must show.
  EXPECT_GT(after.user_ns, before.user_ns);
  EXPECT_GT(after.total_ns(), before.total_ns());
}

int64_t ThreadCpuNanos() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}

TEST(ProcessCpuTest, CountsOtherThreadsIncludingFinishedOnes) {
  const ProcessCpu before = ReadProcessCpu();
  uint64_t result = 0;
  int64_t worker_ns = 0;  // the worker's own CPU time, as the kernel counts it
  std::thread worker([&result, &worker_ns] {
    const int64_t start = ThreadCpuNanos();
    result = BurnCpu();
    worker_ns = ThreadCpuNanos() - start;
  });
  worker.join();  // its CPU time stays counted after it exits
  EXPECT_NE(result, 1u);
  const ProcessCpu after = ReadProcessCpu();
  EXPECT_GE(after.user_ns, before.user_ns);
  EXPECT_GE(after.system_ns, before.system_ns);
  // The process's time includes the worker's: comparing two CPU-time
  // counters of the same kernel, not a duration. Half leaves room for
  // rounding to microseconds; this thread alone (waiting in join) comes
  // nowhere near it.
  ASSERT_GT(worker_ns, 0);
  EXPECT_GE(after.total_ns() - before.total_ns(), worker_ns / 2)
      << "worker used " << worker_ns << " ns";
}

TEST(ProcessCpuTest, ConsecutiveReadsAreMonotonic) {
  ProcessCpu previous = ReadProcessCpu();
  for (int i = 0; i < 10000; ++i) {
    const ProcessCpu now = ReadProcessCpu();
    ASSERT_GE(now.user_ns, previous.user_ns) << "read " << i;
    ASSERT_GE(now.system_ns, previous.system_ns) << "read " << i;
    previous = now;
  }
}

TEST(UsableCoresTest, IsAtLeastOneAndAtMostTheOnlineCores) {
  const int cores = UsableCores();
  EXPECT_GE(cores, 1);
  const unsigned online = std::thread::hardware_concurrency();  // 0: unknown
  if (online > 0) {
    EXPECT_LE(static_cast<unsigned>(cores), online);
  }
}

TEST(UsableCoresTest, FollowsTheAffinityMask) {
  cpu_set_t original;
  CPU_ZERO(&original);
  ASSERT_EQ(sched_getaffinity(0, sizeof(original), &original), 0);
  EXPECT_EQ(UsableCores(), CPU_COUNT(&original));

  // Pin this thread to the first CPU it may use: one usable core.
  int first = -1;
  for (int cpu = 0; cpu < CPU_SETSIZE && first < 0; ++cpu) {
    if (CPU_ISSET(cpu, &original)) first = cpu;
  }
  ASSERT_GE(first, 0);
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(first, &one);
  ASSERT_EQ(sched_setaffinity(0, sizeof(one), &one), 0);
  const int pinned = UsableCores();
  ASSERT_EQ(sched_setaffinity(0, sizeof(original), &original), 0);  // restore first
  EXPECT_EQ(pinned, 1);
  EXPECT_EQ(UsableCores(), CPU_COUNT(&original));
}

}  // namespace
}  // namespace sparse
