#include "model_store/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "model_store/json_util.h"
#include "nlohmann/json.hpp"

namespace sparse {
namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; this build assumes a little-endian host");

using Json = nlohmann::json;

absl::Status Corrupt(absl::string_view file, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": ", what));
}

absl::StatusOr<DType> ParseDType(const std::string& name) {
  if (name == "F32") return DType::kF32;
  if (name == "U64") return DType::kU64;
  if (name == "I64") return DType::kI64;
  if (name == "BF16") return DType::kBF16;
  if (name == "I8") return DType::kI8;
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported dtype '", name, "' (expected F32, U64, I64, BF16 or I8)"));
}

// Reads a JSON array of non-negative integers that fit in int64.
absl::StatusOr<std::vector<int64_t>> ReadIndexArray(const Json& j, absl::string_view what) {
  if (!j.is_array()) return absl::InvalidArgumentError(absl::StrCat(what, " is not an array"));
  std::vector<int64_t> out;
  for (const Json& v : j) {
    if (!v.is_number_unsigned() || v.get<uint64_t>() > uint64_t{INT64_MAX}) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " must hold non-negative integers, got ", DescribeJson(v)));
    }
    out.push_back(static_cast<int64_t>(v.get<uint64_t>()));
  }
  return out;
}

uint64_t ByteSize(const TensorToWrite& t) {
  uint64_t bytes = DTypeSize(t.dtype);
  for (int64_t dim : t.shape) bytes *= static_cast<uint64_t>(dim);
  return bytes;
}

// One tensor's header entry `value`, named `key`: its dtype, shape and byte
// range, checked against each other and the data section's `data_size`.
absl::StatusOr<TensorView> ParseTensorEntry(const std::string& key, const Json& value,
                                            uint64_t data_size, absl::string_view name) {
  const std::string field = absl::StrCat("tensor '", key, "'");
  if (!value.is_object()) return Corrupt(name, absl::StrCat(field, " is not an object"));
  if (!value.contains("dtype") || !value["dtype"].is_string()) {
    return Corrupt(name, absl::StrCat(field, " has no string dtype"));
  }
  if (!value.contains("shape")) return Corrupt(name, absl::StrCat(field, " has no shape"));
  if (!value.contains("data_offsets")) {
    return Corrupt(name, absl::StrCat(field, " has no data_offsets"));
  }
  TensorView view;
  absl::StatusOr<DType> dtype = ParseDType(value["dtype"].get<std::string>());
  if (!dtype.ok()) return Corrupt(name, absl::StrCat(field, ": ", dtype.status().message()));
  view.dtype = *dtype;
  absl::StatusOr<std::vector<int64_t>> shape = ReadIndexArray(value["shape"], "shape");
  if (!shape.ok()) return Corrupt(name, absl::StrCat(field, ": ", shape.status().message()));
  view.shape = *std::move(shape);
  int64_t bytes = static_cast<int64_t>(DTypeSize(view.dtype));
  int64_t elements = 1;
  for (int64_t dim : view.shape) {
    if (__builtin_mul_overflow(elements, dim, &elements) ||
        __builtin_mul_overflow(bytes, dim, &bytes)) {
      return Corrupt(name, absl::StrCat(field, ": shape product overflows"));
    }
  }
  view.elements = elements;
  absl::StatusOr<std::vector<int64_t>> offsets =
      ReadIndexArray(value["data_offsets"], "data_offsets");
  if (!offsets.ok()) return Corrupt(name, absl::StrCat(field, ": ", offsets.status().message()));
  if (offsets->size() != 2 || (*offsets)[0] > (*offsets)[1]) {
    return Corrupt(name, absl::StrCat(field, ": data_offsets must be [begin, end] with begin <= end"));
  }
  const int64_t begin = (*offsets)[0], end = (*offsets)[1];
  if (end - begin != bytes) {
    return Corrupt(name, absl::StrCat(field, ": data_offsets span ", end - begin,
                                      " bytes but dtype and shape need ", bytes));
  }
  if (static_cast<uint64_t>(end) > data_size) {
    return Corrupt(name, absl::StrCat(field, ": data_offsets end ", end,
                                      " is past the data section of ", data_size, " bytes"));
  }
  view.offset = static_cast<uint64_t>(begin);
  view.byte_size = static_cast<uint64_t>(end - begin);
  return view;
}

