// MajorFaultCounter (common/page_faults.h), behind Cost.major_faults: reading
// pages of a file that are not in the page cache counts a major fault each
// on the thread that read them, and only there; pages already mapped count
// none; faults reported as taken elsewhere (a sharded front's shards) add to
// the counters of the thread that reported them.
#include "common/page_faults.h"

#include <filesystem>
#include <memory>
#include <thread>

#include "gtest/gtest.h"
#include "tests/testing/cold_pages.h"
#include "tests/testing/temp_dir.h"

namespace sparse {
namespace {

using ::sparse::testing::ColdPages;
using ::sparse::testing::TempDir;

constexpr int64_t kPages = 64;

class PageFaultsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The system's temporary directory may be tmpfs, whose pages cannot be
    // dropped: then the working directory (ctest's: the build directory).
    absl::StatusOr<std::unique_ptr<ColdPages>> cold = ::sparse::testing::ColdPagesIn(
        {dir_.path(), std::filesystem::current_path()},
        "page_faults_test_" + std::to_string(::getpid()), kPages);
    if (!cold.ok()) GTEST_SKIP() << "no file system here drops pages: " << cold.status();
    cold_ = *std::move(cold);
  }

  TempDir dir_{"page_faults_test"};
  std::unique_ptr<ColdPages> cold_;
};

TEST_F(PageFaultsTest, ReadingPagesNotInThePageCacheCountsTheirMajorFaults) {
  MajorFaultCounter counter;
  EXPECT_EQ(cold_->Touch(), kPages);
  // MADV_RANDOM: one fault per page, no read-ahead. At least half, in case
  // the kernel still groups a few.
  EXPECT_GE(counter.Count(), kPages / 2);
  EXPECT_LE(counter.Count(), kPages + 8);
}

TEST_F(PageFaultsTest, PagesAlreadyMappedCountNone) {
  cold_->Touch();
  MajorFaultCounter counter;
  EXPECT_EQ(cold_->Touch(), kPages);
  EXPECT_EQ(counter.Count(), 0);
}

TEST_F(PageFaultsTest, AnotherThreadsFaultsAreItsOwn) {
  MajorFaultCounter here;
  int64_t there = -1;
  std::thread other([&] {
    MajorFaultCounter counter;
    cold_->Touch();
    there = counter.Count();
  });
  other.join();
  EXPECT_GE(there, kPages / 2);
  EXPECT_EQ(here.Count(), 0) << "the other thread's faults were counted here";
}

TEST_F(PageFaultsTest, ThreadMajorFaultsGrowsWithTheFaults) {
  const int64_t before = ThreadMajorFaults();
  cold_->Touch();
  EXPECT_GE(ThreadMajorFaults() - before, kPages / 2);
}

TEST(MajorFaultsTakenElsewhereTest, AddToTheCountersOfTheThreadThatReportsThem) {
  MajorFaultCounter outer;
  {
    MajorFaultCounter inner;
    AddMajorFaultsTakenElsewhere(5);
    AddMajorFaultsTakenElsewhere(-3);  // ignored
    AddMajorFaultsTakenElsewhere(0);
    EXPECT_EQ(inner.Count(), 5);
  }
  std::thread other([] { AddMajorFaultsTakenElsewhere(100); });
  other.join();
  MajorFaultCounter later;
  EXPECT_EQ(outer.Count(), 5);
  EXPECT_EQ(later.Count(), 0);
}

}  // namespace
}  // namespace sparse
