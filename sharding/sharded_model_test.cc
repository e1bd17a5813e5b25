// The sharded front (docs/deploy.md, "Sharded models") against in-process
// shards: each FakeShard loads its part of a checkpoint as a shard server
// does and answers ComputePartial as server/grpc/shard_service.cc does, with
// the engine's own code; FakeConnection is the ShardConnection the front
// reaches it through (no gRPC channel, so ThreadSanitizer sees every thread
// the test runs). The front's answers are checked against the whole model's.
#include "sharding/sharded_model.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "engine/matmul_kernel.h"
#include "engine/sharding.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "common/page_faults.h"
#include "model_store/checkpoint.h"
#include "tests/testing/matchers.h"
#include "tests/testing/random_models.h"
#include "tests/testing/temp_dir.h"

namespace sparse {
namespace {

using sparse::v1::GetModelRequest;
using sparse::v1::ModelStatus;
using sparse::v1::PartialRequest;
using sparse::v1::PartialResponse;
using testing::RelativelyNear;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kModel[] = "m";

// One shard server of a model: the versions it serves, each its part of
// the version's checkpoint, and ShardService.ComputePartial's checks and
// computation over them. A started call is answered on one of the fake's
// own threads, as gRPC answers on its own.
class FakeShard {
 public:
  FakeShard(int index, int count) : spec_{.index = index, .count = count} {
    for (int i = 0; i < 2; ++i) workers_.emplace_back([this] { Work(); });
  }
  ~FakeShard() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    for (std::thread& t : workers_) t.join();
  }

  // Loads this shard's part of `version_dir` as version `version`; mapped
  // from its weight cache file under `weight_cache_dir` when one is given,
  // as a shard server started with --weight_cache_dir loads it.
  absl::Status Serve(int64_t version, const std::string& version_dir,
                     const std::string& weight_cache_dir = "") {
    LoadOptions options;
    options.part = {.role = ModelPart::Role::kShard, .shard = spec_};
    options.weight_cache_dir = weight_cache_dir;
    absl::StatusOr<LoadedModel> loaded = LoadCheckpoint(version_dir, options);
    if (!loaded.ok()) return loaded.status();
    auto served = std::make_shared<const LoadedModel>(*std::move(loaded));
    absl::MutexLock lock(&mu_);
    versions_[version] = std::move(served);
    return absl::OkStatus();
  }
  void Unload(int64_t version) {
    absl::MutexLock lock(&mu_);
    versions_.erase(version);
  }
  // While down, every call fails UNAVAILABLE as one to a stopped server.
  void SetDown(bool down) {
    absl::MutexLock lock(&mu_);
    down_ = down;
  }
  // Each call takes this long before it is answered (DEADLINE_EXCEEDED
  // once past its deadline).
  void SetDelay(absl::Duration delay) {
    absl::MutexLock lock(&mu_);
    delay_ = delay;
  }

  // Each answered call reports this many major page faults in its cost.
  void SetMajorFaults(int64_t per_call) { major_faults_ = per_call; }

  int64_t keepalives() const { return keepalives_.load(); }      // no rows, answered OK
  int64_t partial_calls() const { return partial_calls_.load(); }  // with rows
  int64_t attempts() const { return attempts_.load(); }            // every call
  int64_t in_flight() const { return in_flight_.load(); }

  absl::Status ComputePartial(const PartialRequest& r, absl::Time deadline,
                              PartialResponse* out) {
    ++attempts_;
    if (absl::Status s = Arrive(deadline); !s.ok()) return s;
    if (r.shard_index() != spec_.index || r.shard_count() != spec_.count) {
      return absl::FailedPreconditionError(
          absl::StrCat("this server is shard ", spec_.ToString(), "; the front asked for shard ",
                       r.shard_index(), "/", r.shard_count()));
    }
    std::shared_ptr<const LoadedModel> served = Find(r.version());
    if (served == nullptr) {
      return absl::NotFoundError(
          absl::StrCat("model '", r.model(), "' has no version ", r.version()));
    }
    if (r.model() != kModel ||
        static_cast<Precision>(r.precision()) != served->sparse->info().precision) {
      return absl::FailedPreconditionError("another model or precision");
    }
    if (r.model_sha256() != served->model_sha256) {
      return absl::FailedPreconditionError(absl::StrCat(
          "model 'm' version ", r.version(), " holds other files on this shard than on the front"));
    }
    if (r.rows() == 0) {  // a front's keep-alive
      ++keepalives_;
      return absl::OkStatus();
    }
    ++partial_calls_;
    absl::Status s = Compute(*served->sparse, r, out);
    if (s.ok()) out->mutable_cost()->set_major_faults(major_faults_.load());
    return s;
  }

