// Sharded reads (docs/deploy.md, "Sharded models"; docs/checkpoint-format.md,
// format_version 2): a shard reads only its experts or tables, checked
// against the manifest's per-part sums, and a front reads the router. The
// front's routes and the shards' partial outputs must add up to what the
// whole model answers: identical routes and FLOPs, outputs within float
// rounding.
#include <filesystem>
#include <fstream>

#include "engine/expert_router.h"
#include "engine/table_hasher.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model_store/checkpoint.h"
#include "nlohmann/json.hpp"
#include "tests/testing/matchers.h"
#include "tests/testing/random_models.h"
#include "tests/testing/temp_dir.h"

namespace sparse {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using testing::RelativelyNear;

LoadOptions Part(ModelPart::Role role, int index, int count,
                 Precision precision = Precision::kFp32) {
  LoadOptions options;
  options.part = {.role = role, .shard = {.index = index, .count = count}};
  options.precision = precision;
  return options;
}

// The whole model's answer on `x`, and the sharded one: the front routes,
// each of `count` shards computes its part, the front adds them and a0.
struct DsmAnswers {
  std::vector<float> whole, sharded;
  std::vector<int32_t> whole_experts, front_experts;
  int64_t whole_flops = 0, sharded_flops = 0;
  std::vector<uint64_t> shard_bytes_read;
  std::vector<int64_t> shard_resident;
  int64_t whole_resident = 0, router_resident = 0;
};

DsmAnswers AnswerDsm(const std::string& dir, int count, const std::vector<float>& x, int64_t rows,
                     Precision precision = Precision::kFp32) {
  DsmAnswers a;
  absl::StatusOr<LoadedModel> whole = LoadCheckpoint(dir, Part(ModelPart::Role::kWhole, 0, 1, precision));
  EXPECT_OK(whole.status());
  const int64_t o = whole->sparse->info().output_dim;
  a.whole.resize(rows * o);
  Route route;
  PredictStats stats;
  EXPECT_OK(whole->sparse->Predict(x, rows, absl::MakeSpan(a.whole), &stats, &route));
  a.whole_experts = route.expert_ids;
  a.whole_flops = stats.flops;
  a.whole_resident = whole->sparse->info().resident_bytes;

  absl::StatusOr<Checkpoint> front = ReadCheckpoint(dir, Part(ModelPart::Role::kFront, 0, count));
  EXPECT_OK(front.status());
  const DsmWeights& routing = std::get<DsmWeights>(front->sparse);
  EXPECT_TRUE(routing.network.bottom_weight.empty()) << "the front reads no expert weights";
  absl::StatusOr<ExpertRouter> router = ExpertRouter::Create(routing);
  EXPECT_OK(router.status());
  const int64_t L = router->blocks();
  a.router_resident = router->resident_bytes();
  a.front_experts.resize(rows * L);
  PredictStats front_stats;
  for (int64_t r0 = 0; r0 < rows; r0 += 128) {
    const int64_t n = std::min<int64_t>(128, rows - r0);
    EXPECT_OK(router->Route(x.data() + r0 * routing.network.input_dim, n,
                            a.front_experts.data() + r0 * L, &front_stats));
  }
  a.sharded_flops = front_stats.flops;
  a.sharded.assign(rows * o, 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < o; ++j) a.sharded[r * o + j] = routing.network.top_bias[j];
  }
  for (int i = 0; i < count; ++i) {
    absl::StatusOr<Checkpoint> read = ReadCheckpoint(dir, Part(ModelPart::Role::kShard, i, count));
    EXPECT_OK(read.status());
    a.shard_bytes_read.push_back(read->bytes_read);
    absl::StatusOr<LoadedModel> shard = LoadCheckpoint(dir, Part(ModelPart::Role::kShard, i, count, precision));
    EXPECT_OK(shard.status());
    EXPECT_EQ(shard->dense, nullptr) << "a shard holds no dense twin";
    a.shard_resident.push_back(shard->sparse->info().resident_bytes);
    EXPECT_TRUE(shard->sparse->info().needs_given_route);
    std::vector<float> partial(rows * o);
    PredictStats shard_stats;
    Route given{.experts_per_row = L, .expert_ids = a.front_experts};
    EXPECT_OK(shard->sparse->Predict(x, rows, absl::MakeSpan(partial), &shard_stats, nullptr,
                                     {.given = &given}));
    a.sharded_flops += shard_stats.flops;
    for (size_t j = 0; j < partial.size(); ++j) a.sharded[j] += partial[j];
    // A shard refuses to predict on its own, and a route of another shape.
    std::vector<float> y(rows * o);
    PredictStats ignored;
    EXPECT_EQ(shard->sparse->Predict(x, rows, absl::MakeSpan(y), &ignored, nullptr).code(),
              absl::StatusCode::kFailedPrecondition);
    Route short_route{.experts_per_row = L, .expert_ids = {0}};
    EXPECT_THAT(shard->sparse->Predict(x, rows, absl::MakeSpan(y), &ignored, nullptr,
                                       {.given = &short_route}).message(),
                HasSubstr(absl::StrCat("expected ", L, " expert ids per row")));
    Route bad_id{.experts_per_row = L, .expert_ids = a.front_experts};
    bad_id.expert_ids[5] = static_cast<int32_t>(routing.num_experts);
    EXPECT_THAT(shard->sparse->Predict(x, rows, absl::MakeSpan(y), &ignored, nullptr,
                                       {.given = &bad_id}).message(),
                HasSubstr("is outside [0, "));
    // The front's chunks must cover the call's rows, 1 to 128 each.
    for (const auto& [chunks, message] : std::vector<std::pair<std::vector<int32_t>, std::string>>{
             {{128, 128, 43}, "the chunks hold 299 rows, the call "},
             {{128, 0, 172}, "a chunk of 0 rows"},
             {{129, 128, 43}, "a chunk of 129 rows"}}) {
      Route bad_chunks{.experts_per_row = L, .expert_ids = a.front_experts, .chunk_rows = chunks};
      EXPECT_THAT(shard->sparse->Predict(x, rows, absl::MakeSpan(y), &ignored, nullptr,
                                         {.given = &bad_chunks}).message(),
                  HasSubstr(message));
    }
  }
  return a;
}

