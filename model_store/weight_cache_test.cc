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
#include <set>
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

// ---- A shard's part, mapped from its own file

LoadOptions ShardOf(LoadOptions options, int index, int count) {
  options.part = {.role = ModelPart::Role::kShard, .shard = {.index = index, .count = count}};
  return options;
}

// What a shard answers for the routes `given`: its partial outputs, FLOPs
// and weight bytes.
Answer RunShard(const Model& shard, const std::vector<float>& x, int64_t rows, const Route& given) {
  Answer a;
  a.y.resize(rows * shard.info().output_dim);
  a.status = shard.Predict(x, rows, absl::MakeSpan(a.y), &a.stats, nullptr, {.given = &given});
  return a;
}

// Every partial output, FLOP and weight byte of the shard `mapped` equals
// `copied`'s, on the routes the whole model `whole` takes.
void ExpectSameShardAnswers(const Model& whole, const LoadedModel& copied,
                            const LoadedModel& mapped, int64_t d) {
  EXPECT_EQ(mapped.dense, nullptr) << "a shard holds no dense endpoint";
  const Model& a = *copied.sparse;
  const Model& b = *mapped.sparse;
  EXPECT_TRUE(b.info().needs_given_route);
  EXPECT_EQ(a.info().weight_bytes_per_row, b.info().weight_bytes_per_row);
  EXPECT_EQ(a.info().flops_per_row, b.info().flops_per_row);
  EXPECT_EQ(a.info().parameters, b.info().parameters);
  EXPECT_EQ(a.info().description, b.info().description);
  int64_t flops = 0;  // a row may route to none of the shard's experts; 130 rows do
  for (int64_t rows : {1, 7, 130}) {
    const std::vector<float> x = RandomInputs(rows, d, 300 + rows);
    const Answer routed = RunModel(whole, x, rows);
    ASSERT_OK(routed.status);
    const Answer want = RunShard(a, x, rows, routed.route);
    const Answer got = RunShard(b, x, rows, routed.route);
    ASSERT_OK(want.status);
    ASSERT_OK(got.status);
    EXPECT_EQ(want.y, got.y) << b.info().description << " rows=" << rows;
    EXPECT_EQ(want.stats.flops, got.stats.flops);
    EXPECT_EQ(want.stats.weight_bytes, got.stats.weight_bytes);
    flops += got.stats.flops;
  }
  EXPECT_GT(flops, 0) << "the shard computed nothing: its answers compare nothing";
}

TEST_F(WeightCacheTest, AMappedShardAnswersAsTheShardCopiedIn) {
  int n = 0;
  for (RouterKind router : {RouterKind::kLsh, RouterKind::kHash, RouterKind::kKmeans}) {
    Checkpoint c;
    c.sparse = RandomDsm({.d = 12, .o = 3, .blocks = 2, .experts = 8, .active_units = 8,
                          .router = router},
                         60 + n);
    // The twin is the front's: a shard never reads it, nor puts it in its file.
    c.dense = RandomDense(12, 40, 3, Activation::kRelu, 70 + n);
    const std::string dir = Publish(c, absl::StrCat("s", n++));
    for (Precision p : {Precision::kFp32, Precision::kBf16, Precision::kInt8}) {
      LoadOptions copy_in;
      copy_in.precision = p;
      ASSERT_OK_AND_ASSIGN(LoadedModel whole, LoadCheckpoint(dir, copy_in));
      for (int i = 0; i < 3; ++i) {
        SCOPED_TRACE(absl::StrCat(RouterKindName(router), " ", PrecisionName(p), " shard ", i, "/3"));
        ASSERT_OK_AND_ASSIGN(LoadedModel copied, LoadCheckpoint(dir, ShardOf(copy_in, i, 3)));
        // Shard 1 is written one expert at a time, the others in one group.
        LoadOptions mapped = ShardOf(Mapped(p), i, 3);
        if (i == 1) mapped.cache_group_bytes = 1000;
        ASSERT_OK_AND_ASSIGN(LoadedModel built, LoadCheckpoint(dir, mapped));
        EXPECT_EQ(built.weight_cache_event, "built");
        ASSERT_NE(built.weight_cache, nullptr);
        EXPECT_GT(built.sparse->info().mapped_bytes, 0);
        EXPECT_EQ(copied.sparse->info().mapped_bytes, 0);
        ExpectSameShardAnswers(*whole.sparse, copied, built, 12);
        // The next load maps the file the first one wrote.
        ASSERT_OK_AND_ASSIGN(LoadedModel again,
                             LoadCheckpoint(dir, ShardOf(Mapped(p, WeightVerify::kTouch), i, 3)));
        EXPECT_EQ(again.weight_cache_event, "mapped");
        EXPECT_EQ(again.weight_cache->path(), built.weight_cache->path());
        ExpectSameShardAnswers(*whole.sparse, copied, again, 12);
      }
    }
  }
}