  void StartComputePartial(const PartialRequest* request, absl::Time deadline,
                           PartialResponse* response, std::function<void(absl::Status)> done) {
    absl::MutexLock lock(&mu_);
    queue_.push_back([this, request, deadline, response, done = std::move(done)] {
      done(ComputePartial(*request, deadline, response));
    });
  }

  // SparseInference.GetModel: what FillModelStatus says of each version.
  absl::Status GetModel(const GetModelRequest& request, ModelStatus* status) {
    absl::MutexLock lock(&mu_);
    if (down_) return absl::UnavailableError("failed to connect to all addresses");
    if (request.model() != kModel) return absl::NotFoundError("no such model");
    status->set_name(kModel);
    for (const auto& [number, loaded] : versions_) {
      const ModelInfo& info = loaded->sparse->info();
      sparse::v1::VersionStatus* v = status->add_versions();
      v->set_version(number);
      v->set_precision(std::string(PrecisionName(info.precision)));
      v->set_input_dim(info.input_dim);
      v->set_output_dim(info.output_dim);
      v->set_parameters(info.parameters);
      v->set_weight_bytes_per_row(info.weight_bytes_per_row);
      v->set_model_sha256(loaded->model_sha256);
      v->set_shard(shard_name_.empty() ? spec_.ToString() : shard_name_);
    }
    return absl::OkStatus();
  }

  // What GetModel says this server is ("i/N" by default).
  void SayShard(const std::string& name) {
    absl::MutexLock lock(&mu_);
    shard_name_ = name;
  }

 private:
  // The transport: down, slow, or past the deadline.
  absl::Status Arrive(absl::Time deadline) {
    absl::MutexLock lock(&mu_);
    if (down_) return absl::UnavailableError("failed to connect to all addresses");
    const absl::Time start = absl::Now();
    if (delay_ > absl::ZeroDuration()) {
      ++in_flight_;
      auto waited = [this, start]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || absl::Now() >= start + delay_;
      };
      mu_.AwaitWithDeadline(absl::Condition(&waited), std::min(start + delay_, deadline));
      --in_flight_;
    }
    if (absl::Now() >= deadline) return absl::DeadlineExceededError("Deadline Exceeded");
    return absl::OkStatus();
  }

  std::shared_ptr<const LoadedModel> Find(int64_t version) {
    absl::MutexLock lock(&mu_);
    auto it = versions_.find(version);
    return it == versions_.end() ? nullptr : it->second;
  }

  // What the serving core does with a shard's call: admit the rows, check
  // the given route, compute, and answer the partial outputs and costs.
  static absl::Status Compute(const Model& model, const PartialRequest& r, PartialResponse* out) {
    Route given;
    given.experts_per_row = r.experts_per_row();
    given.expert_ids.assign(r.expert_ids().begin(), r.expert_ids().end());
    given.chunk_rows.assign(r.chunk_rows().begin(), r.chunk_rows().end());
    given.keys_per_row = r.keys_per_row();
    given.bucket_keys.assign(r.bucket_keys().begin(), r.bucket_keys().end());
    const absl::Span<const float> x(r.inputs().data(), r.inputs().size());
    if (absl::Status s = ValidateBatch(x, r.rows(), model.info().input_dim); !s.ok()) return s;
    std::vector<float> y(r.rows() * model.info().output_dim);
    PredictStats stats;
    Route route;
    const absl::Status s = model.PredictAdmitted(x, r.rows(), absl::MakeSpan(y), &stats,
                                                 r.keys_per_row() > 0 ? &route : nullptr,
                                                 {.given = &given});
    if (!s.ok()) return s;
    out->mutable_outputs()->Add(y.begin(), y.end());
    if (!route.bucket_missed.empty()) {
      out->set_bucket_missed(route.bucket_missed.data(), route.bucket_missed.size());
    }
    out->mutable_cost()->set_flops(stats.flops);
    out->mutable_cost()->set_weight_bytes(stats.weight_bytes);
    out->mutable_cost()->set_route_ns(stats.route_ns);
    out->mutable_cost()->set_compute_ns(stats.compute_ns);
    return absl::OkStatus();
  }