class ShardCheckpointTest : public ::testing::Test {
 protected:
  testing::TempDir dir_{"shard_checkpoint_test"};

  std::string Write(const Checkpoint& c, const std::string& name = "m") {
    EXPECT_OK(WriteCheckpoint((dir_ / name).string(), 1, c));
    return (dir_ / name / "1").string();
  }
};

TEST_F(ShardCheckpointTest, DsmShardsAndFrontAddUpToTheWholeModel) {
  for (RouterKind router : {RouterKind::kLsh, RouterKind::kHash, RouterKind::kKmeans}) {
    SCOPED_TRACE(RouterKindName(router));
    Checkpoint c;
    c.sparse = testing::RandomDsm(
        {.d = 16, .o = 3, .blocks = 2, .experts = 16, .active_units = 8, .router = router}, 7);
    c.dense = testing::RandomDense(16, 64, 3, Activation::kRelu, 8);
    const std::string dir = Write(c, std::string(RouterKindName(router)));
    const int64_t rows = 300;
    const std::vector<float> x = testing::RandomInputs(rows, 16, 9);
    for (int count : {1, 3, 4, 16}) {
      SCOPED_TRACE(absl::StrCat(count, " shards"));
      const DsmAnswers a = AnswerDsm(dir, count, x, rows);
      EXPECT_EQ(a.front_experts, a.whole_experts);
      EXPECT_EQ(a.sharded_flops, a.whole_flops);
      EXPECT_TRUE(RelativelyNear(a.sharded, a.whole, 1e-5));
      if (count == 4) {
        const uint64_t file = fs::file_size(fs::path(dir) / kModelFile);
        int64_t resident = 0;
        for (int i = 0; i < count; ++i) {
          // Experts are most of the file: a quarter of it, plus the header
          // and the small tensors every shard reads.
          EXPECT_LT(a.shard_bytes_read[i], file * 0.3) << "shard " << i;
          resident += a.shard_resident[i];
        }
        // Together the shards hold the experts once: the whole model less
        // its router (and each its own zero a0 of 3 floats).
        EXPECT_EQ(resident, a.whole_resident - a.router_resident + (count - 1) * 4 * 3);
      }
    }
  }
}

