// The weight cache (weight_cache.h, docs/weight-cache.md): a version served
// from its mapped cache file answers exactly as the copy-in path does, on
// every DSM router and precision, with and without a dense twin; a damaged,
// stale or truncated file is rebuilt or retired, never trusted or crashed on.
#include "model_store/weight_cache.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "common/status_macros.h"
#include "model_store/checkpoint.h"
#include "model_store/file_util.h"
#include "tests/testing/matchers.h"
#include "tests/testing/random_models.h"

namespace sparse {
namespace {

namespace fs = std::filesystem;
using ::sparse::testing::RandomDense;
using ::sparse::testing::RandomDsm;
using ::sparse::testing::RandomInputs;
using ::sparse::testing::RandomLshTable;

class WeightCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            absl::StrCat("sparse_weight_cache_test_", ::getpid(), "_",
                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::permissions(root_, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(root_, ec);
  }
  // Writes version 1 of a model and returns its directory.
  std::string Publish(const Checkpoint& c, const std::string& name = "m") {
    EXPECT_OK(WriteCheckpoint((root_ / "repo" / name).string(), 1, c));
    return (root_ / "repo" / name / "1").string();
  }
  LoadOptions Mapped(Precision p, WeightVerify verify = WeightVerify::kLoad) const {
    LoadOptions o;
    o.precision = p;
    o.weight_cache_dir = (root_ / "cache").string();
    o.weight_verify = verify;
    return o;
  }
  // The one cache file of the test, or "".
  std::string CacheFile() const {
    std::error_code ec;
    for (const auto& e : fs::recursive_directory_iterator(root_ / "cache", ec)) {
      if (e.is_regular_file() && e.path().extension() == ".weights") return e.path().string();
    }
    return "";
  }
  fs::path root_;
};

struct Answer {
  std::vector<float> y;
  PredictStats stats;
  Route route;
  absl::Status status;
};
Answer RunModel(const Model& model, const std::vector<float>& x, int64_t rows) {
  Answer a;
  a.y.resize(rows * model.info().output_dim);
  a.status = model.Predict(x, rows, absl::MakeSpan(a.y), &a.stats, &a.route);
  return a;
}

// Every output, FLOP and weight byte of `mapped` equals `copied`'s.
void ExpectSameAnswers(const LoadedModel& copied, const LoadedModel& mapped, int64_t d) {
  for (int64_t rows : {1, 2, 7, 130}) {
    const std::vector<float> x = RandomInputs(rows, d, 100 + rows);
    for (auto [a, b] : {std::pair<const Model*, const Model*>{copied.sparse.get(),
                                                               mapped.sparse.get()},
                        {copied.dense.get(), mapped.dense.get()}}) {
      ASSERT_EQ(a == nullptr, b == nullptr);
      if (a == nullptr) continue;
      const Answer want = RunModel(*a, x, rows), got = RunModel(*b, x, rows);
      ASSERT_OK(want.status);
      ASSERT_OK(got.status);
      EXPECT_EQ(want.y, got.y) << b->info().description << " rows=" << rows;
      EXPECT_EQ(want.stats.flops, got.stats.flops);
      EXPECT_EQ(want.stats.weight_bytes, got.stats.weight_bytes);
      EXPECT_EQ(a->info().weight_bytes_per_row, b->info().weight_bytes_per_row);
      EXPECT_EQ(a->info().parameters, b->info().parameters);
      EXPECT_EQ(a->info().description, b->info().description);
    }
  }
}

TEST_F(WeightCacheTest, MappedAnswersEqualCopiedForEveryRouterAndPrecision) {
  int n = 0;
  for (RouterKind router :
       {RouterKind::kLsh, RouterKind::kHash, RouterKind::kKmeans, RouterKind::kTopk}) {
    for (bool twin : {false, true}) {
      Checkpoint c;
      testing::DsmShape shape{.d = 12, .o = 3, .blocks = 2, .experts = 4, .active_units = 8,
                              .router = router};
      if (router == RouterKind::kTopk) shape.topk_block_units = 32;
      c.sparse = RandomDsm(shape, 7 + n);
      if (twin) c.dense = RandomDense(12, 40, 3, Activation::kRelu, 9 + n);
      const std::string dir = Publish(c, absl::StrCat("m", n++));
      for (Precision p : {Precision::kFp32, Precision::kBf16, Precision::kInt8}) {
        SCOPED_TRACE(absl::StrCat(RouterKindName(router), twin ? " twin " : " ", PrecisionName(p)));
        LoadOptions copy_in;
        copy_in.precision = p;
        ASSERT_OK_AND_ASSIGN(LoadedModel copied, LoadCheckpoint(dir, copy_in));
        ASSERT_OK_AND_ASSIGN(LoadedModel built, LoadCheckpoint(dir, Mapped(p)));
        EXPECT_EQ(built.weight_cache_event, "built");
        ASSERT_NE(built.weight_cache, nullptr);
        EXPECT_GT(built.sparse->info().mapped_bytes, 0);
        EXPECT_EQ(built.dense_cost_only, copied.dense_cost_only);
        ExpectSameAnswers(copied, built, 12);
        // The second load maps the file the first one wrote.
        ASSERT_OK_AND_ASSIGN(LoadedModel again, LoadCheckpoint(dir, Mapped(p, WeightVerify::kTouch)));
        EXPECT_EQ(again.weight_cache_event, "mapped");
        EXPECT_EQ(again.weight_cache->path(), built.weight_cache->path());
        ExpectSameAnswers(copied, again, 12);
      }
    }
  }
}

// Without a cost-only dense endpoint a routed DSM's file is written one
// group of experts at a time (never the whole model decoded at once).
TEST_F(WeightCacheTest, WrittenGroupByGroupItAnswersAsCopiedIn) {
  int n = 0;
  for (RouterKind router : {RouterKind::kLsh, RouterKind::kHash, RouterKind::kKmeans}) {
    for (bool twin : {false, true}) {
      Checkpoint c;
      c.sparse = RandomDsm({.d = 16, .o = 2, .blocks = 3, .experts = 8, .active_units = 8,
                            .router = router},
                           40 + n);
      if (twin) c.dense = RandomDense(16, 24, 2, Activation::kRelu, 50 + n);
      const std::string dir = Publish(c, absl::StrCat("g", n++));
      for (Precision p : {Precision::kFp32, Precision::kInt8}) {
        SCOPED_TRACE(absl::StrCat(RouterKindName(router), twin ? " twin " : " ", PrecisionName(p)));
        LoadOptions copy_in;
        copy_in.precision = p;
        copy_in.cost_only_dense = false;
        LoadOptions mapped = Mapped(p);
        mapped.cost_only_dense = false;
        mapped.cache_group_bytes = 1000;  // every expert its own group
        ASSERT_OK_AND_ASSIGN(LoadedModel copied, LoadCheckpoint(dir, copy_in));
        ASSERT_OK_AND_ASSIGN(LoadedModel built, LoadCheckpoint(dir, mapped));
        EXPECT_EQ(built.weight_cache_event, "built");
        ExpectSameAnswers(copied, built, 16);
      }
    }
  }
}

// --max_model_bytes counts what a mapped version holds in process memory,
// not its mapped file: a version whose files exceed the budget is refused
// copied in and serves mapped.
TEST_F(WeightCacheTest, TheBudgetCountsProcessMemoryNotTheMappedFile) {
  Checkpoint c;
  c.sparse = RandomDsm({.d = 64, .o = 1, .experts = 64, .active_units = 64}, 22);
  const std::string dir = Publish(c);
  const uint64_t file = fs::file_size(fs::path(dir) / kModelFile);
  ASSERT_GT(file, uint64_t{1} << 20);
  LoadOptions copy_in;
  copy_in.cost_only_dense = false;
  copy_in.max_bytes = file / 2;
  EXPECT_EQ(LoadCheckpoint(dir, copy_in).status().code(), absl::StatusCode::kResourceExhausted);
  LoadOptions mapped = Mapped(Precision::kFp32);
  mapped.cost_only_dense = false;
  mapped.max_bytes = file / 2;
  ASSERT_OK_AND_ASSIGN(LoadedModel loaded, LoadCheckpoint(dir, mapped));
  EXPECT_GE(loaded.sparse->info().mapped_bytes, static_cast<int64_t>(file) * 9 / 10);
  EXPECT_LT(loaded.sparse->info().resident_bytes, static_cast<int64_t>(file) / 10);
}

TEST_F(WeightCacheTest, ACorruptCheckpointIsNeverWritten) {
  Checkpoint c;
  c.sparse = RandomDsm({.d = 8, .o = 1, .experts = 8, .active_units = 16}, 21);
  const std::string dir = Publish(c);
  // One byte of the last tensor bytes changed: the part sums (grouped) or
  // the whole-file SHA-256 refuse it, and no cache file is published.
  const std::string model = dir + "/" + kModelFile;
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::add);
  ::chmod(model.c_str(), 0644);
  std::fstream f(model, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(-3, std::ios::end);
  f.put('\x7f');
  f.close();
  for (bool cost_only : {true, false}) {
    LoadOptions o = Mapped(Precision::kFp32);
    o.cost_only_dense = cost_only;
    const absl::Status s = LoadCheckpoint(dir, o).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find("SHA-256"), std::string::npos) << s;
    EXPECT_EQ(CacheFile(), "");
  }
}

// Layouts that pad (K = 100 is no multiple of oneDNN's blocks) are written
// to by oneDNN on every call: they are copied out of the mapping, and the
// answers stay those of the copy-in path (a read-only mapping would fault).
TEST_F(WeightCacheTest, PaddedLayoutsAreCopiedOutOfTheMapping) {
  Checkpoint c;
  c.sparse = RandomDsm({.d = 100, .o = 3, .experts = 4, .active_units = 60}, 23);
  c.dense = RandomDense(100, 120, 3, Activation::kRelu, 24);
  const std::string dir = Publish(c);
  for (Precision p : {Precision::kFp32, Precision::kBf16, Precision::kInt8}) {
    SCOPED_TRACE(PrecisionName(p));
    LoadOptions copy_in;
    copy_in.precision = p;
    ASSERT_OK_AND_ASSIGN(LoadedModel copied, LoadCheckpoint(dir, copy_in));
    ASSERT_OK_AND_ASSIGN(LoadedModel mapped, LoadCheckpoint(dir, Mapped(p)));
    ExpectSameAnswers(copied, mapped, 100);
  }
}

TEST_F(WeightCacheTest, ResidencyCountsWhatIsInMemory) {
  Checkpoint c;
  c.sparse = RandomDsm({.d = 64, .o = 1, .experts = 16, .active_units = 64}, 3);
  const std::string dir = Publish(c);
  ASSERT_OK_AND_ASSIGN(LoadedModel loaded,
                       LoadCheckpoint(dir, Mapped(Precision::kFp32, WeightVerify::kTouch)));
  const WeightResidency r = loaded.sparse->Residency();
  EXPECT_EQ(r.mapped_bytes, loaded.sparse->info().mapped_bytes);
  ASSERT_EQ(r.part_resident_bytes.size(), 16u);
  EXPECT_EQ(r.part_bytes, 4 * (64 * 64 + 64 * 1 + 64));
  // Just written, the file is in the page cache: every part is resident.
  EXPECT_EQ(r.resident_bytes, r.mapped_bytes);
  // Dropped from the page cache, nothing is (until a request touches it).
  const int fd = ::open(loaded.weight_cache->path().c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
  ::close(fd);
  const WeightResidency cold = loaded.sparse->Residency();
  if (cold.resident_bytes == r.mapped_bytes) {
    GTEST_SKIP() << "this file system keeps the pages (tmpfs?): nothing to measure";
  }
  EXPECT_LT(cold.resident_bytes, r.mapped_bytes / 2);
}

void CorruptPart(const std::string& path, const std::string& name, int64_t part);

// LSH tables are mapped too: each table's bucket index, values and INT8
// scales, at every precision and degree, for both hash families; outputs,
// FLOPs, bytes and bucket misses equal the copy-in path's, and the process
// holds only the hash functions.
TEST_F(WeightCacheTest, LshTablesAreMappedAndAnswerAsCopiedIn) {
  int n = 0;
  for (int64_t degree : {0, 1}) {
    for (HashFamily family : {HashFamily::kHyperplane, HashFamily::kEuclidean}) {
      Checkpoint c;
      // Many buckets of Δ=1 values (o·(d+1) floats each): several parts per table.
      c.sparse = RandomLshTable({.d = 12, .o = 3, .s = 3, .m = 8, .degree = degree,
                                 .family = family, .sample_rows = 4096},
                                60 + n);
      const std::string dir = Publish(c, absl::StrCat("lsh", n++));
      for (Precision p : {Precision::kFp32, Precision::kBf16, Precision::kInt8}) {
        SCOPED_TRACE(absl::StrCat("degree ", degree, " ", HashFamilyName(family), " ",
                                  PrecisionName(p)));
        LoadOptions copy_in;
        copy_in.precision = p;
        ASSERT_OK_AND_ASSIGN(LoadedModel copied, LoadCheckpoint(dir, copy_in));
        ASSERT_OK_AND_ASSIGN(LoadedModel built, LoadCheckpoint(dir, Mapped(p)));
        EXPECT_EQ(built.weight_cache_event, "built");
        ASSERT_NE(built.weight_cache, nullptr);
        ExpectSameAnswers(copied, built, 12);
        ASSERT_OK_AND_ASSIGN(LoadedModel again,
                             LoadCheckpoint(dir, Mapped(p, WeightVerify::kTouch)));
        EXPECT_EQ(again.weight_cache_event, "mapped");
        ExpectSameAnswers(copied, again, 12);
        const Answer want = RunModel(*copied.sparse, RandomInputs(64, 12, 3), 64);
        const Answer got = RunModel(*again.sparse, RandomInputs(64, 12, 3), 64);
        EXPECT_EQ(want.route.bucket_missed, got.route.bucket_missed);
        EXPECT_EQ(want.route.bucket_keys, got.route.bucket_keys);
        const ModelInfo& info = again.sparse->info();
        EXPECT_EQ(info.mapped_bytes + info.resident_bytes,
                  copied.sparse->info().resident_bytes);
        EXPECT_LT(info.resident_bytes, info.mapped_bytes);
        EXPECT_EQ(again.sparse->Residency().mapped_bytes, info.mapped_bytes);
      }
    }
  }
}

// A corrupt group of buckets, checked on touch, fails only the rows whose
// buckets are in it; checked at load, the file is rebuilt.
TEST_F(WeightCacheTest, ACorruptBucketGroupFailsOnlyTheRowsThatReadIt) {
  Checkpoint c;
  // Δ=1, d=64, o=2: o·(d+1)·4 = 520 bytes a bucket, 128 buckets a part.
  c.sparse = RandomLshTable({.d = 64, .o = 2, .s = 1, .m = 10, .degree = 1,
                             .sample_rows = 8192, .keep_fraction = 1.0},
                            70);
  const auto& lsh = std::get<LshTableWeights>(c.sparse);
  ASSERT_GT(lsh.tables[0].keys.size(), 256u) << "needs buckets in parts 0 and 1";
  const std::string dir = Publish(c);
  ASSERT_OK(LoadCheckpoint(dir, Mapped(Precision::kFp32)).status());
  const std::string path = CacheFile();
  ASSERT_FALSE(path.empty());
  ASSERT_OK_AND_ASSIGN(LoadedModel probe, LoadCheckpoint(dir));
  // A row whose bucket is stored in part 0 (rows 0-127) and one in part 1.
  std::vector<float> in0, in1;
  for (int seed = 0; seed < 2000 && (in0.empty() || in1.empty()); ++seed) {
    const std::vector<float> x = RandomInputs(1, 64, seed);
    const Answer a = RunModel(*probe.sparse, x, 1);
    if (a.route.bucket_missed[0]) continue;
    const auto& keys = lsh.tables[0].keys;
    const int64_t row =
        std::lower_bound(keys.begin(), keys.end(), a.route.bucket_keys[0]) - keys.begin();
    if (row < 128 && in0.empty()) in0 = x;
    if (row >= 128 && row < 256 && in1.empty()) in1 = x;
  }
  ASSERT_FALSE(in0.empty());
  ASSERT_FALSE(in1.empty());
  CorruptPart(path, "sparse/table.0.values", 1);
  ASSERT_OK_AND_ASSIGN(LoadedModel touch,
                       LoadCheckpoint(dir, Mapped(Precision::kFp32, WeightVerify::kTouch)));
  EXPECT_EQ(touch.weight_cache_event, "mapped");
  const Answer bad = RunModel(*touch.sparse, in1, 1);
  EXPECT_EQ(bad.status.code(), absl::StatusCode::kDataLoss) << bad.status;
  EXPECT_NE(bad.status.message().find("part 1 of array 'sparse/table.0.values'"),
            std::string::npos)
      << bad.status;
  EXPECT_EQ(RunModel(*touch.sparse, in0, 1).y, RunModel(*probe.sparse, in0, 1).y);
  ASSERT_OK_AND_ASSIGN(LoadedModel load, LoadCheckpoint(dir, Mapped(Precision::kFp32)));
  EXPECT_NE(load.weight_cache_event.find("rebuilt: "), std::string::npos);
  EXPECT_EQ(RunModel(*load.sparse, in1, 1).y, RunModel(*probe.sparse, in1, 1).y);
}

TEST_F(WeightCacheTest, VersionOneManifestsAreCopiedIn) {
  Checkpoint dsm;
  dsm.sparse = RandomDsm({}, 6);
  const std::string dir = Publish(dsm, "v1");
  // A version-1 manifest: sizes and whole-file sums only.
  const std::string model = [&] {
    std::ifstream in(dir + "/" + kModelFile, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }();
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::add);
  fs::permissions(dir + "/" + kManifestFile, fs::perms::owner_write, fs::perm_options::add);
  std::ofstream(dir + "/" + kManifestFile, std::ios::trunc)
      << absl::StrCat("{\"format_version\": 1, \"files\": {\"", kModelFile, "\": {\"bytes\": ",
                      model.size(), ", \"sha256\": \"",
                      Sha256Hex({reinterpret_cast<const uint8_t*>(model.data()), model.size()}),
                      "\"}}}");
  ASSERT_OK_AND_ASSIGN(LoadedModel v1, LoadCheckpoint(dir, Mapped(Precision::kFp32)));
  EXPECT_EQ(v1.weight_cache, nullptr);
}

// Flips one byte of part `part` of array `name` in the cache file at `path`
// (made writable for the test, as an attacker or a bad disk would).
void CorruptPart(const std::string& path, const std::string& name, int64_t part) {
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  ASSERT_OK_AND_ASSIGN(WeightCacheIndex index,
                       ParseWeightCacheIndex({reinterpret_cast<const uint8_t*>(bytes.data()),
                                              bytes.size()}));
  for (const WeightCacheArray& a : index.arrays) {
    if (a.name != name) continue;
    const uint64_t at = a.offset + part * 4 * a.part_floats + 5;
    bytes[at] = static_cast<char>(bytes[at] ^ 0x40);
    ::chmod(path.c_str(), 0644);
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
    return;
  }
  FAIL() << "no array " << name;
}

TEST_F(WeightCacheTest, CorruptPartFailsOnlyTheRequestsThatNeedIt) {
  Checkpoint c;
  c.sparse = RandomDsm({.d = 8, .o = 1, .experts = 8, .active_units = 16}, 11);
  const std::string dir = Publish(c);
  ASSERT_OK(LoadCheckpoint(dir, Mapped(Precision::kFp32)).status());
  const std::string path = CacheFile();
  ASSERT_FALSE(path.empty());
  // Which expert do rows go to? Find a row for expert 3 and one elsewhere.
  ASSERT_OK_AND_ASSIGN(LoadedModel probe, LoadCheckpoint(dir));
  std::vector<float> to3, elsewhere;
  for (int seed = 0; seed < 500 && (to3.empty() || elsewhere.empty()); ++seed) {
    const std::vector<float> x = RandomInputs(1, 8, seed);
    const Answer a = RunModel(*probe.sparse, x, 1);
    (a.route.expert_ids[0] == 3 ? to3 : elsewhere) = x;
  }
  ASSERT_FALSE(to3.empty());
  ASSERT_FALSE(elsewhere.empty());
  CorruptPart(path, "sparse/bottom", 3);

  // Checked on touch: the version loads, expert 3's requests fail alone.
  ASSERT_OK_AND_ASSIGN(LoadedModel touch,
                       LoadCheckpoint(dir, Mapped(Precision::kFp32, WeightVerify::kTouch)));
  EXPECT_EQ(touch.weight_cache_event, "mapped");
  const Answer bad = RunModel(*touch.sparse, to3, 1);
  EXPECT_EQ(bad.status.code(), absl::StatusCode::kDataLoss) << bad.status;
  EXPECT_NE(bad.status.message().find("part 3 of array 'sparse/bottom'"), std::string::npos)
      << bad.status;
  EXPECT_OK(RunModel(*touch.sparse, elsewhere, 1).status);
  EXPECT_EQ(RunModel(*touch.sparse, to3, 1).status.code(), absl::StatusCode::kDataLoss);

  // Checked at load: the damaged file is rebuilt, and answers are right.
  ASSERT_OK_AND_ASSIGN(LoadedModel load, LoadCheckpoint(dir, Mapped(Precision::kFp32)));
  EXPECT_NE(load.weight_cache_event.find("rebuilt: "), std::string::npos);
  EXPECT_NE(load.weight_cache_event.find("SHA-256"), std::string::npos);
  EXPECT_EQ(RunModel(*load.sparse, to3, 1).y, RunModel(*probe.sparse, to3, 1).y);
  // The file still mapped by `touch` is not the new one.
  EXPECT_EQ(RunModel(*touch.sparse, to3, 1).status.code(), absl::StatusCode::kDataLoss);
}

TEST_F(WeightCacheTest, DamagedOrStaleFilesAreRebuilt) {
  Checkpoint c;
  c.sparse = RandomDsm({}, 12);
  const std::string dir = Publish(c);
  ASSERT_OK_AND_ASSIGN(LoadedModel first, LoadCheckpoint(dir, Mapped(Precision::kFp32)));
  const std::string path = first.weight_cache->path();
  first = {};
  for (const std::string& damage : {std::string("truncated"), std::string("garbage"),
                                    std::string("empty")}) {
    SCOPED_TRACE(damage);
    ::chmod(path.c_str(), 0644);
    if (damage == "truncated") {
      ASSERT_EQ(::truncate(path.c_str(), 1000), 0);
    } else {
      std::ofstream(path, std::ios::trunc) << (damage == "garbage" ? "not a cache file" : "");
    }
    ASSERT_OK_AND_ASSIGN(LoadedModel loaded, LoadCheckpoint(dir, Mapped(Precision::kFp32)));
    EXPECT_NE(loaded.weight_cache_event.find("rebuilt: "), std::string::npos)
        << loaded.weight_cache_event;
  }
  // Another precision is another file; both stay.
  ASSERT_OK_AND_ASSIGN(LoadedModel bf16, LoadCheckpoint(dir, Mapped(Precision::kBf16)));
  EXPECT_EQ(bf16.weight_cache_event, "built");
  EXPECT_NE(bf16.weight_cache->path(), path);
  EXPECT_TRUE(fs::exists(path));
}

TEST_F(WeightCacheTest, UnwritableCacheDirectoryFailsTheLoadClearly) {
  Checkpoint c;
  c.sparse = RandomDsm({}, 13);
  const std::string dir = Publish(c);
  LoadOptions o = Mapped(Precision::kFp32);
  std::ofstream((root_ / "file").string()) << "x";
  o.weight_cache_dir = (root_ / "file" / "cache").string();
  const absl::Status s = LoadCheckpoint(dir, o).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("weight cache directory"), std::string::npos) << s;
}

// Another process truncates the mapped file while requests run: its
// truncate waits on the server's lease, the mapping retires (requests get
// UNAVAILABLE, never SIGBUS), and the next load builds a new file.
TEST_F(WeightCacheTest, TruncatingTheMappedFileUnderLoadRetiresItWithoutACrash) {
  Checkpoint c;
  c.sparse = RandomDsm({.d = 32, .o = 2, .experts = 16, .active_units = 32}, 14);
  const std::string dir = Publish(c);
  ASSERT_OK_AND_ASSIGN(LoadedModel loaded, LoadCheckpoint(dir, Mapped(Precision::kFp32)));
  const std::string path = loaded.weight_cache->path();
  if (!loaded.weight_cache->leased()) GTEST_SKIP() << "no read leases on this file system";
  ::chmod(path.c_str(), 0644);  // so the other process may open it for writing
  std::atomic<bool> stop{false};
  std::atomic<int64_t> ok{0}, unavailable{0}, other{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 2; ++t) {
    clients.emplace_back([&, t] {
      for (int i = 0; !stop.load(); ++i) {
        const Answer a = RunModel(*loaded.sparse, RandomInputs(3, 32, t * 100000 + i), 3);
        (a.status.ok() ? ok : absl::IsUnavailable(a.status) ? unavailable : other)++;
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  // truncate(2) by path, which waits for the lease (coreutils' truncate
  // opens with O_NONBLOCK and is refused at once instead).
  const std::string command =
      absl::StrCat("/usr/bin/python3 -c \"import os; os.truncate('", path, "', 0)\"");
  const int rc = std::system(command.c_str());
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  stop = true;
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(rc, 0);
  EXPECT_GT(ok.load(), 0);
  EXPECT_GT(unavailable.load(), 0);
  EXPECT_EQ(other.load(), 0);
  EXPECT_TRUE(loaded.retired());
  // The truncated file was unlinked first; a new load builds a new one.
  ASSERT_OK_AND_ASSIGN(LoadedModel again, LoadCheckpoint(dir, Mapped(Precision::kFp32)));
  EXPECT_EQ(again.weight_cache_event, "built");
  EXPECT_OK(RunModel(*again.sparse, RandomInputs(3, 32, 1), 3).status);
}

TEST(WeightCacheIndexTest, RefusesEveryDamagedFooterAndIndex) {
  EXPECT_FALSE(ParseWeightCacheIndex({}).ok());
  const std::string junk(200, 'x');
  EXPECT_FALSE(
      ParseWeightCacheIndex({reinterpret_cast<const uint8_t*>(junk.data()), junk.size()}).ok());
}

// An array whose parts × part_floats wraps past 2^64 (2^20 parts of 2^44
// floats, in a file of 16 TiB of data: a sparse file on a file system that
// allows one) was taken to fit in 0 bytes; its views then reached terabytes
// past the mapping. The file is an anonymous mapping here, only its index,
// sums and footer written.
TEST(WeightCacheIndexTest, RefusesAnArrayWhoseSizeWrapsPast64Bits) {
  const uint64_t data_bytes = uint64_t{1} << 44, parts = uint64_t{1} << 20;
  const std::string index = absl::StrCat(R"({"key":"k","arrays":[{"name":"a","offset":0,"parts":)",
                                         parts, R"(,"part_floats":)", data_bytes, "}]}");
  const uint64_t sums_bytes = parts * 64, meta_bytes = index.size() + sums_bytes;
  const uint64_t size = data_bytes + meta_bytes + 88;
  void* base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) GTEST_SKIP() << "cannot reserve " << size << " bytes of address space";
  uint8_t* meta = static_cast<uint8_t*>(base) + data_bytes;
  std::memcpy(meta, index.data(), index.size());
  std::memset(meta + index.size(), 'a', sums_bytes);
  uint8_t* footer = meta + meta_bytes;
  const uint64_t index_bytes = index.size();
  std::memcpy(footer, &index_bytes, 8);
  std::memcpy(footer + 8, &sums_bytes, 8);
  std::memcpy(footer + 16, Sha256Hex({meta, meta_bytes}).data(), 64);
  std::memcpy(footer + 80, "SSWCACH1", 8);
  const absl::StatusOr<WeightCacheIndex> parsed =
      ParseWeightCacheIndex({static_cast<const uint8_t*>(base), size});
  ::munmap(base, size);
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << parsed.status();
  EXPECT_THAT(std::string(parsed.status().message()), ::testing::HasSubstr("lies outside the data"));
}

}  // namespace
}  // namespace sparse
