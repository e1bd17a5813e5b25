// The safetensors layer of checkpoints (model_store/safetensors.h,
// docs/checkpoint-format.md "Tensor files"):
//  - SerializeSafetensors then ParseSafetensors gives back the metadata and
//    every tensor's name, dtype, shape, element count and bytes.
//  - The file starts with the header length as 8 little-endian bytes, and
//    the data section starts 8-byte aligned.
//  - ParseSafetensors refuses, with INVALID_ARGUMENT naming the file and the
//    field or tensor, every malformed file: truncated, a header length past
//    the file or over the limit, a header that is not a JSON object, an
//    unknown dtype, a bad shape, offsets that disagree with the shape, and
//    byte ranges that leave the data section, overlap, leave a gap or leave
//    trailing bytes.
#include "model_store/safetensors.h"

#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/matchers.h"

namespace sparse {
namespace {

using Json = nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kName[] = "model.safetensors";

absl::Span<const uint8_t> Bytes(const std::string& s) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

// The 8-byte little-endian encoding of `n`, written byte by byte so that it
// does not rely on the code under test (or the host's byte order).
std::string LittleEndian64(uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out;
}

uint64_t ReadLittleEndian64(const std::string& s) {
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t{static_cast<uint8_t>(s[i])} << (8 * i);
  return n;
}

// A file with the given header text and data section.
std::string FileOf(const std::string& header, const std::string& data) {
  return LittleEndian64(header.size()) + header + data;
}
std::string FileOf(const Json& header, const std::string& data) {
  return FileOf(header.dump(), data);
}

// A header entry for one tensor.
Json Entry(const std::string& dtype, const std::vector<int64_t>& shape, uint64_t begin,
           uint64_t end) {
  return Json{{"dtype", dtype}, {"shape", shape}, {"data_offsets", {begin, end}}};
}

// Parses `file` and expects INVALID_ARGUMENT whose message starts with the
// display name and holds every one of `parts`.
void ExpectRefused(const std::string& file, const std::vector<std::string>& parts) {
  const absl::StatusOr<SafetensorsContents> parsed = ParseSafetensors(Bytes(file), kName);
  ASSERT_FALSE(parsed.ok()) << "accepted a malformed file";
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << parsed.status();
  const std::string message(parsed.status().message());
  EXPECT_THAT(message, StartsWith(std::string(kName) + ": "));
  for (const std::string& part : parts) EXPECT_THAT(message, HasSubstr(part));
}

std::string AsString(absl::Span<const uint8_t> bytes) {
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

TEST(SafetensorsTest, RoundTripKeepsMetadataNamesDtypesShapesAndBytes) {
  const std::vector<float> weights = {1.5f, -2.25f, 0.0f, 3.0e-8f, 1.0e30f, -7.0f};
  const std::vector<uint64_t> keys = {0, 1, uint64_t{1} << 63, ~uint64_t{0}};
  const std::vector<int64_t> signed_values = {INT64_MIN, -1};
  const float scalar = 42.0f;
  const std::map<std::string, std::string> metadata = {
      {"format_version", "1"}, {"kind", "lsh_table"}, {"info.note", "a \"quoted\" value"}};
  // Names deliberately not in alphabetical order: the data keeps this order
  // while the JSON header sorts its keys.
  const std::vector<TensorToWrite> tensors = {
      {.name = "z.weight", .dtype = DType::kF32, .shape = {2, 3}, .data = weights.data()},
      {.name = "a.keys", .dtype = DType::kU64, .shape = {4}, .data = keys.data()},
      {.name = "m.signed", .dtype = DType::kI64, .shape = {1, 2}, .data = signed_values.data()},
      {.name = "scalar", .dtype = DType::kF32, .shape = {}, .data = &scalar},
      {.name = "empty", .dtype = DType::kF32, .shape = {0, 5}, .data = weights.data()},
  };
  const std::string file = SerializeSafetensors(metadata, tensors);

  ASSERT_OK_AND_ASSIGN(const SafetensorsContents parsed, ParseSafetensors(Bytes(file), kName));
  EXPECT_EQ(parsed.metadata, metadata);
  ASSERT_EQ(parsed.tensors.size(), tensors.size());

  const TensorView& z = parsed.tensors.at("z.weight");
  EXPECT_EQ(z.dtype, DType::kF32);
  EXPECT_THAT(z.shape, ElementsAre(2, 3));
  EXPECT_EQ(z.elements, 6);
  ASSERT_EQ(z.bytes.size(), 6 * sizeof(float));
  EXPECT_EQ(std::memcmp(z.bytes.data(), weights.data(), z.bytes.size()), 0);

  const TensorView& a = parsed.tensors.at("a.keys");
  EXPECT_EQ(a.dtype, DType::kU64);
  EXPECT_THAT(a.shape, ElementsAre(4));
  EXPECT_EQ(a.elements, 4);
  ASSERT_EQ(a.bytes.size(), 4 * sizeof(uint64_t));
  EXPECT_EQ(std::memcmp(a.bytes.data(), keys.data(), a.bytes.size()), 0);

  const TensorView& m = parsed.tensors.at("m.signed");
  EXPECT_EQ(m.dtype, DType::kI64);
  EXPECT_THAT(m.shape, ElementsAre(1, 2));
  EXPECT_EQ(m.elements, 2);
  ASSERT_EQ(m.bytes.size(), 2 * sizeof(int64_t));
  EXPECT_EQ(std::memcmp(m.bytes.data(), signed_values.data(), m.bytes.size()), 0);

  const TensorView& s = parsed.tensors.at("scalar");
  EXPECT_TRUE(s.shape.empty());
  EXPECT_EQ(s.elements, 1);  // the empty product
  ASSERT_EQ(s.bytes.size(), sizeof(float));
  EXPECT_EQ(std::memcmp(s.bytes.data(), &scalar, sizeof(float)), 0);

  const TensorView& e = parsed.tensors.at("empty");
  EXPECT_THAT(e.shape, ElementsAre(0, 5));
  EXPECT_EQ(e.elements, 0);
  EXPECT_TRUE(e.bytes.empty());

  // The views point into the buffer that was parsed, not into a copy.
  const uint8_t* begin = reinterpret_cast<const uint8_t*>(file.data());
  EXPECT_GE(z.bytes.data(), begin);
  EXPECT_LE(z.bytes.data() + z.bytes.size(), begin + file.size());
}

TEST(SafetensorsTest, NoMetadataAndNoTensorsRoundTrip) {
  const std::string file = SerializeSafetensors({}, {});
  ASSERT_OK_AND_ASSIGN(const SafetensorsContents parsed, ParseSafetensors(Bytes(file), kName));
  EXPECT_TRUE(parsed.metadata.empty());
  EXPECT_TRUE(parsed.tensors.empty());
  // No "__metadata__" key is written when there is none.
  const uint64_t n = ReadLittleEndian64(file);
  EXPECT_FALSE(Json::parse(file.substr(8, n)).contains("__metadata__"));
}

TEST(SafetensorsTest, LayoutIsLittleEndianLengthJsonHeaderThenAlignedData) {
  const std::vector<float> values = {1.0f, 2.0f, 3.0f};  // 12 bytes
  const std::vector<uint64_t> keys = {7, 9};               // 16 bytes
  const std::string file = SerializeSafetensors(
      {{"kind", "dense"}},
      {{.name = "b", .dtype = DType::kF32, .shape = {3}, .data = values.data()},
       {.name = "a", .dtype = DType::kU64, .shape = {2}, .data = keys.data()}});

  ASSERT_GE(file.size(), 8u);
  const uint64_t n = ReadLittleEndian64(file);
  // The header length is the bytes between the length and the data.
  ASSERT_EQ(file.size(), 8 + n + 12 + 16);
  // Padded with spaces so that the data section starts 8-byte aligned.
  EXPECT_EQ((8 + n) % 8, 0u);
  const std::string header_text = file.substr(8, n);
  const size_t close = header_text.rfind('}');
  ASSERT_NE(close, std::string::npos);
  EXPECT_EQ(header_text.substr(close + 1), std::string(header_text.size() - close - 1, ' '));

  const Json header = Json::parse(header_text);
  EXPECT_EQ(header["__metadata__"], (Json{{"kind", "dense"}}));
  EXPECT_EQ(header["b"], Entry("F32", {3}, 0, 12));
  EXPECT_EQ(header["a"], Entry("U64", {2}, 12, 28));

  // The data section is the tensors' raw bytes in the order given.
  std::string data(reinterpret_cast<const char*>(values.data()), 12);
  data.append(reinterpret_cast<const char*>(keys.data()), 16);
  EXPECT_EQ(file.substr(8 + n), data);
}

TEST(SafetensorsTest, AcceptsAHandWrittenFileWithRangesInAnyKeyOrder) {
  // What another writer (safetensors.torch) may produce: no padding, and the
  // data of "a" after that of "b".
  const std::string data = LittleEndian64(5) + std::string("\x00\x00\x80\x3f", 4);  // 5, 1.0f
  const Json header = {{"a", Entry("F32", {1}, 8, 12)}, {"b", Entry("I64", {1}, 0, 8)}};
  const std::string file = FileOf(header, data);
  ASSERT_OK_AND_ASSIGN(const SafetensorsContents parsed, ParseSafetensors(Bytes(file), kName));
  EXPECT_EQ(AsString(parsed.tensors.at("a").bytes), data.substr(8, 4));
  EXPECT_EQ(AsString(parsed.tensors.at("b").bytes), data.substr(0, 8));
  float a = 0;
  std::memcpy(&a, parsed.tensors.at("a").bytes.data(), 4);
  EXPECT_EQ(a, 1.0f);
}

TEST(SafetensorsTest, RefusesAFileShorterThanTheLength) {
  for (size_t size : {size_t{0}, size_t{1}, size_t{7}}) {
    SCOPED_TRACE(size);
    ExpectRefused(std::string(size, '\0'), {"truncated"});
  }
}

TEST(SafetensorsTest, RefusesAHeaderLengthPastTheEndOfTheFile) {
  const std::string header = Json{{"t", Entry("F32", {1}, 0, 4)}}.dump();
  const std::string data(4, '\0');
  // One byte more than what follows the length.
  ExpectRefused(LittleEndian64(header.size() + data.size() + 1) + header + data,
                {"truncated", "header length"});
  // The whole header is there but cut short by one byte.
  ExpectRefused(LittleEndian64(header.size()) + header.substr(0, header.size() - 1),
                {"truncated"});
  // A length near 2^64 must not wrap around.
  ExpectRefused(LittleEndian64(~uint64_t{0}) + header + data, {"header length"});
}

TEST(SafetensorsTest, RefusesAHeaderOverTheLimitBeforeReadingIt) {
  // The length alone is enough: the limit is checked before the bytes.
  ExpectRefused(LittleEndian64(kMaxSafetensorsHeaderBytes + 1) + "{}",
                {"header length", "exceeds the limit"});
}

TEST(SafetensorsTest, RefusesAHeaderThatIsNotAJsonObject) {
  ExpectRefused(FileOf(std::string("{\"t\": "), ""), {"header", "not valid JSON"});
  ExpectRefused(FileOf(std::string("[1, 2]"), ""), {"header is not a JSON object"});
  // Nested deeper than the limit: refused, not a stack overflow.
  const std::string deep = "{\"t\": " + std::string(100000, '[') + std::string(100000, ']') + "}";
  ExpectRefused(FileOf(deep, ""), {"header", "deeper than"});
}

TEST(SafetensorsTest, RefusesMetadataThatIsNotStringToString) {
  ExpectRefused(FileOf(Json{{"__metadata__", {{"format_version", 1}}}}, ""),
                {"__metadata__.format_version is not a string"});
  ExpectRefused(FileOf(Json{{"__metadata__", Json::array({"a"})}}, ""),
                {"__metadata__ is not an object"});
}

TEST(SafetensorsTest, RefusesATensorEntryMissingAField) {
  ExpectRefused(FileOf(Json{{"t", 3}}, ""), {"tensor 't' is not an object"});
  ExpectRefused(FileOf(Json{{"t", {{"shape", {1}}, {"data_offsets", {0, 4}}}}}, std::string(4, '\0')),
                {"tensor 't'", "dtype"});
  ExpectRefused(FileOf(Json{{"t", {{"dtype", "F32"}, {"data_offsets", {0, 4}}}}}, std::string(4, '\0')),
                {"tensor 't'", "has no shape"});
  ExpectRefused(FileOf(Json{{"t", {{"dtype", "F32"}, {"shape", {1}}}}}, std::string(4, '\0')),
                {"tensor 't'", "has no data_offsets"});
}

TEST(SafetensorsTest, RefusesAnUnknownDtypeNamingTheTensorAndTheDtype) {
  ExpectRefused(FileOf(Json{{"hash.offset", Entry("F16", {2}, 0, 4)}}, std::string(4, '\0')),
                {"tensor 'hash.offset'", "unsupported dtype 'F16'"});
  // Dtype names are case-sensitive, as in safetensors.
  ExpectRefused(FileOf(Json{{"t", Entry("f32", {1}, 0, 4)}}, std::string(4, '\0')),
                {"tensor 't'", "unsupported dtype 'f32'"});
}

TEST(SafetensorsTest, RefusesAShapeThatIsNotNonNegativeIntegers) {
  Json negative = Entry("F32", {1}, 0, 4);
  negative["shape"] = Json::array({-1});
  ExpectRefused(FileOf(Json{{"t", negative}}, std::string(4, '\0')), {"tensor 't'", "shape"});
  Json fractional = Entry("F32", {1}, 0, 4);
  fractional["shape"] = Json::array({1.5});
  ExpectRefused(FileOf(Json{{"t", fractional}}, std::string(4, '\0')), {"tensor 't'", "shape"});
  Json not_array = Entry("F32", {1}, 0, 4);
  not_array["shape"] = 1;
  ExpectRefused(FileOf(Json{{"t", not_array}}, std::string(4, '\0')),
                {"tensor 't'", "shape is not an array"});
}

TEST(SafetensorsTest, RefusesAShapeWhoseByteSizeOverflows) {
  // 2^62 x 4 elements, 4 bytes each: the product overflows int64.
  ExpectRefused(
      FileOf(Json{{"t", Entry("F32", {int64_t{1} << 62, 4}, 0, 4)}}, std::string(4, '\0')),
      {"tensor 't'", "overflows"});
}

TEST(SafetensorsTest, RefusesOffsetsWhoseSpanDoesNotMatchDtypeAndShape) {
  // [3] F32 needs 12 bytes; the offsets give 8.
  ExpectRefused(FileOf(Json{{"bottom.bias", Entry("F32", {3}, 0, 8)}}, std::string(8, '\0')),
                {"tensor 'bottom.bias'", "span 8 bytes", "need 12"});
  // The same span with an 8-byte dtype is also wrong.
  ExpectRefused(FileOf(Json{{"k", Entry("U64", {3}, 0, 12)}}, std::string(12, '\0')),
                {"tensor 'k'", "span 12 bytes", "need 24"});
}

TEST(SafetensorsTest, RefusesMalformedDataOffsets) {
  ExpectRefused(FileOf(Json{{"t", Entry("F32", {0}, 4, 0)}}, std::string(4, '\0')),
                {"tensor 't'", "begin <= end"});
  Json three = Entry("F32", {1}, 0, 4);
  three["data_offsets"] = Json::array({0, 4, 8});
  ExpectRefused(FileOf(Json{{"t", three}}, std::string(4, '\0')),
                {"tensor 't'", "data_offsets"});
  Json negative = Entry("F32", {1}, 0, 4);
  negative["data_offsets"] = Json::array({-4, 0});
  ExpectRefused(FileOf(Json{{"t", negative}}, std::string(4, '\0')),
                {"tensor 't'", "data_offsets"});
}

TEST(SafetensorsTest, RefusesARangePastTheDataSection) {
  // Consistent with its shape, but the data section holds 8 bytes, not 16.
  ExpectRefused(FileOf(Json{{"alpha", Entry("F32", {4}, 0, 16)}}, std::string(8, '\0')),
                {"tensor 'alpha'", "past the data section of 8 bytes"});
  // A valid file with its last byte cut off.
  const std::vector<float> values = {1, 2, 3, 4};
  const std::string file = SerializeSafetensors(
      {}, {{.name = "alpha", .dtype = DType::kF32, .shape = {4}, .data = values.data()}});
  ExpectRefused(file.substr(0, file.size() - 1), {"tensor 'alpha'", "past the data section"});
  // An offset far beyond the file must not wrap around.
  ExpectRefused(FileOf(Json{{"t", Entry("F32", {1}, (uint64_t{1} << 62), (uint64_t{1} << 62) + 4)}},
                       std::string(4, '\0')),
                {"tensor 't'", "past the data section"});
}

TEST(SafetensorsTest, RefusesOverlappingRanges) {
  const Json header = {{"a", Entry("F32", {2}, 0, 8)}, {"b", Entry("F32", {2}, 4, 12)}};
  ExpectRefused(FileOf(header, std::string(12, '\0')), {"tensor 'b'", "overlaps"});
  // Two tensors sharing the very same bytes.
  const Json same = {{"a", Entry("F32", {2}, 0, 8)}, {"b", Entry("F32", {2}, 0, 8)}};
  ExpectRefused(FileOf(same, std::string(8, '\0')), {"overlaps"});
}

TEST(SafetensorsTest, RefusesAGapBetweenRanges) {
  const Json header = {{"a", Entry("F32", {2}, 0, 8)}, {"b", Entry("F32", {2}, 12, 20)}};
  ExpectRefused(FileOf(header, std::string(20, '\0')), {"gap of 4 bytes before tensor 'b'"});
  // Data not starting at offset 0 is a gap too.
  ExpectRefused(FileOf(Json{{"a", Entry("F32", {1}, 4, 8)}}, std::string(8, '\0')),
                {"gap of 4 bytes before tensor 'a'"});
}

TEST(SafetensorsTest, RefusesTrailingBytesAfterTheLastTensor) {
  const std::vector<float> values = {1, 2};
  const std::string file = SerializeSafetensors(
      {}, {{.name = "t", .dtype = DType::kF32, .shape = {2}, .data = values.data()}});
  ASSERT_OK(ParseSafetensors(Bytes(file), kName).status());
  ExpectRefused(file + std::string(8, '\0'), {"8 trailing bytes"});
  // A header with no tensors and a non-empty data section.
  ExpectRefused(FileOf(std::string("{}"), std::string(3, 'x')), {"3 trailing bytes"});
}

TEST(SafetensorsTest, DTypeNamesAndSizes) {
  EXPECT_EQ(DTypeName(DType::kF32), "F32");
  EXPECT_EQ(DTypeName(DType::kU64), "U64");
  EXPECT_EQ(DTypeName(DType::kI64), "I64");
  EXPECT_EQ(DTypeSize(DType::kF32), 4u);
  EXPECT_EQ(DTypeName(DType::kBF16), "BF16");
  EXPECT_EQ(DTypeName(DType::kI8), "I8");
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kI8), 1u);
  EXPECT_EQ(DTypeSize(DType::kU64), 8u);
  EXPECT_EQ(DTypeSize(DType::kI64), 8u);
}

}  // namespace
}  // namespace sparse