TEST_F(ShardCheckpointTest, ShardsOfAReducedPrecisionCheckpointAddUpAtThatPrecision) {
  for (Precision stored : {Precision::kBf16, Precision::kInt8}) {
    SCOPED_TRACE(PrecisionName(stored));
    Checkpoint c;
    c.sparse = testing::RandomDsm({.d = 64, .o = 64, .blocks = 1, .experts = 8, .active_units = 64,
                                   .router = RouterKind::kLsh}, 11);
    c.tensor_precision = stored;
    const std::string dir = Write(c, std::string(PrecisionName(stored)));
    const int64_t rows = 64;
    const std::vector<float> x = testing::RandomInputs(rows, 64, 12);
    const DsmAnswers a = AnswerDsm(dir, 4, x, rows, stored);
    EXPECT_EQ(a.front_experts, a.whole_experts);
    EXPECT_EQ(a.sharded_flops, a.whole_flops);
    EXPECT_TRUE(RelativelyNear(a.sharded, a.whole, 1e-5));
  }
}

TEST_F(ShardCheckpointTest, LshShardsAndFrontAddUpToTheWholeModel) {
  for (int64_t degree : {0, 1}) {
    SCOPED_TRACE(absl::StrCat("degree ", degree));
    Checkpoint c;
    c.sparse = testing::RandomLshTable({.d = 8, .o = 2, .s = 10, .m = 6, .degree = degree}, 21);
    const std::string dir = Write(c, absl::StrCat("lsh", degree));
    const int64_t rows = 300;
    const std::vector<float> x = testing::RandomInputs(rows, 8, 22);
    absl::StatusOr<LoadedModel> whole = LoadCheckpoint(dir);
    ASSERT_OK(whole.status());
    std::vector<float> expected(rows * 2);
    Route route;
    PredictStats stats;
    ASSERT_OK(whole->sparse->Predict(x, rows, absl::MakeSpan(expected), &stats, &route));
    for (int count : {1, 4, 10}) {
      SCOPED_TRACE(absl::StrCat(count, " shards"));
      absl::StatusOr<Checkpoint> front = ReadCheckpoint(dir, Part(ModelPart::Role::kFront, 0, count));
      ASSERT_OK(front.status());
      EXPECT_TRUE(std::get<LshTableWeights>(front->sparse).tables.empty());
      absl::StatusOr<TableHasher> hasher = TableHasher::Create(std::get<LshTableWeights>(front->sparse));
      ASSERT_OK(hasher.status());
      const int64_t s = hasher->tables();
      std::vector<uint64_t> keys(rows * s);
      PredictStats front_stats;
      for (int64_t r0 = 0; r0 < rows; r0 += 128) {
        const int64_t n = std::min<int64_t>(128, rows - r0);
        ASSERT_OK(hasher->Keys(x.data() + r0 * 8, n, keys.data() + r0 * s, &front_stats));
      }
      EXPECT_EQ(keys, route.bucket_keys);
      std::vector<float> sum(rows * 2, 0.0f);
      std::vector<uint8_t> missed(rows * s);
      int64_t flops = front_stats.flops;
      for (int i = 0; i < count; ++i) {
        absl::StatusOr<LoadedModel> shard = LoadCheckpoint(dir, Part(ModelPart::Role::kShard, i, count));
        ASSERT_OK(shard.status());
        const UnitRange owned = OwnedUnits(s, i, count);
        Route given{.keys_per_row = owned.size()};
        for (int64_t r = 0; r < rows; ++r) {
          given.bucket_keys.insert(given.bucket_keys.end(), keys.begin() + r * s + owned.begin,
                                   keys.begin() + r * s + owned.end);
        }
        std::vector<float> partial(rows * 2);
        PredictStats shard_stats;
        Route shard_route;
        ASSERT_OK(shard->sparse->Predict(x, rows, absl::MakeSpan(partial), &shard_stats,
                                         &shard_route, {.given = &given}));
        EXPECT_EQ(shard_route.bucket_keys, given.bucket_keys);
        const std::vector<uint8_t>& shard_missed = shard_route.bucket_missed;
        flops += shard_stats.flops;
        for (size_t j = 0; j < partial.size(); ++j) sum[j] += partial[j];
        for (int64_t r = 0; r < rows; ++r) {
          std::copy(shard_missed.begin() + r * owned.size(),
                    shard_missed.begin() + (r + 1) * owned.size(), missed.begin() + r * s + owned.begin);
        }
      }
      EXPECT_EQ(missed, route.bucket_missed);
      // Shards hash nothing: the front's projections plus their buckets.
      EXPECT_EQ(flops, stats.flops);
      EXPECT_TRUE(RelativelyNear(sum, expected, 1e-5));
    }
  }
}

