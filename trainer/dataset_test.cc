#include "trainer/dataset.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <sys/stat.h>
#include <zlib.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/matchers.h"

namespace sparse {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class DatasetFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("sparse_dataset_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& contents) {
    const fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << contents;
    return p.string();
  }
  fs::path dir_;
};

// A .npy file with the given header dict and raw data.
std::string Npy(const std::string& dict, const std::string& data) {
  std::string header = dict;
  while ((10 + header.size() + 1) % 64 != 0) header.push_back(' ');
  header.push_back('\n');
  std::string out = "\x93NUMPY";
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  return out + header + data;
}

template <typename T>
std::string Raw(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

TEST(SyntheticTest, SamplesAreReproducibleAndInTheBox) {
  for (SyntheticKind kind : {SyntheticKind::kPolynomial, SyntheticKind::kHypercube,
                             SyntheticKind::kReluNet, SyntheticKind::kManifold}) {
    SyntheticSpec spec{.kind = kind, .d = kind == SyntheticKind::kManifold ? 16 : 8,
                       .degree = 4, .manifold_dim = 4, .seed = 3};
    auto f = TargetFunction::Create(spec);
    ASSERT_TRUE(f.ok()) << f.status();
    const Dataset a = SampleDataset(**f, spec.d, 500, 9);
    const Dataset b = SampleDataset(**f, spec.d, 500, 9);
    const Dataset c = SampleDataset(**f, spec.d, 500, 10);
    EXPECT_EQ(a.x, b.x);
    EXPECT_EQ(a.y, b.y);
    EXPECT_NE(a.x, c.x);
    for (float v : a.x) {
      EXPECT_GE(v, -1.0f);
      EXPECT_LE(v, 1.0f);
    }
    // A different function seed draws a different function.
    spec.seed = 4;
    auto g = TargetFunction::Create(spec);
    ASSERT_TRUE(g.ok());
    EXPECT_NE(SampleDataset(**g, spec.d, 500, 9).y, a.y) << SyntheticKindName(kind);
  }
}

TEST(SyntheticTest, PolynomialIsBoundedByItsCoefficientSum) {
  // Σ|c| = 1 and every monomial is in [-1, 1] on the box, so |p| <= 1.
  auto f = TargetFunction::Create({.kind = SyntheticKind::kPolynomial, .d = 8, .degree = 4});
  ASSERT_TRUE(f.ok());
  std::vector<float> ones(8, 1.0f), y(1);
  const Dataset data = SampleDataset(**f, 8, 2000, 1);
  for (float v : data.y) EXPECT_LE(std::fabs(v), 1.0f);
  EXPECT_NE((*f)->Describe().find("495 monomials"), std::string::npos) << (*f)->Describe();
}

TEST(SyntheticTest, HypercubeTakesItsCornerValuesAtTheCorners) {
  auto f = TargetFunction::Create({.kind = SyntheticKind::kHypercube, .d = 5, .seed = 2});
  ASSERT_TRUE(f.ok());
  int plus = 0;
  for (int corner = 0; corner < 32; ++corner) {
    std::vector<float> x(5);
    for (int i = 0; i < 5; ++i) x[i] = (corner >> i) & 1 ? 1.0f : -1.0f;
    float y = 0;
    (*f)->Evaluate(x.data(), 1, &y);
    EXPECT_TRUE(y == 1.0f || y == -1.0f) << y;
    plus += y == 1.0f;
  }
  EXPECT_GT(plus, 0);
  EXPECT_LT(plus, 32);
  // The centre averages all corners.
  std::vector<float> centre(5, 0.0f);
  float y = 0;
  (*f)->Evaluate(centre.data(), 1, &y);
  EXPECT_NEAR(y, (plus - (32 - plus)) / 32.0, 1e-6);
}

TEST(SyntheticTest, RejectsOutOfRangeSpecs) {
  EXPECT_FALSE(TargetFunction::Create({.kind = SyntheticKind::kHypercube, .d = 30}).ok());
  EXPECT_FALSE(TargetFunction::Create({.kind = SyntheticKind::kManifold, .d = 4, .manifold_dim = 8}).ok());
  EXPECT_FALSE(ParseSyntheticKind("sine").ok());
  absl::Status huge = TargetFunction::Create({.kind = SyntheticKind::kPolynomial, .d = 64, .degree = 8}).status();
  EXPECT_NE(huge.message().find("monomials; the limit is 1e6"), std::string::npos) << huge;
}

TEST_F(DatasetFileTest, CsvWithAndWithoutHeader) {
  auto with = ReadCsv(Write("a.csv", "x1,x2,y\n1,2,3\n4, 5 ,6\r\n\n7,8,9\n"), {});
  ASSERT_TRUE(with.ok()) << with.status();
  EXPECT_EQ(with->rows, 3);
  EXPECT_EQ(with->d, 2);
  EXPECT_EQ(with->x, (std::vector<float>{1, 2, 4, 5, 7, 8}));
  EXPECT_EQ(with->y, (std::vector<float>{3, 6, 9}));
  auto two_targets = ReadCsv(Write("b.csv", "1,2,3\n4,5,6\n"), {.outputs = 2});
  ASSERT_TRUE(two_targets.ok());
  EXPECT_EQ(two_targets->d, 1);
  EXPECT_EQ(two_targets->o, 2);
}

TEST_F(DatasetFileTest, CsvErrorsNameTheLine) {
  struct Case {
    std::string contents, expected;
  };
  for (const Case& c : std::vector<Case>{
           {"a,b\n1,2\n3\n", ":3: expected 2 columns, got 1"},
           {"1,2\n3,x\n", ":2: expected numbers, got '3,x'"},
           {"1,2\n3,nan\n", ":2: column 2 is not a finite number"},
           {"1,2\ninf,2\n", ":2: column 1 is not a finite number"},
           {"a,b\n", "no data rows"},
           {"\x01\x02garbage\xff,\n1\n", ":2: expected"},
           {"5\n6\n", "leave no inputs"},
           // A first line with some numbers is a broken row, not a header.
           {"1.0,,3\n4,5,6\n", ":1: expected numbers, got '1.0,,3'"},
       }) {
    auto r = ReadCsv(Write("bad.csv", c.contents), {});
    ASSERT_FALSE(r.ok()) << c.contents;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.expected), std::string::npos)
        << r.status().message() << "\nexpected: " << c.expected;
  }
  EXPECT_EQ(ReadCsv((dir_ / "missing.csv").string(), {}).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(DatasetFileTest, CsvWithAUtf8ByteOrderMarkKeepsItsHeader) {
  auto data = ReadCsv(Write("bom.csv", "\xEF\xBB\xBFx,y\n1,2\n3,4\n"), {});
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->rows, 2);
  // Without a header, the BOM must not make the first row look like one.
  auto no_header = ReadCsv(Write("bom2.csv", "\xEF\xBB\xBF" "1,2\n3,4\n"), {});
  ASSERT_TRUE(no_header.ok()) << no_header.status();
  EXPECT_EQ(no_header->rows, 2);
}

