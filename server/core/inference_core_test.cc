// The serving core, called in process with no protocol in between: what
// every frontend relies on.
//  - Answers and costs equal the engine's, inline and on a worker, alone
//    and batched, on both paths, with the route when asked for.
//  - Each bad request gets its own code and a message naming its own row,
//    and never reaches a batch; one whose outputs overflow fails alone.
//  - Queue full, deadline passed and caller gone while queued.
//  - Drain refuses new requests at once and returns when the admitted ones
//    are answered (or at its deadline).
//  - Per-version statistics count every request and every batch, per path.
//  - A request's cost carries the major page faults its compute took, and
//    a batch's are shared by rows.
//  - A version served from its weight cache file reports the mapped bytes,
//    its file and verification mode, and (when asked) what is in memory now,
//    per expert: dropping the file from the page cache lowers the figures.
// Ordering is made deterministic by holding the core's one worker with a
// task of the test's own (pool().Submit) until the requests are queued.
#include "server/core/inference_core.h"

#include "model_store/model_repository.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/synchronization/notification.h"
#include "common/status_macros.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model_store/checkpoint.h"
#include "tests/testing/cold_pages.h"
#include "tests/testing/matchers.h"
#include "tests/testing/random_models.h"
#include "tests/testing/temp_dir.h"

namespace sparse {
namespace {

namespace fs = std::filesystem;
using ::sparse::testing::RandomDense;
using ::sparse::testing::RandomDsm;
using ::sparse::testing::RandomInputs;
using ::sparse::testing::RandomLshTable;
using ::sparse::testing::TempDir;
using ::testing::HasSubstr;

constexpr int64_t kD = 8;

// One request's storage and its outcome.
struct Call {
  std::vector<float> x;
  InferRequest request;
  InferResponse response;
  absl::Notification answered;
  absl::Status status;
  std::atomic<int> done_calls{0};

  Call(std::string model, std::vector<float> inputs, int64_t rows, bool dense = false) : x(std::move(inputs)) {
    request.model = std::move(model);
    request.rows = rows;
    request.dense = dense;
    request.inputs = x;
  }
  InferDone Done() {
    return [this](absl::Status s) {
      status = std::move(s);
      ++done_calls;
      answered.Notify();
    };
  }
  absl::Status Wait() {
    EXPECT_TRUE(answered.WaitForNotificationWithTimeout(absl::Seconds(30))) << "never answered";
    return status;
  }
};

// Writes `dsm` as model "batched" of `root`, with dynamic batching on both
// paths.
absl::Status WriteBatched(const TempDir& root, const Checkpoint& dsm) {
  RETURN_IF_ERROR(WriteCheckpoint((root / "batched").string(), 1, dsm));
  std::ofstream(root / "batched" / "config.pbtxt")
      << "dynamic_batching { max_batch_rows: 64 max_queue_delay_us: 0 paths: BOTH }\n";
  return absl::OkStatus();
}

// The repository of `root`, loaded with `options` (batches up to 64 rows, no
// log). The caller owns it.
ModelRepository* OpenRepository(const TempDir& root, ModelRepository::Options options = {}) {
  options.max_batch_rows = 64;
  options.log = [](const std::string&) {};
  absl::StatusOr<std::unique_ptr<ModelRepository>> repository =
      ModelRepository::Open(root.string(), options, nullptr);
  EXPECT_TRUE(repository.ok()) << repository.status();
  return repository.ok() ? repository->release() : nullptr;
}

// A core with one worker; `inline_max_flops` 0 sends every request to it.
std::unique_ptr<InferenceCore> OneWorkerCore(const ModelRepository* repository,
                                             int64_t inline_max_flops, int64_t max_queue = 1024) {
  return std::make_unique<InferenceCore>(
      repository, InferenceCore::Options{.workers = 1,
                                         .max_queue = max_queue,
                                         .max_batch_rows = 64,
                                         .inline_max_flops = inline_max_flops,
                                         .observe = nullptr,
                                         .shard = std::nullopt});
}

// Holds the core's one worker until the returned notification is notified.
std::shared_ptr<absl::Notification> HoldWorker(InferenceCore& core) {
  auto release = std::make_shared<absl::Notification>();
  auto held = std::make_shared<absl::Notification>();
  EXPECT_TRUE(core.pool().Submit([release, held] {
    held->Notify();
    release->WaitForNotification();
  }));
  held->WaitForNotification();
  return release;
}

class InferenceCoreTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new TempDir("inference_core_test");
    Checkpoint dsm;
    dsm.sparse = RandomDsm({.d = kD, .o = 2, .experts = 8, .active_units = 16}, 1);
    dsm.dense = RandomDense(kD, 64, 2, Activation::kRelu, 2);
    ASSERT_OK(WriteCheckpoint((*root_ / "dsm").string(), 1, dsm));
    Checkpoint lsh;
    lsh.sparse = RandomLshTable({.d = kD, .o = 1}, 3);
    ASSERT_OK(WriteCheckpoint((*root_ / "lsh").string(), 1, lsh));
    // The same DSM with dynamic batching on both paths.
    ASSERT_OK(WriteBatched(*root_, dsm));
    // And with three priority levels, 2 by default.
    ASSERT_OK(WriteCheckpoint((*root_ / "prio").string(), 1, dsm));
    std::ofstream(*root_ / "prio" / "config.pbtxt") << "priority_levels: 3 default_priority_level: 2\n";
    // And with limits: at most 2 in flight, the rest refused; at most 1,
    // the rest waiting up to a minute; at most 1, the rest waiting 20 ms.
    const std::pair<const char*, const char*> limited[] = {
        {"reject2", "limits { max_in_flight: 2 }"},
        {"delay1", "limits { max_in_flight: 1 over_limit: DELAY max_delay_us: 60000000 }"},
        {"delay1short", "limits { max_in_flight: 1 over_limit: DELAY max_delay_us: 20000 }"}};
    for (const auto& [name, config] : limited) {
      ASSERT_OK(WriteCheckpoint((*root_ / name).string(), 1, dsm));
      std::ofstream(*root_ / name / "config.pbtxt") << config << "\n";
    }
    repository_ = OpenRepository(*root_);
    ASSERT_NE(repository_, nullptr);
  }
  static void TearDownTestSuite() {
    delete repository_;
    delete root_;
  }