// Flips one byte of the data section of model.safetensors at `tensor`'s
// byte `at` (relative to the tensor), leaving the manifest as it was.
void Corrupt(const std::string& dir, const std::string& tensor, uint64_t at) {
  const std::string path = dir + "/" + kModelFile;
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  uint64_t header_len = 0;
  f.read(reinterpret_cast<char*>(&header_len), 8);
  std::string header(header_len, '\0');
  f.read(header.data(), header_len);
  const auto json = nlohmann::json::parse(header);
  const uint64_t offset = 8 + header_len + json[tensor]["data_offsets"][0].get<uint64_t>() + at;
  f.seekg(offset);
  char byte = 0;
  f.read(&byte, 1);
  byte ^= 0x5a;
  f.seekp(offset);
  f.write(&byte, 1);
}

TEST_F(ShardCheckpointTest, ACorruptPartFailsOnlyTheShardThatReadsIt) {
  Checkpoint c;
  c.sparse = testing::RandomDsm({.d = 8, .o = 2, .blocks = 1, .experts = 8, .active_units = 4}, 31);
  const std::string dir = Write(c);
  // top.weight is [o, t]: expert 7's columns are the last 4 of each row.
  // Corrupt expert 7's column in row 1: byte (1 * 32 + 28) * 4.
  Corrupt(dir, "top.weight", (1 * 32 + 28) * 4);
  for (int i = 0; i < 3; ++i) {
    SCOPED_TRACE(absl::StrCat("shard ", i));
    EXPECT_OK(LoadCheckpoint(dir, Part(ModelPart::Role::kShard, i, 4)).status());
  }
  const absl::Status bad = LoadCheckpoint(dir, Part(ModelPart::Role::kShard, 3, 4)).status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.message(), HasSubstr("tensor 'top.weight' part 7 has SHA-256"));
  EXPECT_OK(ReadCheckpoint(dir, Part(ModelPart::Role::kFront, 0, 4)).status());
  // The whole file's sum catches it too.
  EXPECT_THAT(LoadCheckpoint(dir).status().message(), HasSubstr("does not match the manifest"));
}

