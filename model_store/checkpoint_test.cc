#include "model_store/checkpoint.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>

#include "gtest/gtest.h"
#include "engine/dsm_model.h"
#include "engine/lsh_table_model.h"
#include "common/status_macros.h"
#include "model_store/file_util.h"
#include "nlohmann/json.hpp"
#include "tests/testing/matchers.h"
#include "tests/testing/random_models.h"

namespace sparse {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using ::sparse::testing::RandomDense;
using ::sparse::testing::RandomDsm;
using ::sparse::testing::RandomInputs;
using ::sparse::testing::RandomLshTable;

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const fs::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << s;
}

// Rewrites the manifest entry of `name` to match the file as it now is, so a
// test reaches the structural checks behind the checksum.
void ResealManifest(const fs::path& dir, const std::string& name) {
  Json manifest = Json::parse(ReadFile(dir / kManifestFile));
  const std::string bytes = ReadFile(dir / name);
  manifest["files"][name]["bytes"] = bytes.size();
  manifest["files"][name]["sha256"] =
      Sha256Hex({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
  WriteFile(dir / kManifestFile, manifest.dump());
}

// Splits a safetensors file into its JSON header and data section.
struct Split {
  Json header;
  std::string data;
};
Split SplitFile(const std::string& file) {
  uint64_t n = 0;
  std::memcpy(&n, file.data(), 8);
  return {Json::parse(file.substr(8, n)), file.substr(8 + n)};
}
std::string JoinFile(const std::string& header, const std::string& data) {
  const uint64_t n = header.size();
  return std::string(reinterpret_cast<const char*>(&n), 8) + header + data;
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("sparse_checkpoint_test_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  fs::path root_;
};

// Predictions of a loaded model on a fixed batch.
std::vector<float> PredictAll(const Model& model, const std::vector<float>& x, int64_t rows) {
  std::vector<float> y(rows * model.info().output_dim);
  PredictStats stats;
  EXPECT_OK(model.Predict(x, rows, absl::MakeSpan(y), &stats, nullptr));
  return y;
}

TEST_F(CheckpointTest, RoundTripGivesIdenticalPredictionsForEveryKind) {
  std::vector<Checkpoint> checkpoints;
  for (HashFamily family : {HashFamily::kHyperplane, HashFamily::kEuclidean}) {
    for (int64_t degree : {0, 1}) {
      Checkpoint c;
      c.sparse = RandomLshTable({.o = 2, .degree = degree, .family = family}, 3);
      c.dense = RandomDense(8, 64, 2, Activation::kRelu, 4);
      c.info["test_mse"] = "0.0123";
      checkpoints.push_back(std::move(c));
    }
  }
  for (RouterKind router : {RouterKind::kLsh, RouterKind::kHash, RouterKind::kKmeans, RouterKind::kTopk}) {
    Checkpoint c;
    c.sparse = RandomDsm({.o = 2, .blocks = 2, .router = router}, 5);
    checkpoints.push_back(std::move(c));
  }
  const std::vector<float> x = RandomInputs(37, 8, 99);
  for (size_t i = 0; i < checkpoints.size(); ++i) {
    const std::string model_dir = (root_ / ("m" + std::to_string(i))).string();
    ASSERT_OK(WriteCheckpoint(model_dir, 1, checkpoints[i]));
    absl::StatusOr<LoadedModel> loaded = LoadCheckpoint(model_dir + "/1");
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    absl::StatusOr<std::unique_ptr<Model>> direct =
        std::visit([](const auto& w) -> absl::StatusOr<std::unique_ptr<Model>> {
          if constexpr (std::is_same_v<std::decay_t<decltype(w)>, DsmWeights>) {
            ASSIGN_OR_RETURN(auto m, DsmModel::Create(w));
            return std::unique_ptr<Model>(std::move(m));
          } else {
            ASSIGN_OR_RETURN(auto m, LshTableModel::Create(w));
            return std::unique_ptr<Model>(std::move(m));
          }
        }, checkpoints[i].sparse);
    ASSERT_TRUE(direct.ok()) << direct.status();
    EXPECT_EQ(PredictAll(*loaded->sparse, x, 37), PredictAll(**direct, x, 37)) << "checkpoint " << i;
    EXPECT_EQ(loaded->info, checkpoints[i].info);
    ASSERT_NE(loaded->dense, nullptr);
    if (checkpoints[i].dense.has_value()) {
      EXPECT_FALSE(loaded->dense_cost_only);
      auto dense = DenseModel::Create(*checkpoints[i].dense);
      ASSERT_TRUE(dense.ok());
      EXPECT_EQ(PredictAll(*loaded->dense, x, 37), PredictAll(**dense, x, 37));
    } else {
      // A DSM without a twin: the dense endpoint runs its weights unmasked.
      EXPECT_TRUE(loaded->dense_cost_only);
      EXPECT_EQ(loaded->dense->info().flops_per_row,
                DenseFlopsPerRow(std::get<DsmWeights>(checkpoints[i].sparse).network));
    }
  }
}

TEST_F(CheckpointTest, ReadReturnsTheWeightsWritten) {
  Checkpoint c;
  LshTableWeights lsh = RandomLshTable({.family = HashFamily::kEuclidean}, 8);
  lsh.bucket_width = 0.123456789f;
  c.sparse = lsh;
  ASSERT_OK(WriteCheckpoint(root_.string(), 4, c));
  absl::StatusOr<Checkpoint> read = ReadCheckpoint((root_ / "4").string());
  ASSERT_TRUE(read.ok()) << read.status();
  const auto& got = std::get<LshTableWeights>(read->sparse);
  EXPECT_EQ(got.bucket_width, lsh.bucket_width);  // exact float round trip
  EXPECT_EQ(got.projection, lsh.projection);
  EXPECT_EQ(got.tables[2].keys, lsh.tables[2].keys);
  EXPECT_EQ(got.tables[2].values, lsh.tables[2].values);
  EXPECT_FALSE(read->dense.has_value());
}

// BF16 and I8 matrices: smaller files, read back as float32 within the
// rounding of their format (RoundToStorage gives the same values), and a
// version served at its own precision answers as the float32 weights
// rounded that way do (quantizing int8 values with scales max|w| / 127
// again gives back the same values).
TEST_F(CheckpointTest, Bf16AndI8MatricesRoundTripAndServeAsTheFloatVersionDoes) {
  Checkpoint c;
  c.sparse = RandomDsm({.d = 64, .o = 1, .experts = 4, .active_units = 64}, 5);
  c.dense = RandomDense(64, 256, 1, Activation::kRelu, 6);
  ASSERT_OK(WriteCheckpoint(root_.string(), 1, c));
  const DenseWeights& net = std::get<DsmWeights>(c.sparse).network;
  const auto file_bytes = [this](int version) {
    return fs::file_size(root_ / std::to_string(version) / kModelFile) +
           fs::file_size(root_ / std::to_string(version) / kDenseFile);
  };
  int version = 1;
  for (Precision precision : {Precision::kBf16, Precision::kInt8}) {
    ++version;
    c.tensor_precision = precision;
    ASSERT_OK(WriteCheckpoint(root_.string(), version, c));
    const std::string dir = (root_ / std::to_string(version)).string();
    ASSERT_OK_AND_ASSIGN(Checkpoint read, ReadCheckpoint(dir));
    EXPECT_EQ(read.tensor_precision, precision);
    const DenseWeights& got = std::get<DsmWeights>(read.sparse).network;
    // B is [256, 64]: one scale per row of 64 at INT8.
    for (int64_t r = 0; r < net.width; ++r) {
      float max_abs = 0;
      for (int64_t j = 0; j < net.input_dim; ++j) {
        max_abs = std::max(max_abs, std::fabs(net.bottom_weight[r * net.input_dim + j]));
      }
      for (int64_t j = 0; j < net.input_dim; ++j) {
        const int64_t i = r * net.input_dim + j;
        const float want = net.bottom_weight[i];
        if (precision == Precision::kBf16) {
          ASSERT_EQ(got.bottom_weight[i], Bf16ToFloat(FloatToBf16(want))) << i;
        } else {
          ASSERT_LE(std::fabs(got.bottom_weight[i] - want), max_abs / 127 / 2 * 1.0001f) << i;
        }
      }
    }
    EXPECT_EQ(got.bottom_bias, net.bottom_bias);  // biases stay float32
    DenseWeights rounded = net;
    RoundToStorage(precision, &rounded);
    EXPECT_EQ(got.bottom_weight, rounded.bottom_weight);
    EXPECT_EQ(got.top_weight, rounded.top_weight);
    EXPECT_LT(file_bytes(version), file_bytes(1) * (precision == Precision::kBf16 ? 0.55 : 0.3));
    // Served at its own precision, it answers as the float32 version does.
    LoadOptions at;
    at.precision = precision;
    ASSERT_OK_AND_ASSIGN(LoadedModel stored, LoadCheckpoint(dir, at));
    Checkpoint as_float = c;
    as_float.tensor_precision = Precision::kFp32;
    RoundToStorage(precision, &std::get<DsmWeights>(as_float.sparse).network);
    RoundToStorage(precision, &*as_float.dense);
    ASSERT_OK(WriteCheckpoint(root_.string(), 10 + version, as_float));
    ASSERT_OK_AND_ASSIGN(LoadedModel from_float,
                         LoadCheckpoint((root_ / std::to_string(10 + version)).string(), at));
    const std::vector<float> x = RandomInputs(9, 64, 7);
    for (bool dense : {false, true}) {
      const Model& a = dense ? *stored.dense : *stored.sparse;
      const Model& b = dense ? *from_float.dense : *from_float.sparse;
      std::vector<float> ya(9), yb(9);
      PredictStats sa, sb;
      ASSERT_OK(a.Predict(x, 9, absl::MakeSpan(ya), &sa, nullptr));
      ASSERT_OK(b.Predict(x, 9, absl::MakeSpan(yb), &sb, nullptr));
      EXPECT_TRUE(testing::AllNear(ya, yb, 1e-6, 1e-6))
          << PrecisionName(precision) << (dense ? " dense" : " sparse");
    }
  }
  // An I8 matrix needs its scales, and they must be finite and >= 0.
  Checkpoint small;
  small.sparse = RandomDsm({.d = 8, .o = 1, .experts = 4, .active_units = 8}, 8);
  small.tensor_precision = Precision::kInt8;
  std::string file = SerializeSparse(small);
  std::map<std::string, std::string> files = {{kModelFile, file}};
  const size_t at = file.find("bottom.weight.scale");
  ASSERT_NE(at, std::string::npos);
  std::string renamed = file;
  renamed.replace(at, std::strlen("bottom.weight.scale"), "bottom.weight.scalf");
  const fs::path bad = root_ / "missing_scale";
  fs::create_directories(bad);
  std::ofstream(bad / kModelFile, std::ios::binary) << renamed;
  std::ofstream(bad / kManifestFile) << ManifestJson({{kModelFile, renamed}});
  const absl::Status missing = ReadCheckpoint(bad.string()).status();
  EXPECT_NE(missing.message().find("missing tensor 'bottom.weight.scale'"), std::string::npos)
      << missing;
}

TEST_F(CheckpointTest, ManyTablesRoundTrip) {
  // 5000 tables: a 15000-tensor header well inside the header limit.
  Checkpoint c;
  c.sparse = RandomLshTable({.d = 2, .s = 5000, .m = 2, .sample_rows = 16}, 4);
  ASSERT_OK(WriteCheckpoint(root_.string(), 1, c));
  absl::StatusOr<Checkpoint> read = ReadCheckpoint((root_ / "1").string());
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(std::get<LshTableWeights>(read->sparse).tables.size(), 5000u);
}

TEST_F(CheckpointTest, PublishingIsAtomicAndNeverOverwrites) {
  Checkpoint c;
  c.sparse = RandomDsm({}, 1);
  ASSERT_OK(WriteCheckpoint(root_.string(), 1, c));
  const std::string before = ReadFile(root_ / "1" / kModelFile);
  Checkpoint other;
  other.sparse = RandomDsm({}, 2);
  EXPECT_EQ(WriteCheckpoint(root_.string(), 1, other).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(ReadFile(root_ / "1" / kModelFile), before);
  // Invalid weights are refused before anything is written.
  Checkpoint bad;
  DsmWeights w = RandomDsm({}, 3);
  w.network.top_bias[0] = std::numeric_limits<float>::quiet_NaN();
  bad.sparse = w;
  EXPECT_EQ(WriteCheckpoint(root_.string(), 2, bad).code(), absl::StatusCode::kInvalidArgument);
  // Only the published version remains: no temporary directories left.
  std::vector<std::string> entries;
  for (const auto& e : fs::directory_iterator(root_)) entries.push_back(e.path().filename());
  EXPECT_EQ(entries, std::vector<std::string>{"1"});
  // The manifest is what makes a directory a version.
  fs::remove(root_ / "1" / kManifestFile);
  EXPECT_EQ(ReadCheckpoint((root_ / "1").string()).status().code(), absl::StatusCode::kNotFound);
}

// ---- Corrupt files ------------------------------------------------------------

struct CorruptCase {
  std::string name;
  bool dsm;  // corrupt a DSM checkpoint (else an LSH table with a dense twin)
  std::function<void(const fs::path& dir)> corrupt;
  std::string expected;  // substring of the error message
};

// Mutates the JSON header and/or data of `file` and reseals the manifest.
std::function<void(const fs::path&)> MutateTensors(
    const std::string& file, std::function<void(Json& header, std::string& data)> mutate) {
  return [file, mutate](const fs::path& dir) {
    Split s = SplitFile(ReadFile(dir / file));
    mutate(s.header, s.data);
    WriteFile(dir / file, JoinFile(s.header.dump(), s.data));
    ResealManifest(dir, file);
  };
}

std::function<void(const fs::path&)> ReplaceFile(const std::string& file,
                                                 std::function<std::string(std::string)> change,
                                                 bool reseal = true) {
  return [=](const fs::path& dir) {
    WriteFile(dir / file, change(ReadFile(dir / file)));
    if (reseal) ResealManifest(dir, file);
  };
}

int64_t Offset(const Json& header, const std::string& tensor, int i) {
  return header[tensor]["data_offsets"][i].get<int64_t>();
}

std::vector<CorruptCase> CorruptCases() {
  const std::string M = kModelFile;
  return {
      {"shorter_than_header_length", false,
       ReplaceFile(M, [](std::string s) { return s.substr(0, 5); }), "shorter than the 8-byte"},
      {"header_length_past_end", false,
       ReplaceFile(M, [](std::string s) {
         const uint64_t n = s.size();
         std::memcpy(s.data(), &n, 8);
         return s;
       }), "truncated: header length"},
      {"header_length_absurd", false,
       ReplaceFile(M, [](std::string s) {
         const uint64_t n = uint64_t{1} << 40;
         std::memcpy(s.data(), &n, 8);
         return s;
       }), "exceeds the limit"},
      {"truncated_data", false,
       ReplaceFile(M, [](std::string s) { return s.substr(0, s.size() - 4); }),
       "past the data section"},
      {"trailing_bytes", false, ReplaceFile(M, [](std::string s) { return s + "xxxx"; }),
       "trailing bytes"},
      {"header_not_json", false,
       ReplaceFile(M, [](std::string s) { return JoinFile("{\"a\": [1, 2", SplitFile(s).data); }),
       "not valid JSON"},
      {"header_not_object", false,
       ReplaceFile(M, [](std::string s) { return JoinFile("[1, 2, 3]", SplitFile(s).data); }),
       "not a JSON object"},
      {"unsupported_dtype", false,
       MutateTensors(M, [](Json& h, std::string&) { h["alpha"]["dtype"] = "F16"; }),
       "unsupported dtype 'F16'"},
      {"wrong_dtype_for_tensor", false,
       MutateTensors(M, [](Json& h, std::string&) { h["table.0.keys"]["dtype"] = "I64"; }),
       "'table.0.keys' has dtype I64, expected U64"},
      {"negative_dimension", false,
       MutateTensors(M, [](Json& h, std::string&) { h["alpha"]["shape"] = {-4}; }),
       "non-negative integers"},
      {"shape_product_overflow", false,
       MutateTensors(M, [](Json& h, std::string&) {
         h["alpha"]["shape"] = {int64_t{1} << 40, int64_t{1} << 40};
       }), "shape product overflows"},
      {"offsets_disagree_with_shape", false,
       MutateTensors(M, [](Json& h, std::string&) { h["alpha"]["shape"] = {3}; }),
       "data_offsets span"},
      {"offsets_reversed", false,
       MutateTensors(M, [](Json& h, std::string&) {
         h["alpha"]["data_offsets"] = {Offset(h, "alpha", 1), Offset(h, "alpha", 0)};
       }), "begin <= end"},
      {"offsets_out_of_range", false,
       MutateTensors(M, [](Json& h, std::string& data) {
         const int64_t len = Offset(h, "alpha", 1) - Offset(h, "alpha", 0);
         h["alpha"]["data_offsets"] = {int64_t(data.size()), int64_t(data.size()) + len};
       }), "past the data section"},
      {"offsets_overlap", false,
       MutateTensors(M, [](Json& h, std::string& data) {
         // Point alpha at hash.offset's bytes (same length needed: pad).
         const int64_t b = Offset(h, "hash.offset", 0);
         const int64_t len = Offset(h, "alpha", 1) - Offset(h, "alpha", 0);
         h["alpha"]["data_offsets"] = {b, b + len};
         (void)data;
       }), "overlaps"},
      {"offsets_leave_gap", false,
       MutateTensors(M, [](Json& h, std::string& data) {
         // Drop alpha's entry entirely: its bytes become a hole.
         h.erase("alpha");
         (void)data;
       }), "gap of"},
      {"missing_tensor", false,
       MutateTensors(M, [](Json& h, std::string&) {
         h["alphas"] = h["alpha"];
         h.erase("alpha");
       }), "missing tensor 'alpha'"},
      {"wrong_shape", false,
       MutateTensors(M, [](Json& h, std::string&) {
         const int64_t n = h["hash.offset"]["shape"][0].get<int64_t>();
         h["hash.offset"]["shape"] = {n / 2, 2};
       }), "'hash.offset' has shape"},
      {"unsorted_keys", false,
       MutateTensors(M, [](Json& h, std::string& data) {
         const int64_t b = Offset(h, "table.0.keys", 0);
         std::string first = data.substr(b, 8);
         data.replace(b, 8, data.substr(b + 8, 8));
         data.replace(b + 8, 8, first);
       }), "table.0.keys are not strictly increasing"},
      {"nan_weight", true,
       MutateTensors(M, [](Json& h, std::string& data) {
         const float nan = std::numeric_limits<float>::quiet_NaN();
         std::memcpy(data.data() + Offset(h, "bottom.weight", 0) + 4 * 5, &nan, 4);
       }), "bottom.weight[5] is not finite"},
      {"infinite_router_weight", true,
       MutateTensors(M, [](Json& h, std::string& data) {
         const float inf = std::numeric_limits<float>::infinity();
         std::memcpy(data.data() + Offset(h, "router.weight", 0), &inf, 4);
       }), "router.weight[0] is not finite"},
      {"metadata_missing_kind", false,
       MutateTensors(M, [](Json& h, std::string&) { h["__metadata__"].erase("kind"); }),
       "missing 'kind'"},
      {"unknown_kind", false,
       MutateTensors(M, [](Json& h, std::string&) { h["__metadata__"]["kind"] = "mlp"; }),
       "kind must be 'lsh_table' or 'dsm', got 'mlp'"},
      {"future_format_version", false,
       MutateTensors(M, [](Json& h, std::string&) { h["__metadata__"]["format_version"] = "2"; }),
       "unsupported format_version 2"},
      {"metadata_not_string", false,
       MutateTensors(M, [](Json& h, std::string&) { h["__metadata__"]["tables"] = 4; }),
       "__metadata__.tables is not a string"},
      {"metadata_not_integer", false,
       MutateTensors(M, [](Json& h, std::string&) { h["__metadata__"]["tables"] = "four"; }),
       "'tables' must be an integer, got 'four'"},
      {"metadata_unknown_key", false,
       MutateTensors(M, [](Json& h, std::string&) { h["__metadata__"]["tabels"] = "4"; }),
       "unknown __metadata__ key 'tabels'"},
      {"dsm_experts_inconsistent", true,
       MutateTensors(M, [](Json& h, std::string&) { h["__metadata__"]["experts"] = "6"; }),
       "experts x active_units"},
      {"checksum_mismatch", false,
       ReplaceFile(M, [](std::string s) {
         s[s.size() - 1] ^= 0x40;
         return s;
       }, /*reseal=*/false), "does not match the manifest"},
      {"size_mismatch", false,
       ReplaceFile(M, [](std::string s) { return s + "x"; }, /*reseal=*/false),
       "manifest says"},
      {"missing_manifest", false, [](const fs::path& dir) { fs::remove(dir / kManifestFile); },
       "no manifest.json"},
      {"manifest_not_json", false,
       [](const fs::path& dir) { WriteFile(dir / kManifestFile, "{\"files\": "); },
       "manifest.json: not a JSON object"},
      {"manifest_lists_missing_file", false,
       [](const fs::path& dir) { fs::remove(dir / kDenseFile); }, "cannot open dense.safetensors"},
      {"dense_file_not_in_manifest", true,
       [](const fs::path& dir) { WriteFile(dir / kDenseFile, "junk"); },
       "dense.safetensors is present but not listed"},
      {"dense_wrong_kind", false,
       MutateTensors(kDenseFile, [](Json& h, std::string&) { h["__metadata__"]["kind"] = "dsm"; }),
       "dense.safetensors: kind must be 'dense'"},
      {"dense_twin_other_input_dim", false,
       [](const fs::path& dir) {
         Checkpoint other;
         other.sparse = RandomLshTable({.d = 5}, 1);
         other.dense = RandomDense(5, 16, 1, Activation::kRelu, 2);
         const fs::path elsewhere = dir.parent_path() / "other";
         ASSERT_OK(WriteCheckpoint(elsewhere.string(), 1, other));
         fs::copy_file(elsewhere / "1" / kDenseFile, dir / kDenseFile,
                       fs::copy_options::overwrite_existing);
         ResealManifest(dir, kDenseFile);
       },
       "dense twin maps 5 -> 1 but the sparse model maps 8 -> 1"},
      {"manifest_is_a_fifo", false,
       [](const fs::path& dir) {
         fs::remove(dir / kManifestFile);
         ASSERT_EQ(::mkfifo((dir / kManifestFile).c_str(), 0644), 0);
       },
       "manifest.json is not a regular file"},
      {"manifest_huge", false,
       [](const fs::path& dir) {
         WriteFile(dir / kManifestFile, std::string(17 << 20, '['));  // over the 16 MiB cap
       },
       "a manifest can need"},
      {"unlisted_dense_is_a_symlink_loop", true,
       [](const fs::path& dir) { fs::create_symlink(kDenseFile, dir / kDenseFile); },
       "dense.safetensors is present but not listed"},
      {"dense_nan_bias", false,
       MutateTensors(kDenseFile, [](Json& h, std::string& data) {
         const float nan = std::numeric_limits<float>::quiet_NaN();
         std::memcpy(data.data() + Offset(h, "top.bias", 0), &nan, 4);
       }), "dense.safetensors: top.bias[0] is not finite"},
  };
}

TEST_F(CheckpointTest, EveryCorruptFileGivesAClearErrorAndNoModel) {
  const std::vector<CorruptCase> cases = CorruptCases();
  ASSERT_GE(cases.size(), 15u);
  for (const CorruptCase& c : cases) {
    SCOPED_TRACE(c.name);
    const fs::path model_dir = root_ / c.name;
    Checkpoint checkpoint;
    if (c.dsm) {
      checkpoint.sparse = RandomDsm({}, 21);
    } else {
      checkpoint.sparse = RandomLshTable({}, 22);
      checkpoint.dense = RandomDense(8, 32, 1, Activation::kRelu, 23);
    }
    ASSERT_OK(WriteCheckpoint(model_dir.string(), 1, checkpoint));
    ASSERT_OK(LoadCheckpoint((model_dir / "1").string()).status());
    c.corrupt(model_dir / "1");
    const absl::Status status = LoadCheckpoint((model_dir / "1").string()).status();
    EXPECT_FALSE(status.ok());
    EXPECT_TRUE(status.code() == absl::StatusCode::kInvalidArgument ||
                status.code() == absl::StatusCode::kNotFound)
        << status;
    EXPECT_NE(status.message().find(c.expected), std::string::npos)
        << "got: " << status.message() << "\nexpected to contain: " << c.expected;
    // Errors name the file, never the directory it lives in.
    EXPECT_EQ(status.message().find(root_.string()), std::string::npos) << status.message();
  }
}

}  // namespace
}  // namespace sparse