  static std::unique_ptr<InferenceCore> Core(int64_t inline_max_flops, int64_t max_queue = 1024) {
    return OneWorkerCore(repository_, inline_max_flops, max_queue);
  }

  static const LoadedModel& Loaded(const std::string& model) {
    absl::StatusOr<std::shared_ptr<const Servable>> servable = repository_->Find(model, 0);
    EXPECT_TRUE(servable.ok()) << servable.status();
    return (*servable)->loaded;  // the repository keeps it alive
  }

  static TempDir* root_;
  static ModelRepository* repository_;
};

TempDir* InferenceCoreTest::root_ = nullptr;
ModelRepository* InferenceCoreTest::repository_ = nullptr;

TEST_F(InferenceCoreTest, InlineAndQueuedAnswersEqualTheEngineWithTheirCost) {
  for (int64_t inline_max : {int64_t{1} << 40, int64_t{0}}) {
    std::unique_ptr<InferenceCore> core = Core(inline_max);
    for (const std::string model : {"dsm", "lsh"}) {
      for (bool dense : {false, true}) {
        const LoadedModel& loaded = Loaded(model);
        if (dense && loaded.dense == nullptr) continue;  // no twin: refused, tested below
        const Model* engine = dense ? static_cast<const Model*>(loaded.dense.get()) : loaded.sparse.get();
        SCOPED_TRACE(model + (dense ? " dense" : " sparse") + (inline_max ? " inline" : " queued"));
        const int64_t rows = 5;
        Call call(model, RandomInputs(rows, kD, 7), rows, dense);
        call.request.return_route = true;
        core->Infer(call.request, &call.response, call.Done());
        ASSERT_OK(call.Wait());
        EXPECT_EQ(call.done_calls, 1);

        std::vector<float> want(rows * engine->info().output_dim);
        PredictStats stats;
        Route route;
        ASSERT_OK(engine->Predict(call.x, rows, absl::MakeSpan(want), &stats, &route));
        const InferResponse& r = call.response;
        EXPECT_EQ(r.model, model);
        EXPECT_EQ(r.version, 1);
        EXPECT_EQ(r.rows, rows);
        EXPECT_EQ(r.output_dim, engine->info().output_dim);
        EXPECT_EQ(r.dense_cost_only, dense && loaded.dense_cost_only);
        ASSERT_EQ(r.outputs.size(), want.size());
        for (size_t i = 0; i < want.size(); ++i) EXPECT_FLOAT_EQ(r.outputs[i], want[i]) << i;
        EXPECT_EQ(r.cost.flops, stats.flops);
        EXPECT_EQ(r.cost.weight_bytes, stats.weight_bytes);
        EXPECT_GT(r.cost.weight_bytes, 0);
        EXPECT_EQ(r.cost.dense_flops,
                  loaded.dense != nullptr ? rows * loaded.dense->info().flops_per_row : 0);
        EXPECT_EQ(r.cost.batch_rows, rows);
        EXPECT_GE(r.cost.total_ns, r.cost.queue_ns + r.cost.compute_ns);
        EXPECT_GT(r.cost.compute_ns, 0);
        EXPECT_EQ(r.has_route, !dense);
        if (!dense) {
          EXPECT_EQ(r.route.bucket_keys, route.bucket_keys);
          EXPECT_EQ(r.route.expert_ids, route.expert_ids);
        }
      }
    }
  }
}

TEST_F(InferenceCoreTest, EachBadRequestGetsItsOwnCodeAndSaysWhatWasExpected) {
  std::unique_ptr<InferenceCore> core = Core(0);
  struct Case {
    std::string model;
    std::vector<float> x;
    int64_t rows;
    bool dense;
    absl::StatusCode code;
    std::string says;
  };
  std::vector<float> nan_row = RandomInputs(3, kD, 1);
  nan_row[2 * kD + 5] = std::nanf("");
  const std::vector<Case> cases = {
      {"nope", RandomInputs(1, kD, 1), 1, false, absl::StatusCode::kNotFound, "nope"},
      {"dsm", RandomInputs(1, kD, 1), 2, false, absl::StatusCode::kInvalidArgument,
       "expected rows x d = 2 x 8 = 16 values, got 8"},
      {"dsm", {}, 0, false, absl::StatusCode::kInvalidArgument, "rows must be >= 1"},
      {"dsm", RandomInputs(65, kD, 1), 65, false, absl::StatusCode::kInvalidArgument,
       "exceeds the limit of 64 rows per request (sparse-server --max_batch_rows)"},
      {"dsm", nan_row, 3, false, absl::StatusCode::kInvalidArgument, "input row 2 column 5"},
      {"lsh", RandomInputs(1, kD, 1), 1, true, absl::StatusCode::kFailedPrecondition,
       "no dense twin"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.says);
    Call call(c.model, c.x, c.rows, c.dense);
    core->Infer(call.request, &call.response, call.Done());
    // Refused at admission, on this thread: never queued.
    ASSERT_TRUE(call.answered.HasBeenNotified());
    EXPECT_EQ(call.status.code(), c.code) << call.status;
    EXPECT_THAT(std::string(call.status.message()), HasSubstr(c.says));
  }
  EXPECT_EQ(core->in_flight(), 0);
}