  void Work() {
    while (true) {
      std::function<void()> job;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](FakeShard* f) ABSL_EXCLUSIVE_LOCKS_REQUIRED(f->mu_) {
              return f->stopping_ || !f->queue_.empty();
            },
            this));
        if (queue_.empty()) return;  // stopping, with every call answered
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      job();
    }
  }

  const ShardSpec spec_;
  absl::Mutex mu_;
  std::map<int64_t, std::shared_ptr<const LoadedModel>> versions_ ABSL_GUARDED_BY(mu_);
  std::string shard_name_ ABSL_GUARDED_BY(mu_);
  bool down_ ABSL_GUARDED_BY(mu_) = false;
  absl::Duration delay_ ABSL_GUARDED_BY(mu_) = absl::ZeroDuration();
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  std::atomic<int64_t> keepalives_{0}, partial_calls_{0}, attempts_{0}, in_flight_{0};
  std::atomic<int64_t> major_faults_{0};
  std::vector<std::thread> workers_;  // last: they start once the rest is built
};

// The front's way to a FakeShard, as a gRPC channel is to a shard server.
class FakeConnection : public ShardConnection {
 public:
  explicit FakeConnection(FakeShard* shard) : shard_(shard) {}
  void StartComputePartial(const PartialRequest* request, absl::Time deadline,
                           PartialResponse* response,
                           std::function<void(absl::Status)> done) override {
    shard_->StartComputePartial(request, deadline, response, std::move(done));
  }
  absl::Status ComputePartial(const PartialRequest& request, absl::Time deadline,
                              PartialResponse* response) override {
    return shard_->ComputePartial(request, deadline, response);
  }
  absl::Status GetModel(const GetModelRequest& request, absl::Time /*deadline*/,
                        ModelStatus* status) override {
    return shard_->GetModel(request, status);
  }

 private:
  FakeShard* const shard_;
};

// The log lines a ShardSet wrote, from any thread.
class Log {
 public:
  void Write(const std::string& line) {
    absl::MutexLock lock(&mu_);
    lines_.push_back(line);
  }
  // How many lines hold `text`.
  int Count(const std::string& text) const {
    absl::MutexLock lock(&mu_);
    int n = 0;
    for (const std::string& line : lines_) n += line.find(text) != std::string::npos;
    return n;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<std::string> lines_ ABSL_GUARDED_BY(mu_);
};

// The whole model's answer to some rows.
struct Answer {
  std::vector<float> y;
  Route route;
  PredictStats stats;
};

Answer Predict(const Model& model, const std::vector<float>& x, absl::Status* status,
               const PredictOptions& options = {}) {
  const int64_t rows = static_cast<int64_t>(x.size()) / model.info().input_dim;
  Answer a;
  a.y.resize(rows * model.info().output_dim);
  *status = model.Predict(x, rows, absl::MakeSpan(a.y), &a.stats, &a.route, options);
  return a;
}

// Rows [begin, end) of x [rows, d].
std::vector<float> Rows(const std::vector<float>& x, int64_t d, int64_t begin, int64_t end) {
  return std::vector<float>(x.begin() + begin * d, x.begin() + end * d);
}

class ShardedModelTest : public ::testing::Test {
 protected:
  // Writes `c` as version `version` of the model in repository `repo`, and
  // returns the version's directory.
  std::string Write(const Checkpoint& c, int64_t version, const std::string& repo = "repo") {
    const std::string model_dir = (dir_ / repo / kModel).string();
    EXPECT_OK(WriteCheckpoint(model_dir, version, c));
    return absl::StrCat(model_dir, "/", version);
  }

  // `count` fake shards, each serving its part of `version_dir` as `version`
  // (mapped from a file under `weight_cache_dir` when one is given).
  void StartShards(int count, int64_t version, const std::string& version_dir,
                   const std::string& weight_cache_dir = "") {
    fakes_.clear();
    for (int i = 0; i < count; ++i) {
      fakes_.push_back(std::make_unique<FakeShard>(i, count));
      ASSERT_OK(fakes_.back()->Serve(version, version_dir, weight_cache_dir));
    }
  }

  // A ShardSet over fakes_, whose targets are "fake-i" and whose log is
  // log_.
  std::unique_ptr<ShardSet> Shards(ShardSet::Options options) {
    std::vector<std::unique_ptr<ShardConnection>> connections;
    for (size_t i = 0; i < fakes_.size(); ++i) {
      options.targets.push_back(absl::StrCat("fake-", i));
      connections.push_back(std::make_unique<FakeConnection>(fakes_[i].get()));
    }
    options.log = [this](const std::string& line) { log_.Write(line); };
    return std::make_unique<ShardSet>(std::move(options), std::move(connections));
  }

