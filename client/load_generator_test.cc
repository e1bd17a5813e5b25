// The load generator: what a user relies on when reading its numbers.
//  - Open loop above capacity, against a real sparse-server running a
//    deliberately slow model on one worker, reports latency growing window
//    after window (latency counts from intended send times), while the same
//    server at a third of its capacity shows flat latency.
//  - Closed loop never exceeds what its concurrency allows (Little's law),
//    failed requests are counted with the first error, and the request bound
//    holds.
// (The graceful drain is server/server_test.cc's.)
#include "client/load_generator.h"

#include <algorithm>
#include <filesystem>
#include <thread>

#include "client/bench_command.h"
#include "client/client.h"
#include "gtest/gtest.h"
#include "model_store/checkpoint.h"
#include "server/server.h"
#include "tests/testing/matchers.h"
#include "tests/testing/random_models.h"

namespace sparse {
namespace {

namespace fs = std::filesystem;

// A path whose every request ends after `service` on a thread of its own:
// a server with unlimited parallelism and a fixed service time.
LoadPath SleepingPath(std::chrono::microseconds service, absl::Status outcome = absl::OkStatus()) {
  LoadPath path;
  path.name = "sleeper";
  path.issue = [service, outcome](int64_t, std::function<void(absl::Status, ServerSide)> done) {
    std::thread([service, outcome, done = std::move(done)] {
      std::this_thread::sleep_for(service);
      done(outcome, ServerSide{.total_ns = 1000, .queue_ns = 0, .route_ns = 0, .compute_ns = 1000,
                               .flops = 42});
    }).detach();
  };
  return path;
}

Schedule Short(int windows) {
  return Schedule{.warmup_seconds = 0.1,
                  .window_seconds = 0.3,
                  .stable_windows = windows,
                  .max_windows = windows,
                  .stability = 0.5,
                  .max_requests = 1'000'000,
                  .max_outstanding = 4096,
                  .seed = 1};
}

TEST(LoadGeneratorTest, ClosedLoopThroughputIsBoundedByConcurrencyOverServiceTime) {
  ASSERT_OK_AND_ASSIGN(
      LevelResult r, RunLevel(SleepingPath(std::chrono::milliseconds(2)),
                              Load{.mode = Load::Mode::kClosed, .concurrency = 4}, Short(2)));
  // 4 in flight, each taking at least 2 ms: at most 2000 requests/s (2 %
  // for requests that straddle a window's edges), and no request faster than
  // its sleep. These bounds are physical: a slow machine cannot break them.
  EXPECT_LE(r.throughput, 2000 * 1.02);
  EXPECT_GE(r.p50_us, 2000);
  // The loop keeps its 4 in flight: only a machine 4x slower than the sleeps
  // (stalled, not merely loaded) would fall under a quarter of the bound.
  EXPECT_GT(r.throughput, 2000 * 0.25);
  EXPECT_EQ(r.errors, 0);
  EXPECT_EQ(r.flops_per_request, 42);
  EXPECT_EQ(r.windows.size(), 2u);
  EXPECT_EQ(r.server_cpu_us_per_request, -1);  // the path cannot tell
}

TEST(LoadGeneratorTest, FailedRequestsAreCountedWithTheFirstError) {
  ASSERT_OK_AND_ASSIGN(
      LevelResult r,
      RunLevel(SleepingPath(std::chrono::microseconds(500), absl::UnavailableError("queue full")),
               Load{.mode = Load::Mode::kClosed, .concurrency = 2}, Short(2)));
  EXPECT_EQ(r.completed, 0);
  EXPECT_GT(r.errors, 100);
  EXPECT_EQ(r.first_error, "UNAVAILABLE: queue full");
}

TEST(LoadGeneratorTest, TheRequestBoundStopsALevelEarly) {
  Schedule s = Short(5);
  s.max_requests = 50;
  ASSERT_OK_AND_ASSIGN(LevelResult r, RunLevel(SleepingPath(std::chrono::microseconds(100)),
                                               Load{.mode = Load::Mode::kOpen, .rate = 1000}, s));
  EXPECT_LE(r.completed, 50);
  EXPECT_LT(r.windows.size(), 5u);
}

TEST(LoadGeneratorTest, OpenLoopSendsAtTheOfferedRate) {
  ASSERT_OK_AND_ASSIGN(
      LevelResult r, RunLevel(SleepingPath(std::chrono::microseconds(200)),
                              Load{.mode = Load::Mode::kOpen, .rate = 500, .poisson = true}, Short(3)));
  // A bound on the rate, not a timing figure: 500/s for 0.9 s is ~450
  // Poisson arrivals (one standard deviation ~5 %), so a factor of 1.6 either
  // way only fails for a generator that sends at the wrong rate (half, or
  // twice), not for a noisy scheduler.
  EXPECT_GT(r.throughput, 500 / 1.6);
  EXPECT_LT(r.throughput, 500 * 1.6);
  // Far below capacity: no queue builds (a 200 us service; 5 ms is 25 of them).
  EXPECT_LT(r.p50_us, 5000);
}

TEST(LoadGeneratorTest, ASlowOpenLoopRateEndsWithItsWindows) {
  // One request every 20 s: the level still ends after its windows (0.7 s
  // of schedule; the 3 s bound tells that from waiting for the 20 s send).
  const auto start = std::chrono::steady_clock::now();
  ASSERT_OK_AND_ASSIGN(LevelResult r, RunLevel(SleepingPath(std::chrono::microseconds(10)),
                                               Load{.mode = Load::Mode::kOpen, .rate = 0.05}, Short(2)));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  EXPECT_LE(r.completed, 1);
}

TEST(LoadGeneratorTest, RefusesAnInvalidLoadOrSchedule) {
  const LoadPath path = SleepingPath(std::chrono::microseconds(1));
  EXPECT_EQ(RunLevel(path, Load{.mode = Load::Mode::kClosed, .concurrency = 0}, Short(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RunLevel(path, Load{.mode = Load::Mode::kOpen, .rate = -1}, Short(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  Schedule bad = Short(3);
  bad.max_windows = 2;
  EXPECT_EQ(RunLevel(path, Load{}, bad).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(LoadGeneratorTest, QuantilesUseNearestRank) {
  std::vector<int64_t> v;
  for (int i = 1; i <= 1000; ++i) v.push_back(i * 1000);  // 1..1000 us
  EXPECT_EQ(QuantileMicros(v, 0.5), 500);
  EXPECT_EQ(QuantileMicros(v, 0.99), 990);
  EXPECT_EQ(QuantileMicros(v, 0.999), 999);
  EXPECT_EQ(QuantileMicros(v, 1.0), 1000);
  EXPECT_EQ(QuantileMicros({}, 0.5), 0);
}

// A real server with one worker and a model slow enough (a 512 x 8192 dense
// GEMV, ~1 ms) that a few thousand requests per second overload it.
class SlowServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("sparse_load_test_" + std::to_string(::getpid()));
    fs::remove_all(root_);
    Checkpoint slow;
    slow.sparse = testing::RandomLshTable({.d = 512}, 1);
    slow.dense = testing::RandomDense(512, 8192, 1, Activation::kRelu, 2);
    ASSERT_OK(WriteCheckpoint((root_ / "slow").string(), 1, slow));
    ServerOptions options;
    options.model_repository = root_.string();
    options.address = "127.0.0.1";
    options.port = 0;
    options.workers = 1;
    options.max_queue = 1 << 20;
    // Every request of a test is on the server at once (one connection):
    // none waits in the client for a stream.
    options.max_concurrent_streams = 1 << 20;
    absl::StatusOr<std::unique_ptr<SparseServer>> server = SparseServer::Start(options, nullptr);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client_ = std::make_unique<SparseClient>("127.0.0.1:" + std::to_string(server_->port()));
    sparse::v1::PredictRequest& request = requests_.emplace_back();
    request.set_model("slow");
    request.set_rows(1);
    for (float v : testing::RandomInputs(1, 512, 3)) request.add_inputs(v);
  }
  void TearDown() override {
    server_.reset();  // ends every call still open, while the client lives
    client_.reset();
    fs::remove_all(root_);
  }

  LoadPath Dense() { return PredictLoadPath("dense", client_.get(), &requests_, /*dense=*/true); }

  fs::path root_;
  std::unique_ptr<SparseServer> server_;
  std::unique_ptr<SparseClient> client_;
  std::vector<sparse::v1::PredictRequest> requests_;  // one request
};

TEST_F(SlowServerTest, OpenLoopAboveCapacityReportsGrowingLatency) {
  // One request's latency, from a closed loop with one in flight, and the
  // server's capacity, with four in flight (its one worker never idles
  // while a response travels back).
  ASSERT_OK_AND_ASSIGN(LevelResult closed,
                       RunLevel(Dense(), Load{.mode = Load::Mode::kClosed, .concurrency = 1}, Short(2)));
  ASSERT_EQ(closed.errors, 0) << closed.first_error;
  ASSERT_OK_AND_ASSIGN(LevelResult saturated,
                       RunLevel(Dense(), Load{.mode = Load::Mode::kClosed, .concurrency = 4}, Short(2)));
  const double capacity = std::max(closed.throughput, saturated.throughput);
  ASSERT_GT(capacity, 20);
  EXPECT_EQ(closed.flops_per_request, 2 * 8192 * 512 + 2 * 8192);
  EXPECT_GT(closed.server_cpu_us_per_request, 0);

  // Ten times the capacity (overloaded even if other work takes some of the
  // cores meanwhile): latency counts from each request's intended send time,
  // so it grows with the backlog, by about a window's length per window.
  // Asserted as the last window well above the first (not each window above
  // the one before, which one slow window of a noisy VM could break), and far
  // above what one request takes.
  Schedule s = Short(4);
  s.warmup_seconds = 0;
  s.max_outstanding = 64;  // sending waits, and the wait counts
  ASSERT_OK_AND_ASSIGN(LevelResult over,
                       RunLevel(Dense(), Load{.mode = Load::Mode::kOpen, .rate = 10 * capacity}, s));
  ASSERT_EQ(over.windows.size(), 4u);
  EXPECT_GT(over.windows.back().p50_us, 2 * over.windows.front().p50_us);
  EXPECT_GT(over.windows.back().p50_us, 10 * closed.p50_us);
  EXPECT_LT(over.throughput, 0.5 * 10 * capacity);  // served far less than offered

  // A tenth of the capacity: no queue builds up. (Loose bounds: other work
  // may share the cores; the offered rate itself is checked above.)
  ASSERT_OK_AND_ASSIGN(LevelResult under,
                       RunLevel(Dense(), Load{.mode = Load::Mode::kOpen, .rate = capacity / 10}, Short(3)));
  EXPECT_LT(under.p50_us, 5 * closed.p50_us);
  EXPECT_LT(under.p50_us, over.windows.front().p50_us);
}

}  // namespace
}  // namespace sparse