// Byte ranges [begin, end) of the tensors must tile the data section: in
// order, no overlap, no gap.
absl::Status CheckTiling(std::vector<std::tuple<int64_t, int64_t, std::string>> ranges,
                         uint64_t data_size, absl::string_view name) {
  std::sort(ranges.begin(), ranges.end());
  int64_t cursor = 0;
  for (const auto& [begin, end, tensor] : ranges) {
    if (begin < cursor) {
      return Corrupt(name, absl::StrCat("tensor '", tensor, "' overlaps the previous tensor"));
    }
    if (begin > cursor) {
      return Corrupt(name, absl::StrCat("gap of ", begin - cursor, " bytes before tensor '",
                                        tensor, "'"));
    }
    cursor = end;
  }
  if (static_cast<uint64_t>(cursor) != data_size) {
    return Corrupt(name, absl::StrCat(data_size - cursor,
                                      " trailing bytes after the last tensor"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "F32";
    case DType::kU64: return "U64";
    case DType::kI64: return "I64";
    case DType::kBF16: return "BF16";
    case DType::kI8: return "I8";
  }
  return "?";
}

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kU64:
    case DType::kI64: return 8;
    case DType::kBF16: return 2;
    case DType::kI8: return 1;
  }
  return 8;
}

absl::StatusOr<uint64_t> SafetensorsHeaderLength(absl::Span<const uint8_t> first8,
                                                 uint64_t file_size, absl::string_view name) {
  if (file_size < 8 || first8.size() < 8) {
    return Corrupt(name, absl::StrCat("truncated: ", file_size,
                                      " bytes, shorter than the 8-byte header length"));
  }
  uint64_t header_len = 0;
  std::memcpy(&header_len, first8.data(), 8);
  if (header_len > kMaxSafetensorsHeaderBytes) {
    return Corrupt(name, absl::StrCat("header length ", header_len, " exceeds the limit of ",
                                      kMaxSafetensorsHeaderBytes, " bytes"));
  }
  if (header_len > file_size - 8) {
    return Corrupt(name, absl::StrCat("truncated: header length ", header_len, " but only ",
                                      file_size - 8, " bytes follow"));
  }
  return header_len;
}

absl::StatusOr<SafetensorsContents> ParseSafetensors(absl::Span<const uint8_t> file,
                                                     absl::string_view name) {
  absl::StatusOr<uint64_t> header_len = SafetensorsHeaderLength(file, file.size(), name);
  if (!header_len.ok()) return header_len.status();
  const absl::Span<const uint8_t> data = file.subspan(8 + *header_len);
  absl::StatusOr<SafetensorsContents> contents = ParseSafetensorsHeader(
      absl::string_view(reinterpret_cast<const char*>(file.data() + 8), *header_len),
      data.size(), name);
  if (!contents.ok()) return contents.status();
  for (auto& [key, view] : contents->tensors) view.bytes = data.subspan(view.offset, view.byte_size);
  return contents;
}

absl::StatusOr<SafetensorsContents> ParseSafetensorsHeader(absl::string_view header_json,
                                                           uint64_t data_size,
                                                           absl::string_view name) {
  absl::StatusOr<Json> parsed = ParseJsonBounded(header_json);
  if (!parsed.ok()) return Corrupt(name, absl::StrCat("header ", parsed.status().message()));
  const Json& header = *parsed;
  if (!header.is_object()) return Corrupt(name, "header is not a JSON object");

  SafetensorsContents contents;
  std::vector<std::tuple<int64_t, int64_t, std::string>> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& key = it.key();
    const Json& value = it.value();
    if (key == "__metadata__") {
      if (!value.is_object()) return Corrupt(name, "__metadata__ is not an object");
      for (auto m = value.begin(); m != value.end(); ++m) {
        if (!m.value().is_string()) {
          return Corrupt(name, absl::StrCat("__metadata__.", m.key(), " is not a string"));
        }
        contents.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    ASSIGN_OR_RETURN(TensorView view, ParseTensorEntry(key, value, data_size, name));
    const int64_t begin = static_cast<int64_t>(view.offset);
    ranges.emplace_back(begin, begin + static_cast<int64_t>(view.byte_size), key);
    contents.tensors.emplace(key, std::move(view));
  }
  RETURN_IF_ERROR(CheckTiling(std::move(ranges), data_size, name));
  return contents;
}

std::string SerializeSafetensors(const std::map<std::string, std::string>& metadata,
                                 const std::vector<TensorToWrite>& tensors) {
  Json header = Json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    const uint64_t bytes = ByteSize(t);
    header[t.name] = {{"dtype", std::string(DTypeName(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string json = header.dump();
  while ((8 + json.size()) % 8 != 0) json.push_back(' ');
  std::string out;
  out.reserve(8 + json.size() + offset);
  const uint64_t len = json.size();
  out.append(reinterpret_cast<const char*>(&len), 8);
  out.append(json);
  for (const TensorToWrite& t : tensors) out.append(static_cast<const char*>(t.data), ByteSize(t));
  return out;
}

}  // namespace sparse