TEST_F(InferenceCoreTest, ABatchedRequestWhoseOutputsOverflowFailsAlone) {
  std::unique_ptr<InferenceCore> core = Core(0);
  const Model& engine = *Loaded("batched").sparse;
  const std::vector<float> overflow = testing::OverflowingRow(engine);
  ASSERT_FALSE(overflow.empty()) << "no input found whose outputs overflow";

  // Five requests queue behind the held worker, so they run as one batch.
  std::shared_ptr<absl::Notification> release = HoldWorker(*core);
  std::vector<std::unique_ptr<Call>> calls;
  for (int i = 0; i < 5; ++i) {
    std::vector<float> x = RandomInputs(2, kD, 100 + i);
    if (i == 2) std::copy(overflow.begin(), overflow.end(), x.begin() + kD);  // its row 1
    calls.push_back(std::make_unique<Call>("batched", x, 2));
    core->Infer(calls.back()->request, &calls.back()->response, calls.back()->Done());
  }
  EXPECT_EQ(core->in_flight(), 5);
  release->Notify();
  for (int i = 0; i < 5; ++i) {
    Call& call = *calls[i];
    const absl::Status s = call.Wait();
    if (i == 2) {
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
      EXPECT_THAT(std::string(s.message()), HasSubstr("row 1"));
      continue;
    }
    ASSERT_OK(s);
    EXPECT_EQ(call.response.cost.batch_rows, 10) << "the five requests ran as one batch";
    EXPECT_EQ(call.response.cost.flops, 2 * engine.info().flops_per_row);
    std::vector<float> want(2 * engine.info().output_dim);
    PredictStats stats;
    ASSERT_OK(engine.Predict(call.x, 2, absl::MakeSpan(want), &stats, nullptr));
    for (size_t j = 0; j < want.size(); ++j) {
      EXPECT_NEAR(call.response.outputs[j], want[j], 1e-4f * (1 + std::fabs(want[j])));
    }
  }
}

// A batch reads each expert it needs once; its requests share those bytes
// by rows, and the shares add up to what the engine counted for the batch.
TEST_F(InferenceCoreTest, BatchedRequestsShareTheBatchsWeightBytesByRows) {
  for (bool dense : {false, true}) {
    std::unique_ptr<InferenceCore> core = Core(0);
    std::shared_ptr<absl::Notification> release = HoldWorker(*core);
    std::vector<std::unique_ptr<Call>> calls;
    std::vector<float> all;
    const int64_t rows[] = {1, 3, 2, 5, 3};
    for (int i = 0; i < 5; ++i) {
      std::vector<float> x = RandomInputs(rows[i], kD, 300 + i);
      all.insert(all.end(), x.begin(), x.end());
      calls.push_back(std::make_unique<Call>("batched", x, rows[i], dense));
      core->Infer(calls.back()->request, &calls.back()->response, calls.back()->Done());
    }
    release->Notify();
    int64_t sum = 0, min_share = INT64_MAX;
    for (auto& call : calls) {
      ASSERT_OK(call->Wait());
      ASSERT_EQ(call->response.cost.batch_rows, 14) << "the five requests ran as one batch";
      sum += call->response.cost.weight_bytes;
      min_share = std::min(min_share, call->response.cost.weight_bytes);
    }
    const LoadedModel& loaded = Loaded("batched");
    const Model& engine = dense ? static_cast<const Model&>(*loaded.dense) : *loaded.sparse;
    std::vector<float> y(14 * engine.info().output_dim);
    PredictStats stats;
    ASSERT_OK(engine.Predict(all, 14, absl::MakeSpan(y), &stats, nullptr));
    EXPECT_EQ(sum, stats.weight_bytes) << (dense ? "dense" : "sparse");
    // The one-row request gets a fourteenth of the batch, rounded down or up.
    EXPECT_EQ(calls[0]->response.cost.weight_bytes, stats.weight_bytes / 14);
    EXPECT_GT(min_share, 0);
  }
}

TEST_F(InferenceCoreTest, AFullQueueAnExpiredDeadlineAndAGoneCallerAreAnsweredBeforeCompute) {
  std::unique_ptr<InferenceCore> core = Core(0, /*max_queue=*/2);
  std::shared_ptr<absl::Notification> release = HoldWorker(*core);
  Call late("dsm", RandomInputs(1, kD, 1), 1);
  late.request.deadline = absl::Now() + absl::Milliseconds(1);
  Call gone("dsm", RandomInputs(1, kD, 2), 1);
  std::atomic<bool> left{false};
  gone.request.cancelled = [&left] { return left.load(); };
  Call full("dsm", RandomInputs(1, kD, 3), 1);
  core->Infer(late.request, &late.response, late.Done());
  core->Infer(gone.request, &gone.response, gone.Done());
  core->Infer(full.request, &full.response, full.Done());  // the queue holds two
  ASSERT_TRUE(full.answered.HasBeenNotified());
  EXPECT_EQ(full.status.code(), absl::StatusCode::kUnavailable) << full.status;
  EXPECT_THAT(std::string(full.status.message()), HasSubstr("queue is full"));
  absl::SleepFor(absl::Milliseconds(2));  // past `late`'s deadline
  left = true;
  release->Notify();
  EXPECT_EQ(late.Wait().code(), absl::StatusCode::kDeadlineExceeded) << late.status;
  EXPECT_EQ(gone.Wait().code(), absl::StatusCode::kCancelled) << gone.status;
}

TEST_F(InferenceCoreTest, DrainRefusesNewRequestsAndWaitsForTheAdmittedOnes) {
  std::unique_ptr<InferenceCore> core = Core(0);
  std::shared_ptr<absl::Notification> release = HoldWorker(*core);
  constexpr int kQueued = 20;
  std::vector<std::unique_ptr<Call>> calls;
  for (int i = 0; i < kQueued; ++i) {
    calls.push_back(std::make_unique<Call>(i % 2 ? "dsm" : "batched", RandomInputs(1, kD, i), 1));
    core->Infer(calls.back()->request, &calls.back()->response, calls.back()->Done());
  }
  ASSERT_EQ(core->in_flight(), kQueued);

  // While the worker is held the drain cannot finish: it gives up at its deadline.
  EXPECT_FALSE(core->Drain(absl::Now() + absl::Milliseconds(20)));
  // Draining: a new request is refused at once, as retryable, saying why.
  Call refused("dsm", RandomInputs(1, kD, 99), 1);
  core->Infer(refused.request, &refused.response, refused.Done());
  ASSERT_TRUE(refused.answered.HasBeenNotified());
  EXPECT_EQ(refused.status.code(), absl::StatusCode::kUnavailable) << refused.status;
  EXPECT_THAT(std::string(refused.status.message()), HasSubstr("shutting down"));
  EXPECT_EQ(core->in_flight(), kQueued);

  std::atomic<bool> drained{false};
  std::thread drainer([&] { drained = core->Drain(absl::InfiniteFuture()); });
  release->Notify();
  drainer.join();
  EXPECT_TRUE(drained);
  EXPECT_EQ(core->in_flight(), 0);
  for (const auto& call : calls) {
    ASSERT_TRUE(call->answered.HasBeenNotified()) << "Drain returned before every answer";
    EXPECT_OK(call->status);
    EXPECT_EQ(call->done_calls, 1);
  }
}