// Issue 31, trap 9: a '#' first line was taken as the header, so the real
// header was reported as a bad row on line 2.
TEST_F(DatasetFileTest, CsvSkipsCommentLinesAnywhere) {
  auto data = ReadCsv(Write("c.csv", "# exported 2026-12-07\nx1,x2,y\n1,2,3\n  # a note\n4,5,6\n#\n"), {});
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->rows, 2);
  EXPECT_EQ(data->d, 2);
  EXPECT_EQ(data->x, (std::vector<float>{1, 2, 4, 5}));
  EXPECT_EQ(data->y, (std::vector<float>{3, 6}));
  // A comment before headerless rows is not a header either.
  auto headerless = ReadCsv(Write("d.csv", "# no header below\n1,2,3\n"), {});
  ASSERT_TRUE(headerless.ok()) << headerless.status();
  EXPECT_EQ(headerless->rows, 1);
}

TEST_F(DatasetFileTest, CsvSniffsSemicolonAndTabSeparators) {
  struct Case {
    std::string name, contents;
  };
  for (const Case& c : std::vector<Case>{
           {"semicolon.csv", "x1;x2;y\n1;2;3\n4.5; 5 ;6\n"},
           {"tab.tsv", "x1\tx2\ty\n1\t2\t3\n4.5\t5\t6\n"},
           {"comment_then_tab.tsv", "# a, b; c\n1\t2\t3\n4.5\t5\t6\n"},
       }) {
    auto data = ReadCsv(Write(c.name, c.contents), {});
    ASSERT_TRUE(data.ok()) << c.name << ": " << data.status();
    EXPECT_EQ(data->rows, 2) << c.name;
    EXPECT_EQ(data->x, (std::vector<float>{1, 2, 4.5, 5})) << c.name;
    EXPECT_EQ(data->y, (std::vector<float>{3, 6})) << c.name;
  }
}