  // The front of `version_dir` as version `version` over `shards`.
  static absl::StatusOr<std::unique_ptr<Model>> Front(const ShardSet& shards, int64_t version,
                                                      const std::string& version_dir) {
    LoadOptions options;
    options.part = {.role = ModelPart::Role::kFront,
                    .shard = {.index = 0, .count = shards.count()}};
    absl::StatusOr<Checkpoint> front = ReadCheckpoint(version_dir, options);
    if (!front.ok()) return front.status();
    return shards.MakeFront(kModel, version, Precision::kFp32, *front);
  }

  static std::unique_ptr<Model> Whole(const std::string& version_dir) {
    absl::StatusOr<LoadedModel> whole = LoadCheckpoint(version_dir);
    EXPECT_OK(whole.status());
    return whole.ok() ? std::move(whole->sparse) : nullptr;
  }

  static Checkpoint Dsm(uint64_t seed) {
    Checkpoint c;
    c.sparse = testing::RandomDsm({.d = 16, .o = 3, .blocks = 2, .experts = 16,
                                   .active_units = 8, .router = RouterKind::kLsh},
                                  seed);
    return c;
  }
  static Checkpoint Lsh(uint64_t seed) {
    Checkpoint c;
    c.sparse = testing::RandomLshTable({.d = 8, .o = 2, .s = 10, .m = 6}, seed);
    return c;
  }

  testing::TempDir dir_{"sharded_model_test"};
  Log log_;
  std::vector<std::unique_ptr<FakeShard>> fakes_;
};

// The front's answer equals the whole model's: outputs within float
// rounding, the same routes (and LSH misses) and FLOPs, from one call to
// each shard the rows touch (at most `max_calls`).
void ExpectSameAnswers(const Model& front, const Model& whole, const std::vector<float>& x,
                       int max_calls) {
  absl::Status s;
  const Answer want = Predict(whole, x, &s);
  ASSERT_OK(s);
  const Answer got = Predict(front, x, &s);
  ASSERT_OK(s);
  EXPECT_TRUE(RelativelyNear(got.y, want.y, 1e-5));
  EXPECT_EQ(got.route.expert_ids, want.route.expert_ids);
  EXPECT_EQ(got.route.experts_per_row, want.route.experts_per_row);
  EXPECT_EQ(got.route.bucket_keys, want.route.bucket_keys);
  EXPECT_EQ(got.route.bucket_missed, want.route.bucket_missed);
  EXPECT_EQ(got.stats.flops, want.stats.flops);
  // A matrix counts once per kernel run over it; shards run the rows of
  // each of the front's 128-row chunks apart, as the whole model does, so
  // the bytes agree at every batch size.
  EXPECT_EQ(got.stats.weight_bytes, want.stats.weight_bytes);
  EXPECT_EQ(front.info().weight_bytes_per_row, whole.info().weight_bytes_per_row);
  EXPECT_EQ(front.info().parameters, whole.info().parameters);
  EXPECT_GT(got.stats.flops, 0);
  EXPECT_GE(got.stats.shards, 1);
  EXPECT_LE(got.stats.shards, max_calls);
  EXPECT_EQ(front.info().flops_per_row, whole.info().flops_per_row);
  EXPECT_EQ(front.info().input_dim, whole.info().input_dim);
  EXPECT_EQ(front.info().output_dim, whole.info().output_dim);
  EXPECT_TRUE(front.info().remote);
}

TEST_F(ShardedModelTest, DsmFanoutEqualsTheWholeModel) {
  const std::string dir = Write(Dsm(7), 1);
  const std::unique_ptr<Model> whole = Whole(dir);
  ASSERT_NE(whole, nullptr);
  const std::vector<float> x = testing::RandomInputs(300, 16, 9);
  for (int count : {2, 3, 4}) {
    SCOPED_TRACE(absl::StrCat(count, " shards"));
    StartShards(count, 1, dir);
    const std::unique_ptr<ShardSet> shards = Shards({});
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Model> front, Front(*shards, 1, dir));
    EXPECT_EQ(front->info().shards, count);
    ExpectSameAnswers(*front, *whole, x, count);
    ExpectSameAnswers(*front, *whole, Rows(x, 16, 0, 100), count);
    // Just over one chunk, and many chunks.
    ExpectSameAnswers(*front, *whole, Rows(x, 16, 0, 129), count);
    ExpectSameAnswers(*front, *whole, testing::RandomInputs(1000, 16, 10), count);
    // One row touches at most L = 2 shards, and each of those once.
    ExpectSameAnswers(*front, *whole, Rows(x, 16, 5, 6), 2);
    int64_t calls = 0;
    for (const auto& f : fakes_) calls += f->partial_calls();
    EXPECT_LE(calls, 4 * count + 2);
  }
}