// A mapped shard holds a0's zeros in process memory and maps its slice:
// what the shard copied in holds, less that.
TEST_F(WeightCacheTest, AMappedShardHoldsLittleAndMapsItsSlice) {
  Checkpoint c;
  c.sparse = RandomDsm({.d = 64, .o = 2, .blocks = 2, .experts = 8, .active_units = 64}, 81);
  const std::string dir = Publish(c);
  const int64_t o = 2, slice_bytes = 4 * (64 * 64 + 64 * o + 64);
  for (Precision p : {Precision::kFp32, Precision::kInt8}) {
    SCOPED_TRACE(PrecisionName(p));
    LoadOptions copy_in;
    copy_in.precision = p;
    ASSERT_OK_AND_ASSIGN(LoadedModel copied, LoadCheckpoint(dir, ShardOf(copy_in, 1, 4)));
    ASSERT_OK_AND_ASSIGN(LoadedModel mapped, LoadCheckpoint(dir, ShardOf(Mapped(p), 1, 4)));
    const ModelInfo& info = mapped.sparse->info();
    EXPECT_EQ(info.resident_bytes, 4 * o);
    EXPECT_EQ(info.mapped_bytes, copied.sparse->info().resident_bytes - 4 * o);
    if (p == Precision::kFp32) {
      // Shard 1 of 4 owns 2 of 8 experts in each of 2 blocks.
      EXPECT_EQ(info.mapped_bytes, 2 * 2 * slice_bytes);
    }
    const WeightResidency r = mapped.sparse->Residency();
    EXPECT_EQ(r.mapped_bytes, info.mapped_bytes);
    EXPECT_EQ(r.part_resident_bytes.size(), 2u * 2u);
  }
}

TEST_F(WeightCacheTest, EachShardOfAVersionHasItsOwnFile) {
  Checkpoint c;
  c.sparse = RandomDsm({.d = 8, .o = 1, .experts = 8, .active_units = 16}, 82);
  const std::string dir = Publish(c);
  const LoadOptions o = Mapped(Precision::kFp32);
  ASSERT_OK_AND_ASSIGN(LoadedModel whole, LoadCheckpoint(dir, o));
  ASSERT_OK_AND_ASSIGN(LoadedModel first, LoadCheckpoint(dir, ShardOf(o, 0, 2)));
  ASSERT_OK_AND_ASSIGN(LoadedModel second, LoadCheckpoint(dir, ShardOf(o, 1, 2)));
  ASSERT_OK_AND_ASSIGN(LoadedModel other_split, LoadCheckpoint(dir, ShardOf(o, 0, 4)));
  std::set<std::string> paths;
  for (const LoadedModel* m : {&whole, &first, &second, &other_split}) {
    ASSERT_NE(m->weight_cache, nullptr);
    EXPECT_EQ(m->weight_cache_event, "built");
    EXPECT_EQ(fs::path(m->weight_cache->path()).parent_path(), fs::path(o.weight_cache_dir));
    paths.insert(m->weight_cache->path());
  }
  EXPECT_EQ(paths.size(), 4u) << "the whole model, shards 0/2 and 1/2, and shard 0/4";
  // The whole model's key is what it was before shards were mapped (its
  // files stay valid); a shard's names the shard.
  const std::string whole_key = WeightCacheKey("a", "b", Precision::kFp32, true);
  EXPECT_EQ(whole_key, WeightCacheKey("a", "b", Precision::kFp32, true, ""));
  EXPECT_EQ(whole_key.find("shard"), std::string::npos) << whole_key;
  EXPECT_NE(WeightCacheKey("a", "", Precision::kFp32, false, "1/2").find(R"("shard":"1/2")"),
            std::string::npos);
  // Each maps its own file again.
  ASSERT_OK_AND_ASSIGN(LoadedModel again, LoadCheckpoint(dir, ShardOf(o, 1, 2)));
  EXPECT_EQ(again.weight_cache_event, "mapped");
  EXPECT_EQ(again.weight_cache->path(), second.weight_cache->path());
}

