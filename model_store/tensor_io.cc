#include "model_store/tensor_io.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "model_store/checkpoint.h"

namespace sparse {

// ---- Metadata ---------------------------------------------------------------

absl::Status WithFile(absl::string_view file, const absl::Status& s) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(file, ": ", s.message()));
}

std::string FloatToString(float v) {
  char buf[32];
  const auto result = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, result.ptr);
}

std::string MetadataValue(const Metadata& meta, const std::string& key) {
  auto it = meta.find(key);
  return it == meta.end() ? std::string() : it->second;
}

int64_t PositiveMetadataInt(const Metadata& meta, const std::string& key) {
  int64_t v = 0;
  auto it = meta.find(key);
  return it != meta.end() && absl::SimpleAtoi(it->second, &v) && v > 0 ? v : 0;
}

absl::StatusOr<std::string> MetadataReader::String(const std::string& key) {
  auto it = meta_.find(key);
  if (it == meta_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file_, ": __metadata__ is missing '", key, "'"));
  }
  used_.push_back(key);
  return it->second;
}

absl::StatusOr<int64_t> MetadataReader::Int(const std::string& key) {
  ASSIGN_OR_RETURN(std::string s, String(key));
  int64_t v = 0;
  if (!absl::SimpleAtoi(s, &v)) return Bad(key, s, "an integer");
  return v;
}

absl::StatusOr<int64_t> MetadataReader::Dim(const std::string& key) {
  ASSIGN_OR_RETURN(int64_t v, Int(key));
  if (v < 0 || v > (int64_t{1} << 40)) {
    return absl::InvalidArgumentError(
        absl::StrCat(file_, ": __metadata__ '", key, "' out of range: ", v));
  }
  return v;
}

absl::StatusOr<uint64_t> MetadataReader::Uint(const std::string& key) {
  ASSIGN_OR_RETURN(std::string s, String(key));
  uint64_t v = 0;
  if (!absl::SimpleAtoi(s, &v)) return Bad(key, s, "a non-negative integer");
  return v;
}

absl::StatusOr<float> MetadataReader::Float(const std::string& key) {
  ASSIGN_OR_RETURN(std::string s, String(key));
  float v = 0;
  if (!absl::SimpleAtof(s, &v)) return Bad(key, s, "a number");
  return v;
}

absl::Status MetadataReader::Finish(std::map<std::string, std::string>* info) {
  for (const auto& [key, value] : meta_) {
    if (absl::StartsWith(key, kInfoPrefix)) {
      if (info != nullptr) (*info)[key.substr(sizeof(kInfoPrefix) - 1)] = value;
    } else if (std::find(used_.begin(), used_.end(), key) == used_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(file_, ": unknown __metadata__ key '", key, "'"));
    }
  }
  return absl::OkStatus();
}

absl::Status MetadataReader::Bad(const std::string& key, const std::string& value,
                                 absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(file_, ": __metadata__ '", key,
                                                 "' must be ", what, ", got '", value, "'"));
}

absl::Status CheckFormatVersion(MetadataReader& meta) {
  ASSIGN_OR_RETURN(int64_t version, meta.Int("format_version"));
  if (version != kCheckpointFormatVersion) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported format_version ", version,
                                                   " (this build reads ",
                                                   kCheckpointFormatVersion, ")"));
  }
  return absl::OkStatus();
}

// ---- Reading tensors --------------------------------------------------------