TEST_F(ShardCheckpointTest, AChangedHeaderFailsEveryPart) {
  Checkpoint c;
  c.sparse = testing::RandomDsm({.d = 8, .o = 2, .blocks = 1, .experts = 8, .active_units = 4}, 32);
  const std::string dir = Write(c);
  std::fstream f(dir + "/" + kModelFile, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(12);  // inside the JSON header
  f.write(" ", 1);
  f.close();
  for (ModelPart::Role role : {ModelPart::Role::kShard, ModelPart::Role::kFront}) {
    EXPECT_THAT(ReadCheckpoint(dir, Part(role, 0, 2)).status().message(),
                HasSubstr("header SHA-256"));
  }
}

TEST_F(ShardCheckpointTest, AVersionOneManifestIsReadWholeAndSlicedTheSame) {
  Checkpoint c;
  c.sparse = testing::RandomDsm({.d = 8, .o = 2, .blocks = 2, .experts = 8, .active_units = 4}, 33);
  const std::string dir = Write(c);
  // Rewrite the manifest as format_version 1 (sizes and file sums only).
  std::ifstream in(dir + "/" + kManifestFile);
  nlohmann::json manifest = nlohmann::json::parse(in);
  in.close();
  EXPECT_EQ(manifest["format_version"], 2);
  manifest["format_version"] = 1;
  for (auto& [name, entry] : manifest["files"].items()) {
    entry.erase("header_bytes");
    entry.erase("header_sha256");
    entry.erase("tensors");
  }
  std::ofstream(dir + "/" + kManifestFile) << manifest.dump(2);
  const std::vector<float> x = testing::RandomInputs(100, 8, 34);
  const DsmAnswers a = AnswerDsm(dir, 4, x, 100);
  EXPECT_EQ(a.front_experts, a.whole_experts);
  EXPECT_TRUE(RelativelyNear(a.sharded, a.whole, 1e-5));
  for (uint64_t read : a.shard_bytes_read) {
    EXPECT_EQ(read, fs::file_size(fs::path(dir) / kModelFile)) << "version 1 is read whole";
  }
}

TEST_F(ShardCheckpointTest, WhatCannotBeShardedIsRefusedClearly) {
  Checkpoint topk;
  topk.sparse = testing::RandomDsm({.d = 8, .o = 1, .blocks = 1, .experts = 0, .active_units = 4,
                                    .router = RouterKind::kTopk, .topk_block_units = 32}, 41);
  const std::string dir = Write(topk, "topk");
  const absl::Status status = LoadCheckpoint(dir, Part(ModelPart::Role::kShard, 0, 2)).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("a topk DSM cannot be sharded"));

  Checkpoint few;
  few.sparse = testing::RandomDsm({.d = 8, .o = 1, .blocks = 1, .experts = 2, .active_units = 4}, 42);
  EXPECT_THAT(LoadCheckpoint(Write(few, "few"), Part(ModelPart::Role::kShard, 0, 3)).status().message(),
              HasSubstr("2 experts per block cannot be split across 3 shards"));
}

TEST_F(ShardCheckpointTest, ACostOnlyDenseEndpointIsLeftOutWhenAskedOrWhenSharded) {
  Checkpoint c;
  c.sparse = testing::RandomDsm({.d = 8, .o = 1, .blocks = 1, .experts = 8, .active_units = 4}, 43);
  const std::string dir = Write(c);
  absl::StatusOr<LoadedModel> with = LoadCheckpoint(dir);
  ASSERT_OK(with.status());
  EXPECT_NE(with->dense, nullptr);
  EXPECT_TRUE(with->dense_cost_only);
  LoadOptions none;
  none.cost_only_dense = false;
  absl::StatusOr<LoadedModel> without = LoadCheckpoint(dir, none);
  ASSERT_OK(without.status());
  EXPECT_EQ(without->dense, nullptr);
  // A shard has no dense endpoint, and its budget does not count one: a
  // budget that fits the shard's part but not a cost-only twin's workspace
  // (8 threads x 128 rows x 32 units) still loads.
  LoadOptions shard = Part(ModelPart::Role::kShard, 0, 2);
  shard.threads = 8;
  shard.max_bytes = 128 << 10;
  EXPECT_OK(LoadCheckpoint(dir, shard).status());
  LoadOptions whole;
  whole.threads = 8;
  whole.max_bytes = 128 << 10;
  EXPECT_EQ(LoadCheckpoint(dir, whole).status().code(), absl::StatusCode::kResourceExhausted);
}