TEST_F(InferenceCoreTest, TheObserveHookSeesEveryAnswerOnce) {
  std::atomic<int> ok{0}, failed{0};
  InferenceCore core(repository_,
                     InferenceCore::Options{
                         .workers = 1,
                         .max_batch_rows = 64,
                         .inline_max_flops = 0,
                         .observe = [&](const InferRequest&, const absl::Status& s,
                                        const InferResponse& r) {
                           if (s.ok() && r.cost.flops > 0) {
                             ++ok;
                           } else if (!s.ok()) {
                             ++failed;
                           }
                         },
                         .shard = std::nullopt});
  Call good("dsm", RandomInputs(3, kD, 1), 3);
  Call bad("dsm", RandomInputs(1, kD, 1), 3);
  core.Infer(good.request, &good.response, good.Done());
  core.Infer(bad.request, &bad.response, bad.Done());
  ASSERT_OK(good.Wait());
  EXPECT_FALSE(bad.Wait().ok());
  EXPECT_EQ(ok, 1);
  EXPECT_EQ(failed, 1);
}

// Priority levels (Triton's: 1 the highest, 0 the model's default): queued
// requests run highest level first; a level beyond the model's is refused;
// a model without levels ignores them.
TEST_F(InferenceCoreTest, QueuedRequestsRunByPriorityLevel) {
  std::unique_ptr<InferenceCore> core = Core(/*inline_max_flops=*/0);
  std::shared_ptr<absl::Notification> release = HoldWorker(*core);
  absl::Mutex mu;
  std::vector<uint32_t> answered;
  std::vector<std::unique_ptr<Call>> calls;
  for (uint32_t priority : {3u, 0u, 1u, 2u}) {
    calls.push_back(std::make_unique<Call>("prio", RandomInputs(1, kD, priority), 1));
    calls.back()->request.priority = priority;
    Call* c = calls.back().get();
    core->Infer(c->request, &c->response, [&mu, &answered, c, priority](absl::Status s) {
      {
        absl::MutexLock lock(&mu);
        answered.push_back(priority);
      }
      c->Done()(std::move(s));
    });
  }
  release->Notify();
  for (auto& c : calls) ASSERT_OK(c->Wait());
  // 1, then the two at level 2 (0 asks for the default, 2) in arrival order, then 3.
  EXPECT_EQ(answered, (std::vector<uint32_t>{1, 0, 2, 3}));

  Call beyond("prio", RandomInputs(1, kD, 7), 1);
  beyond.request.priority = 4;
  core->Infer(beyond.request, &beyond.response, beyond.Done());
  const absl::Status refused = beyond.Wait();
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.message(), HasSubstr("priority 4 is not one of the model's priority levels 1 "
                                           "(highest) to 3"));
  Call ignored("dsm", RandomInputs(1, kD, 8), 1);
  ignored.request.priority = 9;
  core->Infer(ignored.request, &ignored.response, ignored.Done());
  EXPECT_OK(ignored.Wait());
}

// limits.max_in_flight with REJECT: the request over the limit is refused
// at once with RESOURCE_EXHAUSTED; the others, and other models, serve.
TEST_F(InferenceCoreTest, ARequestOverItsModelsLimitIsRefusedAtOnce) {
  std::unique_ptr<InferenceCore> core = Core(/*inline_max_flops=*/0);
  std::shared_ptr<absl::Notification> release = HoldWorker(*core);
  std::vector<std::unique_ptr<Call>> calls;
  for (int i = 0; i < 3; ++i) {
    calls.push_back(std::make_unique<Call>("reject2", RandomInputs(1, kD, i), 1));
    core->Infer(calls.back()->request, &calls.back()->response, calls.back()->Done());
  }
  const absl::Status over = calls[2]->Wait();  // answered while the worker is held
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(over.message(), HasSubstr("model 'reject2' has its limit of 2 requests in flight"));
  Call other("dsm", RandomInputs(1, kD, 9), 1);
  core->Infer(other.request, &other.response, other.Done());
  release->Notify();
  EXPECT_OK(calls[0]->Wait());
  EXPECT_OK(calls[1]->Wait());
  EXPECT_OK(other.Wait());
  Call again("reject2", RandomInputs(1, kD, 4), 1);  // the places are free again
  core->Infer(again.request, &again.response, again.Done());
  EXPECT_OK(again.Wait());
  EXPECT_EQ(again.response.outputs.size(), 2u);
}