// Shards that map their parts from their weight cache files (a shard server
// with --weight_cache_dir) answer the front exactly as shards that copy
// them in, and each shard wrote a file of its own.
TEST_F(ShardedModelTest, MappedShardsAnswerAsShardsCopiedIn) {
  const std::string dir = Write(Dsm(8), 1);
  const std::unique_ptr<Model> whole = Whole(dir);
  ASSERT_NE(whole, nullptr);
  const std::vector<float> x = testing::RandomInputs(300, 16, 11);
  for (int count : {2, 3}) {
    SCOPED_TRACE(absl::StrCat(count, " shards"));
    StartShards(count, 1, dir);
    const std::unique_ptr<ShardSet> copied_shards = Shards({});
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Model> copied, Front(*copied_shards, 1, dir));
    absl::Status s;
    const Answer want = Predict(*copied, x, &s);
    ASSERT_OK(s);

    const std::string cache = (dir_ / absl::StrCat("cache", count)).string();
    StartShards(count, 1, dir, cache);
    int files = 0;
    for (const auto& e : std::filesystem::recursive_directory_iterator(cache)) {
      files += e.is_regular_file() && e.path().extension() == ".weights";
    }
    EXPECT_EQ(files, count) << "one file per shard";
    const std::unique_ptr<ShardSet> mapped_shards = Shards({});
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Model> mapped, Front(*mapped_shards, 1, dir));
    ExpectSameAnswers(*mapped, *whole, x, count);
    const Answer got = Predict(*mapped, x, &s);
    ASSERT_OK(s);
    EXPECT_EQ(got.y, want.y);
    EXPECT_EQ(got.stats.flops, want.stats.flops);
    EXPECT_EQ(got.stats.weight_bytes, want.stats.weight_bytes);
    EXPECT_EQ(mapped->info().weight_bytes_per_row, copied->info().weight_bytes_per_row);
  }
}

TEST_F(ShardedModelTest, LshFanoutEqualsTheWholeModel) {
  const std::string dir = Write(Lsh(21), 1);
  const std::unique_ptr<Model> whole = Whole(dir);
  ASSERT_NE(whole, nullptr);
  const std::vector<float> x = testing::RandomInputs(300, 8, 22);
  for (int count : {2, 4}) {
    SCOPED_TRACE(absl::StrCat(count, " shards"));
    StartShards(count, 1, dir);
    const std::unique_ptr<ShardSet> shards = Shards({});
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Model> front, Front(*shards, 1, dir));
    ExpectSameAnswers(*front, *whole, x, count);
    ExpectSameAnswers(*front, *whole, Rows(x, 8, 0, 100), count);
    absl::Status s;
    const Answer got = Predict(*front, x, &s);
    ASSERT_OK(s);
    EXPECT_EQ(got.stats.shards, count) << "every LSH row needs every shard";
    const Answer want = Predict(*whole, x, &s);
    EXPECT_NE(std::count(want.route.bucket_missed.begin(), want.route.bucket_missed.end(), 1), 0)
        << "the model has misses, so the shards' miss flags are compared";
  }
}

// The major page faults the shards report for a front's calls count on the
// thread that predicted, as its own would (the serving core's
// MajorFaultCounter around the compute puts them in the request's cost).
TEST_F(ShardedModelTest, TheShardsMajorFaultsCountOnThePredictingThread) {
  const std::string dir = Write(Dsm(7), 1);
  StartShards(2, 1, dir);
  fakes_[0]->SetMajorFaults(7);
  fakes_[1]->SetMajorFaults(100);
  const std::unique_ptr<ShardSet> shards = Shards({});
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Model> front, Front(*shards, 1, dir));
  const int64_t before0 = fakes_[0]->partial_calls(), before1 = fakes_[1]->partial_calls();
  const MajorFaultCounter counter;
  absl::Status s;
  Predict(*front, testing::RandomInputs(300, 16, 9), &s);
  ASSERT_OK(s);
  const int64_t calls0 = fakes_[0]->partial_calls() - before0;
  const int64_t calls1 = fakes_[1]->partial_calls() - before1;
  ASSERT_GE(calls0, 1);
  ASSERT_GE(calls1, 1);
  const int64_t reported = 7 * calls0 + 100 * calls1;
  // Plus this thread's own, if the kernel had to read a page of ours.
  EXPECT_GE(counter.Count(), reported);
  EXPECT_LE(counter.Count(), reported + 5);
  // Another thread's prediction adds nothing here.
  const MajorFaultCounter here;
  std::thread other([&] { Predict(*front, testing::RandomInputs(10, 16, 3), &s); });
  other.join();
  ASSERT_OK(s);
  EXPECT_LE(here.Count(), 5);
}