absl::StatusOr<SafetensorsContents> ReadCheckedHeader(
    const RandomAccessFile& file, uint64_t header_bytes, const std::string& header_sha256,
    const std::map<std::string, TensorHashes>& hashes, absl::string_view name) {
  uint8_t first8[8] = {};
  if (file.size() >= 8) RETURN_IF_ERROR(file.ReadAt(0, absl::MakeSpan(first8)));
  ASSIGN_OR_RETURN(const uint64_t header_len, SafetensorsHeaderLength(first8, file.size(), name));
  if (8 + header_len != header_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": header of ", 8 + header_len,
                                                   " bytes, manifest says ", header_bytes));
  }
  std::string header(8 + header_len, '\0');
  auto* bytes = reinterpret_cast<uint8_t*>(header.data());
  RETURN_IF_ERROR(file.ReadAt(0, absl::MakeSpan(bytes, header.size())));
  const std::string sha = Sha256Hex(absl::MakeConstSpan(bytes, header.size()));
  if (sha != header_sha256) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": header SHA-256 ", sha, " does not match the manifest's ", header_sha256));
  }
  ASSIGN_OR_RETURN(SafetensorsContents contents,
                   ParseSafetensorsHeader(absl::string_view(header).substr(8),
                                          file.size() - 8 - header_len, name));
  for (const auto& [tensor, view] : contents.tensors) {
    if (!hashes.contains(tensor)) {
      return absl::InvalidArgumentError(
          absl::StrCat(kManifestFile, ": lists no sha256 for tensor '", tensor, "' of ", name));
    }
  }
  for (const auto& [tensor, sums] : hashes) {
    if (!contents.tensors.contains(tensor)) {
      return absl::InvalidArgumentError(absl::StrCat(
          kManifestFile, ": lists tensor '", tensor, "', which ", name, " does not hold"));
    }
  }
  return contents;
}

// Where the selected units of a tensor go in the output: copies of runs of
// units from a source (the whole tensor, or one manifest part of it).
struct TensorReader::Placement {
  struct Copy {
    int64_t from, count, to;  // units
  };

  Placement(const Selection& select, const AroundAxis& around, uint8_t* dst)
      : select(select), outer(around.outer), units(around.units), inner(around.inner),
        selected(select.Units()), positions(select.ranges.size()), dst(dst) {
    // Where each selected range starts among the selected units.
    const std::vector<UnitRange>& ranges = select.ranges;
    for (size_t i = 1; i < ranges.size(); ++i) positions[i] = positions[i - 1] + ranges[i - 1].size();
  }

  // The copies that place units [u0, u1) (in a source, from u0) among the
  // selected ones: the ranges overlapping it, found by binary search.
  std::vector<Copy> CopiesOf(int64_t u0, int64_t u1) const {
    const std::vector<UnitRange>& ranges = select.ranges;
    std::vector<Copy> copies;
    auto r = std::upper_bound(ranges.begin(), ranges.end(), u0,
                              [](int64_t u, const UnitRange& range) { return u < range.end; });
    for (; r != ranges.end() && r->begin < u1; ++r) {
      const int64_t b = std::max(r->begin, u0), e = std::min(r->end, u1);
      if (b < e) copies.push_back({b - u0, e - b, positions[r - ranges.begin()] + (b - r->begin)});
    }
    return copies;
  }

  // Places the units of outer index `o` that `copies` name, from `src`.
  void Place(int64_t o, const std::vector<Copy>& copies, const uint8_t* src) const {
    for (const Copy& c : copies) {
      std::memcpy(dst + (o * selected + c.to) * inner, src + c.from * inner, c.count * inner);
    }
  }

  // Places every selected unit from `src`, the whole tensor.
  void PlaceAll(const uint8_t* src) const {
    const std::vector<Copy> copies = CopiesOf(0, units);
    for (int64_t o = 0; o < outer; ++o) Place(o, copies, src + o * units * inner);
  }

  const Selection& select;
  // The tensor as [outer, units, inner bytes] around the selection's axis.
  const int64_t outer, units, inner;
  const int64_t selected;
  std::vector<int64_t> positions;
  uint8_t* const dst;
};

absl::Status TensorReader::Place(const std::string& name, const TensorView& view,
                                 const std::vector<int64_t>& shape, int64_t element_bytes,
                                 const Selection& select, uint8_t* dst) {
  const Placement placement(select, AroundAxis(shape, select.axis, element_bytes), dst);
  if (ranged_ != nullptr) return PlaceRanged(name, view, shape, element_bytes, placement);
  placement.PlaceAll(view.bytes.data());
  return absl::OkStatus();
}