TEST_F(WeightCacheTest, ADamagedShardFileIsRebuilt) {
  Checkpoint c;
  c.sparse = RandomDsm({.d = 8, .o = 2, .blocks = 2, .experts = 8, .active_units = 16}, 83);
  const std::string dir = Publish(c);
  ASSERT_OK_AND_ASSIGN(LoadedModel whole, LoadCheckpoint(dir));
  ASSERT_OK_AND_ASSIGN(LoadedModel copied, LoadCheckpoint(dir, ShardOf({}, 1, 2)));
  const LoadOptions o = ShardOf(Mapped(Precision::kFp32), 1, 2);
  std::string path;
  {
    ASSERT_OK_AND_ASSIGN(LoadedModel built, LoadCheckpoint(dir, o));
    path = built.weight_cache->path();
  }
  // A part's bytes changed: its sum fails at load, and the file is rebuilt.
  CorruptPart(path, "sparse/top", 5);
  ASSERT_OK_AND_ASSIGN(LoadedModel rebuilt, LoadCheckpoint(dir, o));
  EXPECT_NE(rebuilt.weight_cache_event.find("rebuilt: "), std::string::npos)
      << rebuilt.weight_cache_event;
  EXPECT_NE(rebuilt.weight_cache_event.find("part 5 of array 'sparse/top'"), std::string::npos)
      << rebuilt.weight_cache_event;
  EXPECT_EQ(rebuilt.weight_cache->path(), path);
  ExpectSameShardAnswers(*whole.sparse, copied, rebuilt, 8);
  // A truncated one too.
  rebuilt = {};
  ::chmod(path.c_str(), 0644);
  ASSERT_EQ(::truncate(path.c_str(), 1000), 0);
  ASSERT_OK_AND_ASSIGN(LoadedModel again, LoadCheckpoint(dir, o));
  EXPECT_NE(again.weight_cache_event.find("rebuilt: "), std::string::npos)
      << again.weight_cache_event;
  ExpectSameShardAnswers(*whole.sparse, copied, again, 8);
}

// A shard builds its file from its own ranges, each checked against its
// part sum, never the whole file: a corrupt expert fails only the shard
// that owns it, and that shard writes no file.
TEST_F(WeightCacheTest, AShardFileIsBuiltFromTheShardsRangesOnly) {
  Checkpoint c;
  c.sparse = RandomDsm({.d = 8, .o = 2, .blocks = 1, .experts = 8, .active_units = 4}, 84);
  const std::string dir = Publish(c);
  // top.weight is [o, t]: expert 7's columns are the last 4 of each row;
  // the file's last tensor bytes are top.weight's unless top.bias follows.
  const std::string model = dir + "/" + kModelFile;
  std::ifstream in(model, std::ios::binary);
  uint64_t header_len = 0;
  in.read(reinterpret_cast<char*>(&header_len), 8);
  std::string header(header_len, '\0');
  in.read(header.data(), header_len);
  in.close();
  const size_t name_at = header.find("\"top.weight\"");
  ASSERT_NE(name_at, std::string::npos);
  const size_t offsets_at = header.find("\"data_offsets\":[", name_at);
  ASSERT_NE(offsets_at, std::string::npos);
  const uint64_t begin = std::stoull(header.substr(offsets_at + 16));
  // Row 1, column 28 (expert 7's first), at F32.
  const uint64_t at = 8 + header_len + begin + (1 * 32 + 28) * 4;
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::add);
  ::chmod(model.c_str(), 0644);
  std::fstream f(model, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(at);
  char byte = 0;
  f.read(&byte, 1);
  byte ^= 0x5a;
  f.seekp(at);
  f.write(&byte, 1);
  f.close();
  for (int i = 0; i < 3; ++i) {
    SCOPED_TRACE(absl::StrCat("shard ", i));
    ASSERT_OK_AND_ASSIGN(LoadedModel shard,
                         LoadCheckpoint(dir, ShardOf(Mapped(Precision::kFp32), i, 4)));
    EXPECT_EQ(shard.weight_cache_event, "built");
  }
  const absl::Status bad = LoadCheckpoint(dir, ShardOf(Mapped(Precision::kFp32), 3, 4)).status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument) << bad;
  EXPECT_NE(bad.message().find("tensor 'top.weight' part 7 has SHA-256"), std::string::npos)
      << bad;
  int files = 0;
  for (const auto& e : fs::recursive_directory_iterator(root_ / "cache")) {
    files += e.is_regular_file() && e.path().extension() == ".weights";
  }
  EXPECT_EQ(files, 3) << "shards 0, 1 and 2; none for shard 3";
}