// Many threads predict at once, each on its own rows, while the keep-alive
// calls every shard: every answer is the whole model's.
TEST_F(ShardedModelTest, ManyThreadsPredictAtOnce) {
  for (const bool dsm : {true, false}) {
    SCOPED_TRACE(dsm ? "dsm" : "lsh");
    const std::string dir = Write(dsm ? Dsm(31) : Lsh(32), 1, dsm ? "dsm" : "lsh");
    const int64_t d = dsm ? 16 : 8;
    const std::unique_ptr<Model> whole = Whole(dir);
    ASSERT_NE(whole, nullptr);
    StartShards(4, 1, dir);
    const std::unique_ptr<ShardSet> shards = Shards({.keepalive = absl::Milliseconds(5)});
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Model> front, Front(*shards, 1, dir));
    const std::vector<float> x = testing::RandomInputs(256, d, 33);
    absl::Status s;
    const Answer want = Predict(*whole, x, &s);
    ASSERT_OK(s);
    const int64_t o = whole->info().output_dim;
    constexpr int kThreads = 8, kRequests = 12;
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int q = 0; q < kRequests; ++q) {
          const int64_t begin = (t * 31 + q * 17) % 200, end = begin + 1 + (t + q) % 50;
          absl::Status status;
          const Answer got = Predict(*front, Rows(x, d, begin, end), &status);
          const std::vector<float> expected(want.y.begin() + begin * o, want.y.begin() + end * o);
          if (!status.ok() || !RelativelyNear(got.y, expected, 1e-5)) ++wrong;
        }
      });
    }
    for (std::thread& t : threads) t.join();
    EXPECT_EQ(wrong.load(), 0);
    for (const auto& f : fakes_) EXPECT_GT(f->partial_calls(), 0);
  }
}

// A shard that is down fails exactly the requests whose rows need it,
// UNAVAILABLE and naming it; the others are answered as before.
TEST_F(ShardedModelTest, ADownShardFailsOnlyTheRequestsThatNeedIt) {
  const std::string dir = Write(Dsm(41), 1);
  const std::unique_ptr<Model> whole = Whole(dir);
  ASSERT_NE(whole, nullptr);
  StartShards(4, 1, dir);
  absl::Mutex calls_mu;
  std::map<std::pair<int, int>, int> calls;  // (shard, code) -> calls
  ShardSet::Options options;
  options.on_call = [&](int shard, int code, double seconds) {
    EXPECT_GE(seconds, 0);
    absl::MutexLock lock(&calls_mu);
    ++calls[{shard, code}];
  };
  const std::unique_ptr<ShardSet> shards = Shards(std::move(options));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Model> front, Front(*shards, 1, dir));
  const std::vector<float> x = testing::RandomInputs(64, 16, 42);
  absl::Status s;
  const Answer want = Predict(*whole, x, &s);
  ASSERT_OK(s);
  constexpr int kDown = 2, kUnavailable = static_cast<int>(absl::StatusCode::kUnavailable);
  fakes_[kDown]->SetDown(true);
  int failed = 0, answered = 0;
  std::map<std::pair<int, int>, int> expected_calls;
  for (int64_t r = 0; r < 64; ++r) {
    // The shards row r's two experts live on: one call to each.
    const int a = ShardOfUnit(want.route.expert_ids[r * 2], 16, 4);
    const int b = ShardOfUnit(want.route.expert_ids[r * 2 + 1], 16, 4);
    for (int shard : a == b ? std::vector<int>{a} : std::vector<int>{a, b}) {
      ++expected_calls[{shard, shard == kDown ? kUnavailable : 0}];
    }
    const bool needs_it = a == kDown || b == kDown;
    const Answer got = Predict(*front, Rows(x, 16, r, r + 1), &s);
    if (needs_it) {
      ++failed;
      EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << "row " << r << ": " << s;
      EXPECT_THAT(s.message(), HasSubstr("shard 2/4 (fake-2): failed to connect")) << "row " << r;
    } else {
      ++answered;
      ASSERT_OK(s);
      EXPECT_TRUE(RelativelyNear(got.y, Rows(want.y, 3, r, r + 1), 1e-5)) << "row " << r;
    }
  }
  EXPECT_GT(failed, 0);
  EXPECT_GT(answered, 0);
  {
    // on_call heard of every call, with its shard and code.
    absl::MutexLock lock(&calls_mu);
    EXPECT_EQ(calls, expected_calls);
    EXPECT_EQ((calls[{kDown, kUnavailable}]), failed);
  }
  // Back up: the same front answers every row again.
  fakes_[kDown]->SetDown(false);
  ExpectSameAnswers(*front, *whole, x, 4);
}