absl::Status TensorReader::PlaceRanged(const std::string& name, const TensorView& view,
                                       const std::vector<int64_t>& shape, int64_t element_bytes,
                                       const Placement& placement) {
  auto it = ranged_->hashes->find(name);
  if (it == ranged_->hashes->end()) {
    return absl::InvalidArgumentError(
        absl::StrCat(kManifestFile, ": lists no sha256 for tensor '", name, "' of ", file_));
  }
  const TensorHashes& hashes = it->second;
  const int64_t parts = static_cast<int64_t>(hashes.sha256.size());
  const int hash_axis = parts == 1 ? 0 : hashes.axis;
  if (hash_axis >= static_cast<int>(shape.size()) && !shape.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(kManifestFile, ": tensor '", name,
                                                   "' has no axis ", hash_axis));
  }
  if (view.byte_size == 0) {
    // Nothing to read: its one sum is the empty input's.
    if (parts != 1 || hashes.sha256[0] != Sha256Hex({})) {
      return absl::InvalidArgumentError(absl::StrCat(
          kManifestFile, ": tensor '", name, "' of ", file_,
          " holds no bytes; its sha256 must be one sum, of nothing"));
    }
    return absl::OkStatus();
  }
  const AroundAxis part_around(shape, hash_axis, element_bytes);
  const int64_t axis_units = part_around.units;
  if (parts < 1 || parts > axis_units || axis_units % parts != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(kManifestFile, ": tensor '", name, "' has ", parts, " sha256 parts, which ",
                     "do not divide its ", axis_units, " units along axis ", hash_axis));
  }
  const int64_t part_units = axis_units / parts;
  const int64_t part_outer = part_around.outer, part_inner = part_around.inner;
  const int64_t run = part_units * part_inner;  // bytes of a part per outer index
  // By part: the selection cuts the axis the parts cut, so only the parts
  // holding selected units are read. Otherwise the whole tensor is.
  const bool by_part = parts > 1 && hash_axis == placement.select.axis;
  std::vector<uint8_t> buffer(static_cast<size_t>(by_part ? part_outer * run : view.byte_size));
  for (int64_t p = 0; p < parts; ++p) {
    const int64_t u0 = p * part_units;
    std::vector<Placement::Copy> copies;
    if (by_part) {
      copies = placement.CopiesOf(u0, u0 + part_units);
      if (copies.empty()) continue;  // no selected unit in this part
    }
    Sha256 sha;
    for (int64_t o = 0; o < part_outer; ++o) {
      uint8_t* target = by_part ? buffer.data() + o * run
                                : buffer.data() + (o * axis_units + u0) * part_inner;
      RETURN_IF_ERROR(ranged_->file->ReadAt(
          ranged_->data_start + view.offset + (o * axis_units + u0) * part_inner,
          absl::MakeSpan(target, run)));
      sha.Update(absl::MakeConstSpan(target, run));
    }
    bytes_read_ += part_outer * run;
    const std::string digest = sha.HexDigest();
    if (digest != hashes.sha256[p]) {
      return absl::InvalidArgumentError(absl::StrCat(
          file_, ": tensor '", name, "'", parts > 1 ? absl::StrCat(" part ", p) : "",
          " has SHA-256 ", digest, ", the manifest says ", hashes.sha256[p]));
    }
    if (by_part) {
      for (int64_t o = 0; o < placement.outer; ++o) placement.Place(o, copies, buffer.data() + o * run);
    }
  }
  if (!by_part) placement.PlaceAll(buffer.data());
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> TensorReader::Matrix(const std::string& name, int64_t rows,
                                                        int64_t cols, const Selection* select) {
  auto it = contents_.tensors.find(name);
  const DType dtype = it == contents_.tensors.end() ? DType::kF32 : it->second.dtype;
  if (dtype == DType::kBF16) {
    ASSIGN_OR_RETURN(std::vector<uint16_t> raw,
                     Get<uint16_t>(name, DType::kBF16, {rows, cols}, select));
    std::vector<float> out(raw.size());
    for (size_t i = 0; i < raw.size(); ++i) out[i] = Bf16ToFloat(raw[i]);
    stored_ = Precision::kBf16;
    return out;
  }
  if (dtype == DType::kI8) {
    ASSIGN_OR_RETURN(std::vector<int8_t> q, Get<int8_t>(name, DType::kI8, {rows, cols}, select));
    // One scale per row: the selected ones when rows are selected.
    const bool by_row = select != nullptr && select->axis == 0;
    ASSIGN_OR_RETURN(std::vector<float> scale,
                     F32(name + ".scale", {rows}, by_row ? select : nullptr));
    const int64_t out_rows = by_row ? select->Units() : rows;
    const int64_t out_cols = static_cast<int64_t>(q.size()) / std::max<int64_t>(out_rows, 1);
    std::vector<float> out(q.size());
    for (int64_t r = 0; r < out_rows; ++r) {
      if (!(scale[r] >= 0.0f && std::isfinite(scale[r]))) {
        return absl::InvalidArgumentError(absl::StrCat(
            file_, ": tensor '", name, ".scale' row ", r, " is ", scale[r],
            "; scales must be finite and >= 0"));
      }
      for (int64_t c = 0; c < out_cols; ++c) out[r * out_cols + c] = q[r * out_cols + c] * scale[r];
    }
    stored_ = Precision::kInt8;
    return out;
  }
  return F32(name, {rows, cols}, select);
}