// limits.over_limit DELAY: a request over the limit waits for a place,
// counted as queued, and is answered once one frees; past max_delay_us it
// is RESOURCE_EXHAUSTED.
TEST_F(InferenceCoreTest, ARequestOverItsModelsLimitWaitsForAPlaceUpToItsDelay) {
  std::unique_ptr<InferenceCore> core = Core(/*inline_max_flops=*/0);
  std::shared_ptr<absl::Notification> release = HoldWorker(*core);
  Call first("delay1", RandomInputs(1, kD, 1), 1), second("delay1", RandomInputs(1, kD, 2), 1);
  core->Infer(first.request, &first.response, first.Done());
  core->Infer(second.request, &second.response, second.Done());
  Call short_first("delay1short", RandomInputs(1, kD, 3), 1);
  Call short_second("delay1short", RandomInputs(1, kD, 4), 1);
  core->Infer(short_first.request, &short_first.response, short_first.Done());
  core->Infer(short_second.request, &short_second.response, short_second.Done());
  // The worker is still held: the second of delay1short runs out of delay.
  const absl::Status waited = short_second.Wait();
  EXPECT_EQ(waited.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(waited.message(), HasSubstr("no place freed within limits.max_delay_us (20000 us)"));
  int64_t queued = 0;
  for (const PathLoad& p : core->Load().paths) {
    if (p.model == "delay1" && !p.dense) queued = p.queued;
  }
  EXPECT_EQ(queued, 2);  // one for the worker, one for a place
  EXPECT_EQ(core->in_flight(), 3);
  release->Notify();
  EXPECT_OK(first.Wait());
  EXPECT_OK(second.Wait());
  EXPECT_OK(short_first.Wait());
  // Same answer as without a limit.
  Call plain("dsm", second.x, 1);
  core->Infer(plain.request, &plain.response, plain.Done());
  ASSERT_OK(plain.Wait());
  EXPECT_EQ(second.response.outputs, plain.response.outputs);
  EXPECT_TRUE(core->Drain(absl::Now() + absl::Seconds(30)));
}

// A request's timeout (OIP's `timeout`) is a deadline counted from its
// arrival: still queued past it, it is answered DEADLINE_EXCEEDED.
TEST_F(InferenceCoreTest, ARequestQueuedPastItsTimeoutIsAnsweredDeadlineExceeded) {
  std::unique_ptr<InferenceCore> core = Core(/*inline_max_flops=*/0);
  std::shared_ptr<absl::Notification> release = HoldWorker(*core);
  Call late("dsm", RandomInputs(1, kD, 1), 1), patient("dsm", RandomInputs(1, kD, 2), 1);
  late.request.timeout = absl::Milliseconds(1);
  patient.request.timeout = absl::Seconds(60);
  core->Infer(late.request, &late.response, late.Done());
  core->Infer(patient.request, &patient.response, patient.Done());
  absl::SleepFor(absl::Milliseconds(20));
  release->Notify();
  EXPECT_EQ(late.Wait().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_OK(patient.Wait());
}

// The load gauges: requests in flight and queued per version and path, the
// workers' use, and each path's queue capacity, rising while requests wait
// and back to zero once they are answered.
TEST_F(InferenceCoreTest, LoadCountsWhatIsInFlightAndQueuedPerPath) {
  std::unique_ptr<InferenceCore> core = Core(/*inline_max_flops=*/0, /*max_queue=*/100);
  auto find = [](const ServerLoad& load, const std::string& model, bool dense) {
    for (const PathLoad& p : load.paths) {
      if (p.model == model && p.dense == dense) return p;
    }
    ADD_FAILURE() << "no path " << model << (dense ? " dense" : " sparse");
    return PathLoad{};
  };
  const ServerLoad idle = core->Load();
  EXPECT_EQ(idle.workers, 1);
  EXPECT_EQ(idle.busy_workers, 0);
  EXPECT_EQ(idle.worker_queue_capacity, 100);
  EXPECT_EQ(find(idle, "dsm", false).in_flight, 0);
  EXPECT_EQ(find(idle, "dsm", false).queue_capacity, 100);  // not batched: the worker queue
  EXPECT_EQ(find(idle, "batched", true).queue_capacity, 1024);  // max_queue_size's default
  for (const PathLoad& p : idle.paths) EXPECT_FALSE(p.model == "lsh" && p.dense);  // no twin
  EXPECT_EQ(idle.failed_versions.at("dsm"), 0);

  std::shared_ptr<absl::Notification> release = HoldWorker(*core);
  std::vector<std::unique_ptr<Call>> calls;
  for (int i = 0; i < 3; ++i) calls.push_back(std::make_unique<Call>("dsm", RandomInputs(1, kD, i), 1));
  for (int i = 0; i < 2; ++i) {
    calls.push_back(std::make_unique<Call>("batched", RandomInputs(1, kD, 9 + i), 1, /*dense=*/true));
  }
  for (auto& c : calls) core->Infer(c->request, &c->response, c->Done());
  const ServerLoad busy = core->Load();
  EXPECT_EQ(busy.busy_workers, 1);
  EXPECT_EQ(find(busy, "dsm", false).in_flight, 3);
  EXPECT_EQ(find(busy, "dsm", false).queued, 3);
  EXPECT_EQ(find(busy, "dsm", true).in_flight, 0);
  EXPECT_EQ(find(busy, "batched", true).in_flight, 2);
  EXPECT_EQ(find(busy, "batched", true).queued, 2);
  // Three lone requests and one drain task wait for the worker.
  EXPECT_EQ(busy.worker_queue, 4);
  release->Notify();
  for (auto& c : calls) ASSERT_OK(c->Wait());
  // `done` runs before a request leaves the count: wait for the last one.
  for (int i = 0; i < 500 && core->in_flight() > 0; ++i) absl::SleepFor(absl::Milliseconds(2));
  const ServerLoad after = core->Load();
  for (const PathLoad& p : after.paths) {
    EXPECT_EQ(p.in_flight, 0) << p.model;
    EXPECT_EQ(p.queued, 0) << p.model;
  }
  EXPECT_EQ(after.worker_queue, 0);
}

TEST_F(InferenceCoreTest, StatisticsCountEachRequestAndEachBatchPerVersionAndPath) {
  std::unique_ptr<InferenceCore> core = Core(0);
  absl::StatusOr<ModelHandle> handle = core->Resolve("batched", 0);
  ASSERT_OK(handle.status());
  EXPECT_EQ(core->Statistics(handle->Path(false)).success.count, 0u) << "nothing asked yet";

  // Four requests of 2 rows queue behind the held worker and run as one
  // batch of 8 rows; a fifth has the wrong size and fails at admission.
  std::shared_ptr<absl::Notification> release = HoldWorker(*core);
  std::vector<std::unique_ptr<Call>> calls;
  for (int i = 0; i < 4; ++i) {
    calls.push_back(std::make_unique<Call>("batched", RandomInputs(2, kD, 10 + i), 2));
    calls.back()->request.decode_ns = 1000;
    core->Infer(calls.back()->request, &calls.back()->response, calls.back()->Done());
  }
  Call bad("batched", RandomInputs(1, kD, 1), 2);
  core->Infer(bad.request, &bad.response, bad.Done());
  release->Notify();
  for (auto& call : calls) ASSERT_OK(call->Wait());
  EXPECT_FALSE(bad.Wait().ok());
  // The worker records the batch after answering it: wait for it to be free.
  HoldWorker(*core)->Notify();

  const PathStatistics s = core->Statistics(handle->Path(false));
  EXPECT_EQ(s.success.count, 4u);
  EXPECT_EQ(s.fail.count, 1u);
  EXPECT_EQ(s.inference_count, 8u);
  EXPECT_EQ(s.execution_count, 1u);
  EXPECT_GT(s.last_inference_ms, 0u);
  EXPECT_EQ(s.compute_input.count, 4u);
  EXPECT_EQ(s.compute_input.ns, 4000u) << "the frontend's decode time, as reported";
  EXPECT_EQ(s.queue.count, 4u);
  EXPECT_EQ(s.compute_infer.count, 4u);
  EXPECT_EQ(s.compute_output.count, 4u);
  uint64_t queued = 0;
  for (auto& call : calls) queued += call->response.cost.queue_ns;
  EXPECT_EQ(s.queue.ns, queued);
  EXPECT_GE(s.success.ns, s.queue.ns + s.compute_infer.ns);
  ASSERT_EQ(s.batches.size(), 1u);
  ASSERT_EQ(s.batches.begin()->first, 8);
  const BatchStatistics& batch = s.batches.begin()->second;
  EXPECT_EQ(batch.compute_infer.count, 1u);
  EXPECT_EQ(batch.compute_infer.ns, calls[0]->response.cost.route_ns + calls[0]->response.cost.compute_ns);
  EXPECT_EQ(batch.compute_input.count, 1u);
  EXPECT_EQ(batch.compute_output.count, 1u);

  // The dense path is counted apart, and a lone request is a batch of its rows.
  EXPECT_EQ(core->Statistics(handle->Path(true)).success.count, 0u);
  Call dense("batched", RandomInputs(3, kD, 5), 3, /*dense=*/true);
  core->Infer(dense.request, &dense.response, dense.Done());
  ASSERT_OK(dense.Wait());
  HoldWorker(*core)->Notify();
  const PathStatistics d = core->Statistics(handle->Path(true));
  EXPECT_EQ(d.success.count, 1u);
  EXPECT_EQ(d.inference_count, 3u);
  EXPECT_EQ(d.execution_count, 1u);
  ASSERT_EQ(d.batches.count(3), 1u);
  EXPECT_EQ(core->Statistics(handle->Path(false)).success.count, 4u);
}

// Major page faults (Cost.major_faults). The engine's weights are not yet
// mapped from files, so the model here is a stand-in whose compute reads
// pages of a file dropped from the page cache (tests/testing/cold_pages.h),
// as a mapped expert slice not touched lately would be: a real fault per
// page, taken on the thread that computes. It is served as a front's part,
// the one way to hand the core a model of a test's own.
class PageReadingModel final : public Model {
 public:
  static constexpr int64_t kFlopsPerRow = 100;
  explicit PageReadingModel(const ::sparse::testing::ColdPages* pages)
      : Model(Info()), pages_(pages) {}

 protected:
  absl::Status PredictValidated(const float* /*x*/, int64_t rows, float* y, PredictStats* stats,
                                Route* /*route*/, const PredictOptions& /*options*/) const override {
    const int64_t sum = pages_ != nullptr ? pages_->Touch() : 0;
    for (int64_t i = 0; i < rows * 2; ++i) y[i] = static_cast<float>(sum);
    stats->flops += rows * kFlopsPerRow;
    return absl::OkStatus();
  }

 private:
  static ModelInfo Info() {
    ModelInfo info;
    info.kind = ModelKind::kDsm;
    info.input_dim = kD;
    info.output_dim = 2;
    info.flops_per_row = kFlopsPerRow;
    return info;
  }

  const ::sparse::testing::ColdPages* const pages_;
};

class InferenceCoreFaultsTest : public ::testing::Test {
 protected:
  static constexpr int64_t kPages = 64;

  static void SetUpTestSuite() {
    root_ = new TempDir("inference_core_faults_test");
    // /tmp may be tmpfs, whose pages cannot be dropped: then ctest's
    // working directory (the build directory).
    absl::StatusOr<std::unique_ptr<::sparse::testing::ColdPages>> cold =
        ::sparse::testing::ColdPagesIn({root_->path(), fs::current_path()},
                                       "inference_core_faults_" + std::to_string(::getpid()), kPages);
    if (!cold.ok()) {
      why_no_pages_ = new std::string(cold.status().message());
      return;
    }
    pages_ = cold->release();
    Checkpoint dsm;
    dsm.sparse = RandomDsm({.d = kD, .o = 2, .experts = 8, .active_units = 16}, 1);
    ASSERT_OK(WriteCheckpoint((*root_ / "alone").string(), 1, dsm));
    ASSERT_OK(WriteBatched(*root_, dsm));
    ModelRepository::Options options;
    options.part = {.role = ModelPart::Role::kFront, .shard = {.index = 0, .count = 2}};
    options.make_front = [](const std::string&, int64_t, Precision,
                            const Checkpoint&) -> absl::StatusOr<std::unique_ptr<Model>> {
      return std::make_unique<PageReadingModel>(pages_);
    };
    repository_ = OpenRepository(*root_, options);
    ASSERT_NE(repository_, nullptr);
    ASSERT_TRUE(repository_->Find("alone", 0).ok());
    ASSERT_TRUE(repository_->Find("batched", 0).ok());
  }
  static void TearDownTestSuite() {
    delete repository_;
    delete pages_;
    delete why_no_pages_;
    delete root_;
  }
  void SetUp() override {
    if (pages_ == nullptr) GTEST_SKIP() << "no file system here drops pages: " << *why_no_pages_;
  }

  static std::unique_ptr<InferenceCore> Core(int64_t inline_max_flops) {
    return OneWorkerCore(repository_, inline_max_flops);
  }

  static TempDir* root_;
  static ModelRepository* repository_;
  static ::sparse::testing::ColdPages* pages_;
  static std::string* why_no_pages_;
};

TempDir* InferenceCoreFaultsTest::root_ = nullptr;
ModelRepository* InferenceCoreFaultsTest::repository_ = nullptr;
::sparse::testing::ColdPages* InferenceCoreFaultsTest::pages_ = nullptr;
std::string* InferenceCoreFaultsTest::why_no_pages_ = nullptr;

TEST_F(InferenceCoreFaultsTest, ARequestsCostCarriesTheMajorFaultsItsComputeTook) {
  // On the caller's thread (inline) and on the worker.
  for (int64_t inline_max : {int64_t{1} << 40, int64_t{0}}) {
    SCOPED_TRACE(inline_max ? "inline" : "worker");
    std::unique_ptr<InferenceCore> core = Core(inline_max);
    ASSERT_OK(pages_->Drop());
    Call cold("alone", RandomInputs(1, kD, 1), 1);
    core->Infer(cold.request, &cold.response, cold.Done());
    ASSERT_OK(cold.Wait());
    // One fault per page read (MADV_RANDOM), at least half in case the
    // kernel still groups a few.
    EXPECT_GE(cold.response.cost.major_faults, kPages / 2);
    EXPECT_LE(cold.response.cost.major_faults, kPages + 8);
    // The same pages again, now mapped: none, so the count is this
    // compute's, not the thread's so far.
    Call warm("alone", RandomInputs(1, kD, 2), 1);
    core->Infer(warm.request, &warm.response, warm.Done());
    ASSERT_OK(warm.Wait());
    EXPECT_EQ(warm.response.cost.major_faults, 0);
  }
}

// The batch's faults, whichever request's rows took them, are shared by rows
// as its weight bytes are: the shares add up to the batch's.
TEST_F(InferenceCoreFaultsTest, BatchedRequestsShareTheBatchsMajorFaultsByRows) {
  std::unique_ptr<InferenceCore> core = Core(0);
  std::shared_ptr<absl::Notification> release = HoldWorker(*core);
  ASSERT_OK(pages_->Drop());
  std::vector<std::unique_ptr<Call>> calls;
  const int64_t rows[] = {1, 3, 2, 5, 3};
  for (int i = 0; i < 5; ++i) {
    calls.push_back(std::make_unique<Call>("batched", RandomInputs(rows[i], kD, 10 + i), rows[i]));
    core->Infer(calls.back()->request, &calls.back()->response, calls.back()->Done());
  }
  release->Notify();
  int64_t total = 0;
  for (auto& call : calls) {
    ASSERT_OK(call->Wait());
    ASSERT_EQ(call->response.cost.batch_rows, 14) << "the five requests ran as one batch";
    total += call->response.cost.major_faults;
  }
  EXPECT_GE(total, kPages / 2) << "the batch read the pages once";
  EXPECT_LE(total, kPages + 8);
  int64_t first = 0;
  for (int i = 0; i < 5; ++i) {
    const int64_t want = total * (first + rows[i]) / 14 - total * first / 14;
    EXPECT_EQ(calls[i]->response.cost.major_faults, want) << "request " << i;
    first += rows[i];
  }
}

// Whether `dir`'s pages can be dropped from the page cache (not tmpfs).
bool DropsPages(const fs::path& dir) {
  struct statfs fs_info;
  return ::statfs(dir.c_str(), &fs_info) == 0 && fs_info.f_type != TMPFS_MAGIC;
}

// Drops the pages of the file at `path` that this process maps from its
// page tables (MADV_DONTNEED: a read-only shared mapping reads them again
// on its next touch) and from the page cache (POSIX_FADV_DONTNEED).
absl::Status DropMappedFile(const std::string& path) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  int found = 0;
  while (std::getline(maps, line)) {
    if (line.size() < path.size() || line.compare(line.size() - path.size(), path.size(), path) != 0) {
      continue;
    }
    uintptr_t begin = 0, end = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &begin, &end) != 2) continue;
    if (::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED) != 0) {
      return absl::InternalError("madvise(MADV_DONTNEED) failed");
    }
    ++found;
  }
  if (found == 0) return absl::NotFoundError(absl::StrCat(path, " is not mapped"));
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  const int err = ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
  return err == 0 ? absl::OkStatus() : absl::InternalError("posix_fadvise failed");
}

