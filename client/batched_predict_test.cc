// What sparse-cli predict writes and how it joins the answers of a split
// input (issue 31): the .npy bytes by the NPY 1.0 spec, CSV that reads back
// to the same float32 values, and responses appended in order with costs
// summed. The split against a real server is tests/large_inputs_test.py.
// Also the rows sparse-cli bench --rows sends (issue 32): read from .npy or
// CSV, in order, --batch rows per request, cycling.
#include "client/batched_predict.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "client/bench_command.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sparse {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

fs::path TempPath(const std::string& name) {
  return fs::temp_directory_path() / absl::StrCat("batched_predict_test_", ::getpid(), "_", name);
}

TEST(NpyBytesTest, HeaderFollowsTheNpyOneZeroSpecAndTheDataIsLittleEndianFloat32) {
  const std::vector<float> values = {1.5f, -2.0f, 0.25f, 3.0f, 1e-7f, 7.0f};
  const std::string npy = NpyBytes(values, 3, 2);
  ASSERT_GE(npy.size(), 10u);
  EXPECT_EQ(npy.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const size_t header_len = static_cast<unsigned char>(npy[8]) |
                            static_cast<size_t>(static_cast<unsigned char>(npy[9])) << 8;
  EXPECT_EQ((10 + header_len) % 64, 0u);
  const std::string header = npy.substr(10, header_len);
  EXPECT_EQ(header.rfind("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }", 0), 0u)
      << header;
  EXPECT_EQ(header.back(), '\n');
  ASSERT_EQ(npy.size(), 10 + header_len + values.size() * 4);
  std::vector<float> data(values.size());
  std::memcpy(data.data(), npy.data() + 10 + header_len, values.size() * 4);
  EXPECT_EQ(data, values);
}

TEST(WritePredictionsTest, CsvHasAHeaderAndValuesThatReadBackExactly) {
  const fs::path path = TempPath("out.csv");
  const std::vector<float> sparse = {0.1f, 1.0f / 3.0f, -1e-8f, 12345.678f};
  const std::vector<float> dense = {2.0f, -0.5f, 0.0f, 1e30f};
  ASSERT_TRUE(WritePredictions(path.string(), 2, 2, {{"sparse", sparse}}).ok());
  std::istringstream one(ReadFile(path));
  std::string line;
  std::getline(one, line);
  EXPECT_EQ(line, "output_0,output_1");
  std::vector<float> back;
  while (std::getline(one, line)) {
    std::istringstream fields(line);
    std::string field;
    while (std::getline(fields, field, ',')) back.push_back(std::stof(field));
  }
  EXPECT_EQ(back, sparse);

  // Both paths side by side, each labelled.
  ASSERT_TRUE(WritePredictions(path.string(), 2, 2, {{"sparse", sparse}, {"dense", dense}}).ok());
  EXPECT_EQ(ReadFile(path).substr(0, ReadFile(path).find('\n')), "sparse_0,sparse_1,dense_0,dense_1");
  fs::remove(path);
}

TEST(WritePredictionsTest, NpyWritesOnePathAndOtherNamesAreRefusedSayingWhatIsExpected) {
  const fs::path npy = TempPath("out.npy");
  const std::vector<float> values = {1, 2, 3};
  ASSERT_TRUE(WritePredictions(npy.string(), 3, 1, {{"sparse", values}}).ok());
  EXPECT_EQ(ReadFile(npy), NpyBytes(values, 3, 1));
  fs::remove(npy);

  const absl::Status both = WritePredictions(npy.string(), 3, 1, {{"sparse", values}, {"dense", values}});
  EXPECT_EQ(both.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(both.message(), HasSubstr("drop --both, or write .csv"));
  const absl::Status txt = WritePredictions(TempPath("out.txt").string(), 3, 1, {{"sparse", values}});
  EXPECT_EQ(txt.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(txt.message(), HasSubstr("expected a file name ending in .csv or .npy, got '"));
  EXPECT_FALSE(fs::exists(TempPath("out.txt")));
}

TEST(AppendResponseTest, RowsOutputsAndRoutesFollowInOrderAndCostsAdd) {
  sparse::v1::PredictResponse a, b;
  a.set_rows(2);
  a.set_output_dim(1);
  a.add_outputs(1);
  a.add_outputs(2);
  a.mutable_route()->set_experts_per_row(1);
  a.mutable_route()->add_expert_ids(4);
  a.mutable_route()->add_expert_ids(5);
  a.mutable_cost()->set_flops(10);
  a.mutable_cost()->set_batch_size(2);
  a.mutable_cost()->set_weight_bytes(100);
  a.mutable_cost()->set_major_faults(3);
  b = a;
  b.set_rows(1);
  b.clear_outputs();
  b.add_outputs(3);
  b.mutable_route()->clear_expert_ids();
  b.mutable_route()->add_expert_ids(6);
  b.mutable_cost()->set_flops(5);
  b.mutable_cost()->set_batch_size(1);
  AppendResponse(b, &a);
  EXPECT_EQ(a.rows(), 3);
  EXPECT_THAT(a.outputs(), ElementsAre(1, 2, 3));
  EXPECT_THAT(a.route().expert_ids(), ElementsAre(4, 5, 6));
  EXPECT_EQ(a.cost().flops(), 15);
  EXPECT_EQ(a.cost().weight_bytes(), 200);
  EXPECT_EQ(a.cost().major_faults(), 6);
  EXPECT_EQ(a.cost().batch_size(), 2);

  // No route asked for: none appears.
  sparse::v1::PredictResponse c, d;
  d.add_outputs(1);
  AppendResponse(d, &c);
  EXPECT_FALSE(c.has_route());
}

TEST(ReadRowsFileTest, NpyAndCsvGiveTheSameRows) {
  const std::vector<float> values = {1.5f, -2.0f, 0.25f, 3.0f, 1e-7f, 7.0f};
  const fs::path npy = TempPath("rows.npy"), csv = TempPath("rows.csv");
  std::ofstream(npy, std::ios::binary) << NpyBytes(values, 3, 2);
  std::ofstream(csv) << "x0,x1\n1.5,-2\n0.25,3\n1e-7,7\n";
  const std::vector<std::vector<float>> want = {{1.5f, -2.0f}, {0.25f, 3.0f}, {1e-7f, 7.0f}};
  auto from_npy = ReadRowsFile(npy.string(), "--rows");
  ASSERT_TRUE(from_npy.ok()) << from_npy.status();
  EXPECT_EQ(*from_npy, want);
  auto from_csv = ReadRowsFile(csv.string(), "--rows");
  ASSERT_TRUE(from_csv.ok()) << from_csv.status();
  EXPECT_EQ(*from_csv, want);
  fs::remove(npy);
  fs::remove(csv);
}

TEST(ReadRowsFileTest, Float64NpyIsReadAndOtherTypesAreRefusedSayingWhy) {
  const fs::path f8 = TempPath("f8.npy"), i4 = TempPath("i4.npy");
  std::string header = "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }";
  header.append(128 - 10 - header.size() - 1, ' ');
  header.push_back('\n');
  std::string bytes = std::string("\x93NUMPY\x01\x00", 8);
  bytes.push_back(static_cast<char>(header.size()));
  bytes.push_back(0);
  bytes += header;
  const double data[2] = {0.5, -4.0};
  bytes.append(reinterpret_cast<const char*>(data), sizeof(data));
  std::ofstream(f8, std::ios::binary) << bytes;
  auto rows = ReadRowsFile(f8.string(), "--rows");
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(*rows, (std::vector<std::vector<float>>{{0.5f, -4.0f}}));
  std::string ints = bytes;
  ints.replace(ints.find("<f8"), 3, "<i8");
  std::ofstream(i4, std::ios::binary) << ints;
  auto refused = ReadRowsFile(i4.string(), "--rows");
  EXPECT_THAT(refused.status().message(), HasSubstr("expected a float32 or float64 array"));
  EXPECT_THAT(ReadRowsFile(TempPath("missing.npy").string(), "--rows").status().message(),
              HasSubstr("--rows: cannot open"));
  fs::remove(f8);
  fs::remove(i4);
}

TEST(BenchInputsTest, RowsAreSentInOrderBatchRowsPerRequestWrappingAtTheEnd) {
  const fs::path csv = TempPath("bench_rows.csv");
  std::ofstream(csv) << "1,10\n2,20\n3,30\n4,40\n5,50\n";
  BenchOptions o;
  o.model = "m";
  o.rows_path = csv.string();
  o.batch = 2;
  auto inputs = BenchInputs(o, 2);
  ASSERT_TRUE(inputs.ok()) << inputs.status();
  EXPECT_THAT(*inputs, ElementsAre(ElementsAre(1, 10, 2, 20), ElementsAre(3, 30, 4, 40),
                                   ElementsAre(5, 50, 1, 10)));
  o.batch = 1;
  inputs = BenchInputs(o, 2);
  ASSERT_TRUE(inputs.ok()) << inputs.status();
  ASSERT_EQ(inputs->size(), 5u);
  EXPECT_THAT((*inputs)[4], ElementsAre(5, 50));
  EXPECT_THAT(BenchInputs(o, 3).status().message(),
              HasSubstr("rows of 2 values, but model 'm' takes 3"));
  fs::remove(csv);
  o.rows_path.clear();  // random rows: 64 batches in [-1, 1], the same on every call
  auto random = BenchInputs(o, 4);
  ASSERT_TRUE(random.ok());
  EXPECT_EQ(random->size(), 64u);
  EXPECT_EQ(*random, *BenchInputs(o, 4));
  for (const auto& x : *random) {
    ASSERT_EQ(x.size(), 4u);
    for (float v : x) EXPECT_TRUE(v >= -1 && v <= 1) << v;
  }
}

}  // namespace
}  // namespace sparse