absl::StatusOr<int64_t> TensorReader::Length(const std::string& name) const {
  auto it = contents_.tensors.find(name);
  if (it == contents_.tensors.end()) {
    return absl::InvalidArgumentError(absl::StrCat(file_, ": missing tensor '", name, "'"));
  }
  if (it->second.shape.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(file_, ": tensor '", name,
                                                   "' must be 1-dimensional"));
  }
  return it->second.shape[0];
}

absl::Status TensorReader::Finish() const {
  for (const auto& [name, view] : contents_.tensors) {
    if (std::find(taken_.begin(), taken_.end(), name) == taken_.end()) {
      return absl::InvalidArgumentError(absl::StrCat(file_, ": unexpected tensor '", name, "'"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<const TensorView*> TensorReader::Find(const std::string& name, DType dtype,
                                                     const std::vector<int64_t>& shape) const {
  auto it = contents_.tensors.find(name);
  if (it == contents_.tensors.end()) {
    return absl::InvalidArgumentError(absl::StrCat(file_, ": missing tensor '", name, "'"));
  }
  const TensorView& view = it->second;
  if (view.dtype != dtype) {
    return absl::InvalidArgumentError(absl::StrCat(file_, ": tensor '", name, "' has dtype ",
                                                   DTypeName(view.dtype), ", expected ",
                                                   DTypeName(dtype)));
  }
  if (view.shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat(
        file_, ": tensor '", name, "' has shape [", absl::StrJoin(view.shape, ", "),
        "], expected [", absl::StrJoin(shape, ", "), "]"));
  }
  return &view;
}

// ---- Writing tensors --------------------------------------------------------

void TensorWriter::Matrix(const std::string& name, int64_t rows, int64_t cols,
                          const std::vector<float>& v) {
  if (matrices_ == Precision::kFp32) return F32(name, {rows, cols}, v);
  std::string& bytes = owned_.emplace_back();
  if (matrices_ == Precision::kBf16) {
    bytes.resize(v.size() * sizeof(uint16_t));
    ToBf16(v.data(), static_cast<int64_t>(v.size()), reinterpret_cast<uint16_t*>(bytes.data()));
    tensors_.push_back({name, DType::kBF16, {rows, cols}, bytes.data()});
    return;
  }
  bytes.resize(v.size() + rows * sizeof(float));
  auto* q = reinterpret_cast<int8_t*>(bytes.data());
  auto* scales = reinterpret_cast<float*>(bytes.data() + v.size());
  for (int64_t r = 0; r < rows; ++r) {
    const float s = QuantizeInt8(v.data() + r * cols, cols, q + r * cols);
    std::memcpy(scales + r, &s, sizeof(float));
  }
  tensors_.push_back({name, DType::kI8, {rows, cols}, q});
  tensors_.push_back({name + ".scale", DType::kF32, {rows}, scales});
}

std::string TensorWriter::Serialize() {
  metadata_["format_version"] = absl::StrCat(kCheckpointFormatVersion);
  return SerializeSafetensors(metadata_, tensors_);
}

}  // namespace sparse