TEST(InferenceCoreResidencyTest, AMappedVersionReportsItsMappingAndWhatIsInMemory) {
  TempDir root("inference_core_residency_test");
  constexpr int64_t kExperts = 16, kBlocks = 2;
  Checkpoint dsm;  // no twin: the cost-only dense path is mapped too
  // d = 64: each expert's rows of B are 16 KiB, whole pages of their own.
  dsm.sparse = RandomDsm({.d = 64, .o = 2, .blocks = kBlocks, .experts = kExperts,
                          .active_units = 64}, 7);
  ASSERT_OK(WriteCheckpoint((root / "dsm").string(), 1, dsm));
  Checkpoint lsh;
  lsh.sparse = RandomLshTable({.d = kD, .o = 1}, 3);
  ASSERT_OK(WriteCheckpoint((root / "lsh").string(), 1, lsh));
  // The cache beside the repository (not in it), where pages can be
  // dropped: /tmp may be tmpfs, then ctest's working directory.
  TempDir tmp_cache("inference_core_residency_cache");
  const fs::path cache = DropsPages(tmp_cache.path())
                             ? tmp_cache.path()
                             : fs::current_path() / ("residency_cache_" + std::to_string(::getpid()));
  struct Remove {
    fs::path path;
    ~Remove() {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  } remove_cache{cache};
  ModelRepository::Options options;
  options.weight_cache_dir = cache.string();
  // Checked on first touch: verifying at load would read (and map) every
  // page, and mapped pages stay when the file leaves the page cache.
  options.weight_verify = WeightVerify::kTouch;
  std::unique_ptr<ModelRepository> repository(OpenRepository(root, options));
  ASSERT_NE(repository, nullptr);
  std::unique_ptr<InferenceCore> core = OneWorkerCore(repository.get(), 0);

  // Without kResidency: the fixed figures only, no mincore.
  ASSERT_OK_AND_ASSIGN(ModelStatus fixed, core->Model("dsm"));
  ASSERT_EQ(fixed.versions.size(), 1u);
  const VersionStatus& f = fixed.versions[0];
  EXPECT_GT(f.mapped_bytes, 0);
  ASSERT_TRUE(f.dense.has_value());
  EXPECT_EQ(f.mapped_bytes, f.sparse.mapped_bytes + f.dense->mapped_bytes);
  EXPECT_GT(f.dense->mapped_bytes, 0);
  EXPECT_EQ(f.weight_verify, "touch");
  // Named under the cache directory, never by the server's path.
  ASSERT_FALSE(f.weight_cache_file.empty());
  EXPECT_EQ(f.weight_cache_file.rfind("dsm/1/", 0), 0u) << f.weight_cache_file;
  EXPECT_TRUE(fs::is_regular_file(cache / f.weight_cache_file)) << f.weight_cache_file;
  EXPECT_EQ(f.mapped_resident_bytes, 0);
  EXPECT_TRUE(f.expert_resident_bytes.empty());

  // Just written, the whole file is in the page cache.
  ASSERT_OK_AND_ASSIGN(ModelStatus warm_status, core->Model("dsm", ModelReads::kResidency));
  const VersionStatus& warm = warm_status.versions[0];
  EXPECT_EQ(warm.mapped_bytes, f.mapped_bytes);
  EXPECT_EQ(warm.mapped_resident_bytes, warm.mapped_bytes);
  EXPECT_EQ(warm.experts, kExperts);
  ASSERT_EQ(warm.expert_resident_bytes.size(), static_cast<size_t>(kBlocks * kExperts));
  EXPECT_GE(warm.expert_bytes, 4 * 64 * 64) << "an expert's rows of B at least";
  for (int64_t b : warm.expert_resident_bytes) EXPECT_EQ(b, warm.expert_bytes);

  // Out of this process's page tables (the warm-up mapped the pages it
  // read) and out of the page cache, as ColdPages::Drop does: nothing is in
  // memory until a request touches it again.
  ASSERT_OK(DropMappedFile((cache / warm.weight_cache_file).string()));
  ASSERT_OK_AND_ASSIGN(ModelStatus cold_status, core->Model("dsm", ModelReads::kResidency));
  const VersionStatus& cold = cold_status.versions[0];
  EXPECT_LT(cold.mapped_resident_bytes, warm.mapped_resident_bytes / 2);
  ASSERT_EQ(cold.expert_resident_bytes.size(), warm.expert_resident_bytes.size());
  int64_t dropped = 0, cold_sum = 0;
  for (int64_t b : cold.expert_resident_bytes) {
    dropped += b < cold.expert_bytes ? 1 : 0;
    cold_sum += b;
  }
  EXPECT_EQ(dropped, kBlocks * kExperts);
  EXPECT_LE(cold_sum, cold.mapped_resident_bytes);

  // A request reads its experts' slices back in: they are in memory again.
  Call call("dsm", RandomInputs(1, 64, 21), 1);
  call.request.return_route = true;
  core->Infer(call.request, &call.response, call.Done());
  ASSERT_OK(call.Wait());
  ASSERT_EQ(call.response.route.expert_ids.size(), static_cast<size_t>(kBlocks));
  ASSERT_OK_AND_ASSIGN(ModelStatus read_status, core->Model("dsm", ModelReads::kResidency));
  const VersionStatus& read = read_status.versions[0];
  EXPECT_GT(read.mapped_resident_bytes, cold.mapped_resident_bytes);
  for (int64_t l = 0; l < kBlocks; ++l) {
    const int64_t e = call.response.route.expert_ids[l];
    EXPECT_EQ(read.expert_resident_bytes[l * kExperts + e], read.expert_bytes)
        << "block " << l << " expert " << e;
  }

  // Metrics read the same figures (Routing, at each scrape).
  bool seen = false;
  for (const VersionRouting& v : core->Routing()) {
    if (v.model != "dsm") continue;
    seen = true;
    EXPECT_EQ(v.mapped_bytes, cold.mapped_bytes);
    EXPECT_LE(v.mapped_resident_bytes, warm.mapped_resident_bytes);
    EXPECT_EQ(v.expert_bytes, cold.expert_bytes);
    EXPECT_EQ(v.expert_resident_bytes.size(), cold.expert_resident_bytes.size());
  }
  EXPECT_TRUE(seen);

  // An LSH table's buckets are mapped too: its file, its bytes, and no
  // experts to list.
  ASSERT_OK_AND_ASSIGN(ModelStatus lsh_status, core->Model("lsh", ModelReads::kResidency));
  const VersionStatus& l = lsh_status.versions[0];
  EXPECT_GT(l.mapped_bytes, 0);
  EXPECT_LE(l.mapped_resident_bytes, l.mapped_bytes);
  EXPECT_NE(l.weight_cache_file, "");
  EXPECT_NE(l.weight_cache_file, cold.weight_cache_file);
  EXPECT_EQ(l.weight_verify, "touch");
  EXPECT_TRUE(l.expert_resident_bytes.empty());
  EXPECT_GT(l.resident_bytes, 0);
}

}  // namespace
}  // namespace sparse