TEST_F(DatasetFileTest, CsvSeparatorGivenOverridesTheSniff) {
  // The header's ';' would make the sniff pick ';'.
  const std::string path = Write("units.csv", "x1,x2 (m;s),y\n1,2,3\n");
  EXPECT_FALSE(ReadCsv(path, {}).ok());
  auto data = ReadCsv(path, {.separator = ','});
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->d, 2);
  absl::Status bad = ReadCsv(path, {.separator = '|'}).status();
  EXPECT_NE(bad.message().find("must be ',', ';' or 'tab', got '|'"), std::string::npos) << bad;
}

TEST_F(DatasetFileTest, CsvErrorsNameTheSeparatorInUse) {
  struct Case {
    std::string contents;
    char separator;
    std::string expected;
  };
  for (const Case& c : std::vector<Case>{
           {"a;b;c\n1;2\n", 0, ":2: expected 3 columns, got 2 (separator ';' sniffed from line 1)"},
           {"# note\na\tb\n1\tx\n", 0, ":3: expected numbers, got '1\tx' (separator tab sniffed from line 2)"},
           {"a;y\n1,5;2\n", 0, "(decimal commas are not read: write 1.5, not 1,5) (separator ';'"},
           {"x,y\n1,2\n", ';', ":2: expected numbers, got '1,2' (decimal commas are not read: write "
                               "1.5, not 1,5) (separator ';' from --csv_separator)"},
       }) {
    absl::Status s = ReadCsv(Write("sep.csv", c.contents), {.separator = c.separator}).status();
    EXPECT_NE(s.message().find(c.expected), std::string::npos)
        << s.message() << "\nexpected: " << c.expected;
  }
}

TEST(CsvSeparatorTest, ParsesTheFlagsSpellingsAndNamesThem) {
  EXPECT_EQ(ParseSeparator(",").value(), ',');
  EXPECT_EQ(ParseSeparator(";").value(), ';');
  EXPECT_EQ(ParseSeparator("tab").value(), '\t');
  EXPECT_EQ(ParseSeparator("\t").value(), '\t');
  EXPECT_FALSE(ParseSeparator("").ok());
  EXPECT_FALSE(ParseSeparator(",,").ok());
  EXPECT_EQ(SeparatorName('\t'), "tab");
  EXPECT_EQ(SeparatorName(';'), "';'");
}

TEST_F(DatasetFileTest, NpyFloat32AndFloat64) {
  const std::string x = Write("x.npy", Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }",
                                          Raw(std::vector<float>{1, 2, 3, 4, 5, 6})));
  const std::string y = Write("y.npy", Npy("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }",
                                          Raw(std::vector<double>{0.5, 1.5, 2.5})));
  auto data = ReadNpy(x, y);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->rows, 3);
  EXPECT_EQ(data->d, 2);
  EXPECT_EQ(data->o, 1);
  EXPECT_EQ(data->y, (std::vector<float>{0.5f, 1.5f, 2.5f}));
}