TEST_F(ShardedModelTest, ADownShardFailsEveryLshRequest) {
  const std::string dir = Write(Lsh(43), 1);
  StartShards(2, 1, dir);
  const std::unique_ptr<ShardSet> shards = Shards({});
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Model> front, Front(*shards, 1, dir));
  fakes_[1]->SetDown(true);
  absl::Status s;
  Predict(*front, testing::RandomInputs(3, 8, 44), &s);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(s.message(), HasSubstr("shard 1/2 (fake-1)"));
}

// A shard slower than the deadline fails the requests that need it
// DEADLINE_EXCEEDED: the request's own deadline, or the default one.
TEST_F(ShardedModelTest, ASlowShardFailsPastTheDeadline) {
  const std::string dir = Write(Lsh(45), 1);
  StartShards(2, 1, dir);
  const std::unique_ptr<ShardSet> shards = Shards({.default_deadline = absl::Milliseconds(100)});
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Model> front, Front(*shards, 1, dir));
  fakes_[0]->SetDelay(absl::Seconds(30));
  const std::vector<float> x = testing::RandomInputs(2, 8, 46);
  for (const bool own_deadline : {false, true}) {
    const absl::Time start = absl::Now();
    absl::Status s;
    Predict(*front, x, &s,
            {.deadline = own_deadline ? start + absl::Milliseconds(50) : absl::InfiniteFuture()});
    EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
    EXPECT_THAT(s.message(), HasSubstr("shard 0/2 (fake-0)"));
    EXPECT_LT(absl::Now() - start, absl::Seconds(3)) << "the call gave up at its deadline";
  }
  fakes_[0]->SetDelay(absl::ZeroDuration());
  absl::Status s;
  Predict(*front, x, &s);
  EXPECT_OK(s);
}

// A front's load waits for every shard to serve its version with the same
// files, and names the ones that do not; a front keeps its version while
// the shards serve it, and fails UNAVAILABLE once one drops it.
TEST_F(ShardedModelTest, WaitForVersionNamesTheShardsThatDoNotServeIt) {
  const std::string v1 = Write(Dsm(51), 1);
  const std::string v2 = Write(Dsm(52), 2);
  const std::string other_v2 = Write(Dsm(53), 2, "other");  // other files, same number
  StartShards(2, 1, v1);
  const std::unique_ptr<ShardSet> impatient = Shards({.wait_for_shards = absl::Milliseconds(300)});
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Model> front1, Front(*impatient, 1, v1));

  absl::StatusOr<std::unique_ptr<Model>> front2 = Front(*impatient, 2, v2);
  EXPECT_EQ(front2.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(front2.status().message(),
              AllOf(HasSubstr("not every shard serves version 2 at FP32"),
                    HasSubstr("shard 0/2 (fake-0): it serves versions [1 FP32]"),
                    HasSubstr("shard 1/2 (fake-1): it serves versions [1 FP32]")));

  // Shard 1 serves another model.safetensors as version 2: it does not count.
  ASSERT_OK(fakes_[0]->Serve(2, v2));
  ASSERT_OK(fakes_[1]->Serve(2, other_v2));
  front2 = Front(*impatient, 2, v2);
  EXPECT_EQ(front2.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(front2.status().message(),
              AllOf(HasSubstr("shard 1/2 (fake-1): it serves versions [1 FP32, 2 FP32]; its "
                              "version 2 holds other files"),
                    Not(HasSubstr("shard 0/2"))));

  // Once it serves the front's files, a front that waits loads.
  std::thread fix([&] {
    absl::SleepFor(absl::Milliseconds(300));
    EXPECT_OK(fakes_[1]->Serve(2, v2));
  });
  const std::unique_ptr<ShardSet> patient = Shards({.wait_for_shards = absl::Seconds(60)});
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<Model>> loaded = Front(*patient, 2, v2);
  fix.join();
  ASSERT_OK(loaded.status());
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(250)) << "it waited for shard 1";
  ExpectSameAnswers(**loaded, *Whole(v2), testing::RandomInputs(50, 16, 54), 2);

  // The old front still answers from version 1 while the shards hold it.
  const std::vector<float> x = testing::RandomInputs(20, 16, 55);
  ExpectSameAnswers(*front1, *Whole(v1), x, 2);
  fakes_[1]->Unload(1);
  absl::Status s;
  Predict(*front1, x, &s);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(s.message(), HasSubstr("shard 1/2 (fake-1) does not serve version 1 of model 'm'"));
}