// An LSH table's shards are copied in (their kind maps no shard weights),
// and a topk DSM is refused as a shard whether mapped or not.
TEST_F(WeightCacheTest, LshShardsAreCopiedInAndTopkIsNeverSharded) {
  Checkpoint lsh;
  lsh.sparse = RandomLshTable({}, 85);
  const std::string lsh_dir = Publish(lsh, "lsh");
  ASSERT_OK_AND_ASSIGN(LoadedModel copied,
                       LoadCheckpoint(lsh_dir, ShardOf(Mapped(Precision::kFp32), 0, 2)));
  EXPECT_EQ(copied.weight_cache, nullptr);
  EXPECT_EQ(copied.sparse->info().mapped_bytes, 0);
  EXPECT_TRUE(copied.sparse->info().needs_given_route);
  EXPECT_EQ(CacheFile(), "");

  Checkpoint topk;
  topk.sparse = RandomDsm({.d = 8, .o = 1, .experts = 0, .active_units = 8,
                           .router = RouterKind::kTopk, .topk_block_units = 32},
                          86);
  const std::string topk_dir = Publish(topk, "topk");
  const absl::Status s = LoadCheckpoint(topk_dir, ShardOf(Mapped(Precision::kFp32), 0, 2)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("cannot be sharded"), std::string::npos) << s;
  EXPECT_EQ(CacheFile(), "");
}

// The skeleton and a group of a shard's units are read only of a kind
// whose shards are mapped: another kind's decoder would read them as
// something else.
TEST_F(WeightCacheTest, ShardSkeletonsAndGroupsAreRefusedForKindsThatCopyShardsIn) {
  Checkpoint lsh;
  lsh.sparse = RandomLshTable({}, 87);
  const std::string dir = Publish(lsh, "lsh");
  LoadOptions skeleton;
  skeleton.part = {.role = ModelPart::Role::kShardSkeleton, .shard = {.index = 0, .count = 2}};
  EXPECT_EQ(ReadCheckpoint(dir, skeleton).status().code(), absl::StatusCode::kFailedPrecondition);
  LoadOptions group = ShardOf({}, 0, 2);
  group.part.units = UnitRange{0, 1};
  EXPECT_EQ(ReadCheckpoint(dir, group).status().code(), absl::StatusCode::kFailedPrecondition);

  Checkpoint c;
  c.sparse = RandomDsm({.d = 8, .o = 1, .experts = 8, .active_units = 16}, 88);
  const std::string dsm = Publish(c, "dsm");
  // A group outside the shard's experts [4, 8) is refused.
  LoadOptions outside = ShardOf({}, 1, 2);
  outside.part.units = UnitRange{3, 5};
  const absl::Status s = ReadCheckpoint(dsm, outside).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("experts [3, 5) are not a non-empty part of the experts [4, 8)"),
            std::string::npos)
      << s;
  outside.part.units = UnitRange{5, 7};
  ASSERT_OK_AND_ASSIGN(Checkpoint inside, ReadCheckpoint(dsm, outside));
  const auto& w = std::get<DsmWeights>(inside.sparse);
  EXPECT_EQ(w.first_expert, 5);
  EXPECT_EQ(w.num_experts, 2);
  EXPECT_EQ(w.total_experts, 8);
  // The skeleton: the shard's dimensions, none of its tensors.
  skeleton.part.shard = {.index = 1, .count = 2};
  ASSERT_OK_AND_ASSIGN(Checkpoint bones, ReadCheckpoint(dsm, skeleton));
  const auto& b = std::get<DsmWeights>(bones.sparse);
  EXPECT_EQ(b.first_expert, 4);
  EXPECT_EQ(b.num_experts, 4);
  EXPECT_EQ(b.network.width, 4 * 16);
  EXPECT_TRUE(b.network.bottom_weight.empty());
  EXPECT_TRUE(b.network.top_weight.empty());
  EXPECT_EQ(b.network.top_bias, std::vector<float>(1, 0.0f)) << "a0 is the front's";
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