TEST_F(DatasetFileTest, NpyErrors) {
  const std::string x = Write("x.npy", Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }",
                                          Raw(std::vector<float>{1, 2, 3, 4, 5, 6})));
  struct Case {
    std::string y, expected;
  };
  for (const Case& c : std::vector<Case>{
           {"garbage", "not a .npy file"},
           {Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", Raw(std::vector<float>(4))),
            "targets must have shape (3,) or (3, o)"},
           {Npy("{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", Raw(std::vector<int64_t>(3))),
            "dtype must be little-endian float32 or float64"},
           {Npy("{'descr': '<f4', 'fortran_order': True, 'shape': (3,), }", Raw(std::vector<float>(3))),
            "fortran_order"},
           {Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", Raw(std::vector<float>(2))),
            "data has 8 bytes, shape (3,) needs 3 x 4"},
           {Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }",
                Raw(std::vector<float>{1, NAN, 2})),
            "element 1 is not a finite float32"},
           // 2^31 x 2^31 float32s: 2^64 bytes, which wraps to 0 in 64 bits.
           {Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2147483648, 2147483648), }", ""),
            "needs"},
       }) {
    auto r = ReadNpy(x, Write("y.npy", c.y));
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find(c.expected), std::string::npos)
        << r.status().message() << "\nexpected: " << c.expected;
  }
}

// An IDX file of unsigned bytes: magic 0x000008<dims>, big-endian dims, data.
std::string Idx(const std::vector<uint32_t>& dims, const std::string& data) {
  std::string out = {0, 0, 8, static_cast<char>(dims.size())};
  for (uint32_t v : dims) {
    for (int shift : {24, 16, 8, 0}) out += static_cast<char>((v >> shift) & 0xff);
  }
  return out + data;
}

TEST_F(DatasetFileTest, IdxImagesAndLabelsRawAndGzipped) {
  // Two 2x3 images and their labels 2 and 0.
  const std::string pixels = {0, 51, 102, static_cast<char>(255), 0, 0, 10, 20, 30, 40, 50, 60};
  const std::string images = Write("images-idx3-ubyte", Idx({2, 2, 3}, pixels));
  const std::string labels = Write("labels-idx1-ubyte", Idx({2}, {2, 0}));
  // The same, gzip-compressed as MNIST ships them.
  const std::string gz_images = (dir_ / "images-idx3-ubyte.gz").string();
  const std::string gz_labels = (dir_ / "labels-idx1-ubyte.gz").string();
  for (const auto& [path, raw] : {std::pair{gz_images, Idx({2, 2, 3}, pixels)},
                                  std::pair{gz_labels, Idx({2}, {2, 0})}}) {
    gzFile f = gzopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(gzwrite(f, raw.data(), raw.size()), static_cast<int>(raw.size()));
    ASSERT_EQ(gzclose(f), Z_OK);
  }
  for (const auto& [x, y] : {std::pair{images, labels}, std::pair{gz_images, gz_labels}}) {
    absl::StatusOr<Dataset> data = ReadIdx(x, y);
    ASSERT_OK(data.status());
    EXPECT_EQ(data->rows, 2);
    EXPECT_EQ(data->d, 6);
    EXPECT_EQ(data->o, 3);  // labels 0 to 2
    EXPECT_FLOAT_EQ(data->x[1], 51 / 255.0f);
    EXPECT_FLOAT_EQ(data->x[3], 1.0f);
    EXPECT_FLOAT_EQ(data->x[11], 60 / 255.0f);
    EXPECT_EQ(data->y, (std::vector<float>{0, 0, 1, 1, 0, 0}));
  }
  // A test file takes the training file's classes.
  absl::StatusOr<Dataset> ten = ReadIdx(images, labels, 10);
  ASSERT_OK(ten.status());
  EXPECT_EQ(ten->o, 10);
  EXPECT_EQ(ten->y[2], 1.0f);
  EXPECT_EQ(ten->y[10], 1.0f);
}