// Rewrites one tensor's entry of the manifest's model.safetensors tensors.
void SetSums(const std::string& dir, const std::string& tensor, const nlohmann::json& entry) {
  std::ifstream in(dir + "/" + kManifestFile);
  nlohmann::json manifest = nlohmann::json::parse(in);
  in.close();
  manifest["files"][kModelFile]["tensors"][tensor] = entry;
  std::ofstream(dir + "/" + kManifestFile) << manifest.dump();
}

TEST_F(ShardCheckpointTest, HostileSumsAreRefusedQuickly) {
  // An empty table: its keys tensor holds no bytes, and its one sum is of nothing.
  Checkpoint c;
  LshTableWeights lsh = testing::RandomLshTable({.d = 4, .o = 1, .s = 2, .m = 3}, 51);
  lsh.tables[0].keys.clear();
  lsh.tables[0].values.clear();
  c.sparse = lsh;
  const std::string dir = Write(c, "empty_table");
  ASSERT_OK(LoadCheckpoint(dir, Part(ModelPart::Role::kShard, 0, 2)).status());
  const std::string empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  SetSums(dir, "table.0.keys", {{"axis", 0}, {"sha256", {empty, empty}}});
  EXPECT_THAT(LoadCheckpoint(dir, Part(ModelPart::Role::kShard, 0, 2)).status().message(),
              HasSubstr("holds no bytes"));
  // More parts than units, on a DSM's a0 of 1 value.
  Checkpoint d;
  d.sparse = testing::RandomDsm({.d = 8, .o = 1, .blocks = 1, .experts = 8, .active_units = 4}, 52);
  const std::string dsm = Write(d, "parts");
  SetSums(dsm, "top.bias", {{"axis", 0}, {"sha256", {empty, empty, empty}}});
  EXPECT_THAT(ReadCheckpoint(dsm, Part(ModelPart::Role::kFront, 0, 2)).status().message(),
              HasSubstr("3 sha256 parts, which do not divide its 1 units"));
}

TEST(ShardingTest, EveryUnitHasExactlyOneOwnerAndRangesAreBalanced) {
  for (int64_t units = 1; units <= 40; ++units) {
    for (int count = 1; count <= units; ++count) {
      int64_t next = 0;
      for (int i = 0; i < count; ++i) {
        const UnitRange r = OwnedUnits(units, i, count);
        EXPECT_EQ(r.begin, next);
        EXPECT_GE(r.size(), units / count);
        EXPECT_LE(r.size(), units / count + 1);
        for (int64_t u = r.begin; u < r.end; ++u) EXPECT_EQ(ShardOfUnit(u, units, count), i);
        next = r.end;
      }
      EXPECT_EQ(next, units);
    }
  }
}

TEST(ShardingTest, ShardSpecsParseAsIOfN) {
  absl::StatusOr<ShardSpec> spec = ParseShardSpec("2/4");
  ASSERT_OK(spec.status());
  EXPECT_EQ(spec->index, 2);
  EXPECT_EQ(spec->count, 4);
  EXPECT_EQ(spec->ToString(), "2/4");
  absl::StatusOr<ShardSpec> pod = ParseShardSpec("sparse-shard-b-3/4");
  ASSERT_OK(pod.status());
  EXPECT_EQ(pod->index, 3);
  EXPECT_EQ(pod->count, 4);
  for (const char* bad : {"4/4", "-1/4", "1/0", "1", "a/b", "1/4/2", "0/5000", "shard-4/4",
                          "shard-/4", "/4"}) {
    EXPECT_THAT(ParseShardSpec(bad).status().message(), HasSubstr("'i/N'")) << bad;
  }
}

}  // namespace
}  // namespace sparse