TEST_F(ShardedModelTest, WaitForVersionNamesAShardAtAnotherIndex) {
  const std::string dir = Write(Lsh(61), 1);
  StartShards(2, 1, dir);
  fakes_[1]->SayShard("0/2");
  const std::unique_ptr<ShardSet> shards = Shards({.wait_for_shards = absl::Milliseconds(100)});
  absl::StatusOr<std::unique_ptr<Model>> front = Front(*shards, 1, dir);
  EXPECT_EQ(front.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(front.status().message(),
              AllOf(HasSubstr("shard 1/2 (fake-1): it serves versions [1 FP32]; it is shard '0/2', "
                              "not 1/2"),
                    Not(HasSubstr("shard 0/2 ("))));
  fakes_[1]->SayShard("");
  fakes_[0]->SetDown(true);
  front = Front(*shards, 1, dir);
  EXPECT_THAT(front.status().message(), HasSubstr("shard 0/2 (fake-0): failed to connect"));
}

// Waits up to 60 s for `done`.
bool Eventually(const std::function<bool()>& done) {
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  while (!done()) {
    if (absl::Now() > give_up) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

// Every shard sees keep-alive calls (no rows) every interval; one that
// fails is logged once when it starts failing and once when it works again.
TEST_F(ShardedModelTest, KeepAliveCallsEveryShardAndLogsChangesOnce) {
  const std::string dir = Write(Dsm(71), 1);
  StartShards(2, 1, dir);
  const std::unique_ptr<ShardSet> shards = Shards({.keepalive = absl::Milliseconds(20)});
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Model> front, Front(*shards, 1, dir));
  // Two rounds of a burst of 8 calls each.
  EXPECT_TRUE(Eventually(
      [&] { return fakes_[0]->keepalives() >= 16 && fakes_[1]->keepalives() >= 16; }));
  EXPECT_EQ(fakes_[0]->partial_calls() + fakes_[1]->partial_calls(), 0)
      << "keep-alives carry no rows";
  EXPECT_EQ(log_.Count("keep-alive"), 0);

  fakes_[1]->SetDown(true);
  const int64_t before = fakes_[1]->attempts();
  // A failing round ends at its first UNAVAILABLE: three failed rounds.
  EXPECT_TRUE(Eventually([&] { return fakes_[1]->attempts() >= before + 3; }));
  EXPECT_EQ(log_.Count("model m version 1: keep-alive to shard 1/2 (fake-1) failed: UNAVAILABLE: "
                       "failed to connect to all addresses; a shard drops the version "
                       "--shard_retain_seconds after its last call"),
            1);
  EXPECT_EQ(log_.Count("works again"), 0);

  fakes_[1]->SetDown(false);
  const int64_t recovered = fakes_[1]->keepalives();
  EXPECT_TRUE(Eventually([&] { return fakes_[1]->keepalives() >= recovered + 24; }));
  EXPECT_EQ(log_.Count("model m version 1: keep-alive to shard 1/2 (fake-1) works again"), 1);
  EXPECT_EQ(log_.Count("keep-alive to shard 1/2 (fake-1) failed"), 1);
  EXPECT_EQ(log_.Count("shard 0/2"), 0);

  // Destroying the front stops the calls.
  const absl::Time start = absl::Now();
  front.reset();
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  const int64_t stopped = fakes_[0]->attempts() + fakes_[1]->attempts();
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(fakes_[0]->attempts() + fakes_[1]->attempts(), stopped);
}

// Destruction does not wait for the next round, and waits for a call in
// flight only until its deadline (1 s).
TEST_F(ShardedModelTest, DestructionStopsTheKeepAlivePromptly) {
  const std::string dir = Write(Lsh(81), 1);
  StartShards(2, 1, dir);
  {
    const std::unique_ptr<ShardSet> idle = Shards({.keepalive = absl::Hours(1)});
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Model> front, Front(*idle, 1, dir));
    const absl::Time start = absl::Now();
    front.reset();
    EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  }
  fakes_[0]->SetDelay(absl::Seconds(60));
  const std::unique_ptr<ShardSet> busy = Shards({.keepalive = absl::Milliseconds(10)});
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Model> front, Front(*busy, 1, dir));
  EXPECT_TRUE(Eventually([&] { return fakes_[0]->in_flight() == 1; }));
  const absl::Time start = absl::Now();
  front.reset();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_EQ(fakes_[0]->in_flight(), 0);
}

}  // namespace
}  // namespace sparse