TEST_F(DatasetFileTest, IdxErrorsSayWhatWasExpected) {
  const std::string pixels(12, 7);
  const std::string images = Write("i", Idx({2, 2, 3}, pixels));
  const std::string labels = Write("l", Idx({2}, {1, 0}));
  auto error = [](const absl::StatusOr<Dataset>& d) {
    EXPECT_FALSE(d.ok());
    return std::string(d.status().message());
  };
  EXPECT_THAT(error(ReadIdx(labels, images)),
              HasSubstr("magic 0x00000801 is not an IDX file of unsigned bytes with 3 dimension(s) "
                        "(0x00000803): give the images file first, then the labels"));
  EXPECT_THAT(error(ReadIdx(Write("short", Idx({2, 2, 3}, pixels.substr(0, 11))), labels)),
              HasSubstr("cut short: its header (2 x 2 x 3) promises 12 bytes of data"));
  EXPECT_THAT(error(ReadIdx(Write("long", Idx({2, 2, 3}, pixels + "x")), labels)),
              HasSubstr("bytes after the 12 its header (2 x 2 x 3) promises"));
  EXPECT_THAT(error(ReadIdx(images, Write("three", Idx({3}, {0, 1, 1})))),
              HasSubstr("3 labels for the 2 images of"));
  EXPECT_THAT(error(ReadIdx(images, Write("big", Idx({2}, {0, 12})), 10)),
              HasSubstr("label 12 is not one of the 10 classes 0 to 9"));
  EXPECT_THAT(error(ReadIdx(Write("huge", Idx({1, 2048, 2048}, "")), labels)),
              HasSubstr("cut short"));
  EXPECT_THAT(error(ReadIdx(Write("vast", Idx({65536, 65536, 65536}, "")), labels)),
              HasSubstr("the most sparse-train reads"));
  EXPECT_THAT(error(ReadIdx(Write("empty", ""), labels)), HasSubstr("shorter than its 4-byte magic"));
  EXPECT_EQ(ReadIdx((dir_ / "missing").string(), labels).status().code(),
            absl::StatusCode::kNotFound);
  // A FIFO where a file belongs is refused at once, never waited on.
  const std::string fifo = (dir_ / "fifo").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_EQ(ReadIdx(fifo, labels).status().code(), absl::StatusCode::kInvalidArgument);
  // A gzip stream corrupt half way says so.
  std::string gz;
  {
    const std::string raw = Idx({2, 2, 3}, pixels);
    uLongf size = compressBound(raw.size()) + 32;
    gz.resize(size);
    z_stream z{};
    ASSERT_EQ(deflateInit2(&z, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
    z.avail_in = raw.size();
    z.next_out = reinterpret_cast<Bytef*>(gz.data());
    z.avail_out = size;
    ASSERT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
    gz.resize(z.total_out);
    deflateEnd(&z);
  }
  gz[gz.size() / 2] ^= 0x55;
  gz[gz.size() / 2 + 1] ^= 0x55;
  EXPECT_FALSE(ReadIdx(Write("corrupt.gz", gz), labels).ok());
}

TEST(SplitHoldoutTest, SplitsDeterministicallyWithoutLosingRows) {
  Dataset data{.rows = 10, .d = 1, .o = 1, .x = {}, .y = {}};
  for (int i = 0; i < 10; ++i) {
    data.x.push_back(i);
    data.y.push_back(10 * i);
  }
  auto split = SplitHoldout(data, 0.3, 1);
  ASSERT_TRUE(split.ok());
  EXPECT_EQ(split->first.rows, 7);
  EXPECT_EQ(split->second.rows, 3);
  std::vector<float> all = split->first.x;
  all.insert(all.end(), split->second.x.begin(), split->second.x.end());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, data.x);
  for (int64_t r = 0; r < split->second.rows; ++r) EXPECT_EQ(split->second.y[r], 10 * split->second.x[r]);
  EXPECT_EQ(SplitHoldout(data, 0.3, 1)->second.x, split->second.x);
  EXPECT_FALSE(SplitHoldout(data, 1.0, 1).ok());
  EXPECT_FALSE(SplitHoldout(data, 0.01, 1).ok());
}

}  // namespace
}  // namespace sparse
