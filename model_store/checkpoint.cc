#include "model_store/checkpoint.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <list>
#include <filesystem>
#include <fstream>
#include <new>
#include <stdexcept>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/strings/ascii.h"
#include "engine/dsm_model.h"
#include "engine/lsh_table_model.h"
#include "common/status_macros.h"
#include "model_store/file_util.h"
#include "model_store/json_util.h"
#include "model_store/safetensors.h"
#include "nlohmann/json.hpp"

namespace sparse {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using Metadata = std::map<std::string, std::string>;

constexpr char kInfoPrefix[] = "info.";
// A manifest lists two files and, at format_version 2, ~70 bytes per
// tensor part: 16 MiB holds 200,000 sums (e.g. 4,096 experts in 16 blocks
// and their three sliced tensors), and bounds what parsing it costs.
constexpr size_t kMaxManifestBytes = 16 << 20;

// ---- Metadata ---------------------------------------------------------------

std::string FloatToString(float v) {
  char buf[32];
  const auto result = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, result.ptr);
}

absl::Status WithFile(absl::string_view file, const absl::Status& s) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(file, ": ", s.message()));
}

// Reads typed metadata values and remembers which keys were consumed, so
// unknown keys (typos) can be reported.
class MetadataReader {
 public:
  MetadataReader(const Metadata& meta, absl::string_view file) : meta_(meta), file_(file) {}

  absl::StatusOr<std::string> String(const std::string& key) {
    auto it = meta_.find(key);
    if (it == meta_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(file_, ": __metadata__ is missing '", key, "'"));
    }
    used_.push_back(key);
    return it->second;
  }
  absl::StatusOr<int64_t> Int(const std::string& key) {
    ASSIGN_OR_RETURN(std::string s, String(key));
    int64_t v = 0;
    if (!absl::SimpleAtoi(s, &v)) return Bad(key, s, "an integer");
    return v;
  }
  // A dimension: an integer in [0, 2^40], checked before any shape is
  // computed from it.
  absl::StatusOr<int64_t> Dim(const std::string& key) {
    ASSIGN_OR_RETURN(int64_t v, Int(key));
    if (v < 0 || v > (int64_t{1} << 40)) {
      return absl::InvalidArgumentError(
          absl::StrCat(file_, ": __metadata__ '", key, "' out of range: ", v));
    }
    return v;
  }
  // An enum value, parsed by `parse` (ParseActivation, ParseRouterKind, ...).
  template <typename T>
  absl::StatusOr<T> Enum(const std::string& key, absl::StatusOr<T> (*parse)(absl::string_view)) {
    ASSIGN_OR_RETURN(std::string s, String(key));
    absl::StatusOr<T> v = parse(s);
    RETURN_IF_ERROR(WithFile(file_, v.status()));
    return v;
  }
  absl::StatusOr<uint64_t> Uint(const std::string& key) {
    ASSIGN_OR_RETURN(std::string s, String(key));
    uint64_t v = 0;
    if (!absl::SimpleAtoi(s, &v)) return Bad(key, s, "a non-negative integer");
    return v;
  }
  absl::StatusOr<float> Float(const std::string& key) {
    ASSIGN_OR_RETURN(std::string s, String(key));
    float v = 0;
    if (!absl::SimpleAtof(s, &v)) return Bad(key, s, "a number");
    return v;
  }
  // Errors on any key that was not read and is not "info.*"; collects the
  // "info.*" keys into *info.
  absl::Status Finish(std::map<std::string, std::string>* info) {
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

 private:
  absl::Status Bad(const std::string& key, const std::string& value, absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(file_, ": __metadata__ '", key,
                                                   "' must be ", what, ", got '", value, "'"));
  }
  const Metadata& meta_;
  const std::string file_;
  std::vector<std::string> used_;
};

// ---- Tensors ----------------------------------------------------------------

// A tensor of `shape` seen as [outer, units, inner bytes] around `axis`
// (a shape of no dimensions: one unit). Shapes come from a parsed header,
// whose byte size does not overflow.
struct AroundAxis {
  int64_t outer = 1, units = 1, inner = 1;
  AroundAxis(const std::vector<int64_t>& shape, int axis, int64_t element_bytes)
      : inner(element_bytes) {
    if (shape.empty()) return;
    for (int i = 0; i < axis; ++i) outer *= shape[i];
    units = shape[axis];
    for (size_t i = axis + 1; i < shape.size(); ++i) inner *= shape[i];
  }
};

// Which units of a tensor, along one axis, a part of a model needs (a
// shard's experts or tables). Ranges are in order and do not overlap.
struct Selection {
  int axis = 0;
  std::vector<UnitRange> ranges;
  int64_t Units() const {
    int64_t n = 0;
    for (const UnitRange& r : ranges) n += r.size();
    return n;
  }
};

// A tensor's SHA-256 sums in a format_version 2 manifest: one per part,
// the tensor cut into equal parts along `axis` (one part: the whole).
struct TensorHashes {
  int axis = 0;
  std::vector<std::string> sha256;
};

// A file read at chosen ranges (a part of a model from a format_version 2
// manifest), each range's bytes checked against the manifest's sums.
struct RangedFile {
  const RandomAccessFile* file = nullptr;
  uint64_t data_start = 0;  // 8 + header length
  const std::map<std::string, TensorHashes>* hashes = nullptr;
};

// Takes named tensors out of parsed contents with the dtype and shape the
// metadata implies; remembers which were taken so extras can be reported.
// Tensors come from the whole file in memory, or from a RangedFile, in
// which case only the parts a Selection needs are read and checked.
class TensorReader {
 public:
  TensorReader(const SafetensorsContents& contents, absl::string_view file,
               const RangedFile* ranged = nullptr)
      : contents_(contents), file_(file), ranged_(ranged) {}

  // The tensor, or with `select` only the selected units along its axis
  // (the result has the tensor's shape with that axis cut to them).
  template <typename T>
  absl::StatusOr<std::vector<T>> Get(const std::string& name, DType dtype,
                                     const std::vector<int64_t>& shape,
                                     const Selection* select = nullptr) {
    ASSIGN_OR_RETURN(const TensorView* view, Find(name, dtype, shape));
    taken_.push_back(name);
    const Selection whole{0, {{0, shape.empty() ? 1 : shape[0]}}};
    if (select == nullptr || shape.empty()) select = &whole;
    const int axis = select->axis;
    // The tensor as [outer, units, inner bytes] around the axis.
    const AroundAxis around(shape, axis, sizeof(T));
    const int64_t outer = around.outer, units = around.units, inner = around.inner;
    const int64_t selected = select->Units();
    std::vector<T> out(static_cast<size_t>(outer * selected * inner / sizeof(T)));
    auto* dst = reinterpret_cast<uint8_t*>(out.data());
    // Where each selected range starts among the selected units.
    const std::vector<UnitRange>& ranges = select->ranges;
    std::vector<int64_t> positions(ranges.size());
    for (size_t i = 1; i < ranges.size(); ++i) positions[i] = positions[i - 1] + ranges[i - 1].size();
    // The copies that place units [u0, u1) (in `src`, from u0) among the
    // selected ones: the ranges overlapping it, found by binary search.
    struct Copy {
      int64_t from, count, to;  // units
    };
    auto copies_of = [&](int64_t u0, int64_t u1) {
      std::vector<Copy> copies;
      auto r = std::upper_bound(ranges.begin(), ranges.end(), u0,
                                [](int64_t u, const UnitRange& range) { return u < range.end; });
      for (; r != ranges.end() && r->begin < u1; ++r) {
        const int64_t b = std::max(r->begin, u0), e = std::min(r->end, u1);
        if (b < e) copies.push_back({b - u0, e - b, positions[r - ranges.begin()] + (b - r->begin)});
      }
      return copies;
    };
    auto place = [&](int64_t o, const std::vector<Copy>& copies, const uint8_t* src) {
      for (const Copy& c : copies) {
        std::memcpy(dst + (o * selected + c.to) * inner, src + c.from * inner, c.count * inner);
      }
    };
    if (ranged_ == nullptr) {
      const std::vector<Copy> copies = copies_of(0, units);
      for (int64_t o = 0; o < outer; ++o) place(o, copies, view->bytes.data() + o * units * inner);
      return out;
    }
    // Read every manifest part the selection touches, whole, check its sum,
    // and place the selected units.
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
    if (view->byte_size == 0) {
      // Nothing to read: its one sum is the empty input's.
      if (parts != 1 || hashes.sha256[0] != Sha256Hex({})) {
        return absl::InvalidArgumentError(absl::StrCat(
            kManifestFile, ": tensor '", name, "' of ", file_,
            " holds no bytes; its sha256 must be one sum, of nothing"));
      }
      return out;
    }
    const AroundAxis part_around(shape, hash_axis, sizeof(T));
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
    const bool by_part = parts > 1 && hash_axis == axis;
    std::vector<uint8_t> buffer(static_cast<size_t>(by_part ? part_outer * run : view->byte_size));
    for (int64_t p = 0; p < parts; ++p) {
      const int64_t u0 = p * part_units, u1 = u0 + part_units;
      std::vector<Copy> copies;
      if (by_part) {
        copies = copies_of(u0, u1);
        if (copies.empty()) continue;  // no selected unit in this part
      }
      Sha256 sha;
      for (int64_t o = 0; o < part_outer; ++o) {
        uint8_t* target = by_part ? buffer.data() + o * run
                                  : buffer.data() + (o * axis_units + u0) * part_inner;
        RETURN_IF_ERROR(ranged_->file->ReadAt(
            ranged_->data_start + view->offset + (o * axis_units + u0) * part_inner,
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
        for (int64_t o = 0; o < outer; ++o) place(o, copies, buffer.data() + o * run);
      }
    }
    if (!by_part) {
      const std::vector<Copy> copies = copies_of(0, units);
      for (int64_t o = 0; o < outer; ++o) place(o, copies, buffer.data() + o * units * inner);
    }
    return out;
  }
  absl::StatusOr<std::vector<float>> F32(const std::string& name, const std::vector<int64_t>& shape,
                                         const Selection* select = nullptr) {
    return Get<float>(name, DType::kF32, shape, select);
  }
  // A weight matrix [rows, cols] stored as F32, as BF16, or as I8 with its
  // per-row (output channel) scales in the F32 tensor `<name>.scale`
  // [rows], >= 0: each value is q·scale. Returns float32 values of the
  // selected rows (axis 0) or columns (axis 1); stored() says which dtype
  // the file used.
  absl::StatusOr<std::vector<float>> Matrix(const std::string& name, int64_t rows, int64_t cols,
                                            const Selection* select = nullptr) {
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
  // Marks a tensor this part of the model does not need (a shard's router,
  // a front's expert slices) as accounted for, without reading it.
  void Skip(const std::string& name) {
    if (contents_.tensors.contains(name)) taken_.push_back(name);
  }
  // The reduced precision a Matrix() was stored at (FP32 if none was).
  Precision stored() const { return stored_; }
  // Bytes read from a RangedFile so far.
  uint64_t bytes_read() const { return bytes_read_; }
  // The element count of a 1-d tensor, for tensors whose length is data.
  absl::StatusOr<int64_t> Length(const std::string& name) {
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
  int64_t Count() const { return static_cast<int64_t>(contents_.tensors.size()); }
  absl::Status Finish() {
    for (const auto& [name, view] : contents_.tensors) {
      if (std::find(taken_.begin(), taken_.end(), name) == taken_.end()) {
        return absl::InvalidArgumentError(absl::StrCat(file_, ": unexpected tensor '", name, "'"));
      }
    }
    return absl::OkStatus();
  }

 private:
  absl::StatusOr<const TensorView*> Find(const std::string& name, DType dtype,
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

  const SafetensorsContents& contents_;
  const std::string file_;
  const RangedFile* ranged_;
  std::vector<std::string> taken_;
  Precision stored_ = Precision::kFp32;
  uint64_t bytes_read_ = 0;
};

// ---- Decode -----------------------------------------------------------------

// The units of the width a DSM shard owns: experts [e0, e1) of every block.
Selection ExpertUnits(int64_t blocks, int64_t experts, int64_t k, UnitRange owned, int axis) {
  Selection s{axis, {}};
  for (int64_t l = 0; l < blocks; ++l) {
    s.ranges.push_back({(l * experts + owned.begin) * k, (l * experts + owned.end) * k});
  }
  return s;
}

// The network y = A·σ(Bx + c) + a0. With `units`, only those hidden units
// (rows of B and c, columns of A): width is then their count. With
// `router_only`, only the dimensions and a0 (a front's share).
absl::StatusOr<DenseWeights> DecodeNetwork(MetadataReader& meta, TensorReader& tensors,
                                           const Selection* units = nullptr,
                                           bool router_only = false) {
  DenseWeights w;
  ASSIGN_OR_RETURN(w.input_dim, meta.Dim("input_dim"));
  ASSIGN_OR_RETURN(w.output_dim, meta.Dim("output_dim"));
  ASSIGN_OR_RETURN(w.width, meta.Dim("width"));
  ASSIGN_OR_RETURN(w.activation, meta.Enum("activation", &ParseActivation));
  ASSIGN_OR_RETURN(w.top_bias, tensors.F32("top.bias", {w.output_dim}));
  if (router_only) {
    for (const char* name : {"bottom.weight", "bottom.weight.scale", "bottom.bias", "top.weight",
                             "top.weight.scale"}) {
      tensors.Skip(name);
    }
    return w;
  }
  Selection columns;
  if (units != nullptr) {
    columns = *units;
    columns.axis = 1;
  }
  ASSIGN_OR_RETURN(w.bottom_weight, tensors.Matrix("bottom.weight", w.width, w.input_dim, units));
  ASSIGN_OR_RETURN(w.bottom_bias, tensors.F32("bottom.bias", {w.width}, units));
  ASSIGN_OR_RETURN(w.top_weight, tensors.Matrix("top.weight", w.output_dim, w.width,
                                                units != nullptr ? &columns : nullptr));
  if (units != nullptr) w.width = units->Units();
  return w;
}

absl::StatusOr<LshTableWeights> DecodeLsh(MetadataReader& meta, TensorReader& tensors,
                                          absl::string_view file, const ModelPart& part) {
  LshTableWeights w;
  ASSIGN_OR_RETURN(w.input_dim, meta.Dim("input_dim"));
  ASSIGN_OR_RETURN(w.output_dim, meta.Dim("output_dim"));
  ASSIGN_OR_RETURN(w.num_tables, meta.Dim("tables"));
  ASSIGN_OR_RETURN(w.num_hashes, meta.Dim("hashes"));
  ASSIGN_OR_RETURN(w.degree, meta.Int("degree"));
  ASSIGN_OR_RETURN(w.family, meta.Enum("family", &ParseHashFamily));
  ASSIGN_OR_RETURN(w.bucket_width, meta.Float("bucket_width"));
  if (w.degree != 0 && w.degree != 1) RETURN_IF_ERROR(WithFile(file, w.Validate()));
  int64_t hashes = 0;
  if (__builtin_mul_overflow(w.num_tables, w.num_hashes, &hashes)) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": tables x hashes overflows"));
  }
  // Three tensors per table must be in the file before a table is made.
  if (w.num_tables > tensors.Count() / 3) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": tables=", w.num_tables, " needs ",
                                                   3 * w.num_tables, " table tensors; the file holds ",
                                                   tensors.Count(), " tensors in all"));
  }
  UnitRange owned{0, w.num_tables};
  if (part.role == ModelPart::Role::kShard) {
    if (w.num_tables < part.shard.count) {
      return absl::InvalidArgumentError(absl::StrCat(
          file, ": ", w.num_tables, " tables cannot be split across ", part.shard.count,
          " shards (each shard needs at least one table)"));
    }
    owned = OwnedUnits(w.num_tables, part.shard.index, part.shard.count);
    w.first_table = owned.begin;
    w.total_tables = w.num_tables;
  }
  const Selection tables_hashes{0, {{owned.begin * w.num_hashes, owned.end * w.num_hashes}}};
  const Selection tables{0, {owned}};
  const bool shard = part.role == ModelPart::Role::kShard;
  ASSIGN_OR_RETURN(w.projection, tensors.F32("hash.projection", {hashes, w.input_dim},
                                             shard ? &tables_hashes : nullptr));
  ASSIGN_OR_RETURN(w.offset, tensors.F32("hash.offset", {hashes}, shard ? &tables_hashes : nullptr));
  const bool front = part.role == ModelPart::Role::kFront;
  if (front) {
    tensors.Skip("alpha");
  } else {
    ASSIGN_OR_RETURN(w.alpha, tensors.F32("alpha", {w.num_tables}, shard ? &tables : nullptr));
  }
  std::vector<int64_t> per_bucket = {w.output_dim};
  if (w.degree == 1) per_bucket.push_back(w.input_dim + 1);
  for (int64_t i = 0; i < w.num_tables; ++i) {
    const std::string prefix = absl::StrCat("table.", i);
    if (front || i < owned.begin || i >= owned.end) {
      for (const char* t : {".keys", ".values", ".fallback"}) tensors.Skip(prefix + t);
      continue;
    }
    auto& table = w.tables.emplace_back();
    ASSIGN_OR_RETURN(int64_t n, tensors.Length(prefix + ".keys"));
    ASSIGN_OR_RETURN(table.keys, tensors.Get<uint64_t>(prefix + ".keys", DType::kU64, {n}));
    std::vector<int64_t> values_shape = {n};
    values_shape.insert(values_shape.end(), per_bucket.begin(), per_bucket.end());
    ASSIGN_OR_RETURN(table.values, tensors.F32(prefix + ".values", values_shape));
    ASSIGN_OR_RETURN(table.fallback, tensors.F32(prefix + ".fallback", per_bucket));
  }
  if (shard) w.num_tables = owned.size();
  return w;
}

absl::StatusOr<DsmWeights> DecodeDsm(MetadataReader& meta, TensorReader& tensors,
                                     absl::string_view file, const ModelPart& part) {
  DsmWeights w;
  ASSIGN_OR_RETURN(w.router, meta.Enum("router", &ParseRouterKind));
  ASSIGN_OR_RETURN(w.num_blocks, meta.Dim("blocks"));
  ASSIGN_OR_RETURN(w.num_experts, meta.Dim("experts"));
  ASSIGN_OR_RETURN(w.active_units, meta.Dim("active_units"));
  const bool shard = part.role == ModelPart::Role::kShard;
  const bool front = part.role == ModelPart::Role::kFront;
  std::optional<Selection> units;
  UnitRange owned;
  if (part.role != ModelPart::Role::kWhole) {
    if (w.router == RouterKind::kTopk) {
      return absl::FailedPreconditionError(absl::StrCat(
          file, ": a topk DSM cannot be sharded: it has no router and every row needs all of B "
          "(serve it whole, on a server without --shard)"));
    }
    if (w.num_experts < part.shard.count) {
      return absl::InvalidArgumentError(absl::StrCat(
          file, ": ", w.num_experts, " experts per block cannot be split across ",
          part.shard.count, " shards (each shard needs at least one expert)"));
    }
    ASSIGN_OR_RETURN(const int64_t width, meta.Dim("width"));
    int64_t units = 0;
    if (w.num_blocks == 0 || w.num_experts == 0 ||
        __builtin_mul_overflow(w.num_blocks, w.num_experts, &units) ||
        __builtin_mul_overflow(units, w.active_units, &units) || width != units) {
      return absl::InvalidArgumentError(absl::StrCat(
          file, ": width ", width, " must be blocks x experts x active_units = ", w.num_blocks,
          " x ", w.num_experts, " x ", w.active_units));
    }
    // The file holds those units (bottom.bias has one float each), so the
    // selection below is bounded by the file, not by what metadata claims.
    ASSIGN_OR_RETURN(const int64_t biases, tensors.Length("bottom.bias"));
    if (biases != width) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": tensor 'bottom.bias' has ", biases,
                                                     " values, expected width = ", width));
    }
  }
  if (shard) {
    owned = OwnedUnits(w.num_experts, part.shard.index, part.shard.count);
    units = ExpertUnits(w.num_blocks, w.num_experts, w.active_units, owned, 0);
  }
  ASSIGN_OR_RETURN(w.network, DecodeNetwork(meta, tensors, units ? &*units : nullptr, front));
  const int64_t d = w.network.input_dim;
  if (shard) {
    // The front adds a0 and routes: the shard's part holds neither.
    std::fill(w.network.top_bias.begin(), w.network.top_bias.end(), 0.0f);
    tensors.Skip("router.weight");
    tensors.Skip("router.bias");
    if (w.router == RouterKind::kHash) RETURN_IF_ERROR(meta.Uint("hash_seed").status());
    w.first_expert = owned.begin;
    w.total_experts = w.num_experts;
    w.num_experts = owned.size();
    return w;
  }
  switch (w.router) {
    case RouterKind::kLsh: {
      // Dim() bounds both by 2^40, so bits <= 2^40 * 40 cannot overflow.
      const int64_t bits = w.num_blocks * w.RouterBits();
      ASSIGN_OR_RETURN(w.router_weight, tensors.F32("router.weight", {bits, d}));
      ASSIGN_OR_RETURN(w.router_bias, tensors.F32("router.bias", {bits}));
      break;
    }
    case RouterKind::kKmeans: {
      int64_t centroids = 0;
      if (__builtin_mul_overflow(w.num_blocks, w.num_experts, &centroids)) {
        return absl::InvalidArgumentError(absl::StrCat(file, ": blocks x experts overflows"));
      }
      ASSIGN_OR_RETURN(w.router_weight, tensors.F32("router.weight", {centroids, d}));
      break;
    }
    case RouterKind::kHash: {
      ASSIGN_OR_RETURN(w.hash_seed, meta.Uint("hash_seed"));
      break;
    }
    case RouterKind::kTopk:
      break;
  }
  return w;
}

// ---- Encode -----------------------------------------------------------------

struct Encoded {
  Metadata metadata;
  std::vector<TensorToWrite> tensors;
  // What weight matrices are stored at (Checkpoint::tensor_precision).
  Precision matrices = Precision::kFp32;
  std::list<std::string> owned;  // converted tensors' bytes (stable addresses)
  void F32(std::string name, std::vector<int64_t> shape, const std::vector<float>& v) {
    tensors.push_back({std::move(name), DType::kF32, std::move(shape), v.data()});
  }
  // A weight matrix [rows, cols] at `matrices`: F32, BF16, or I8 with the
  // F32 tensor <name>.scale, one scale per row (output channel).
  void Matrix(const std::string& name, int64_t rows, int64_t cols, const std::vector<float>& v) {
    if (matrices == Precision::kFp32) return F32(name, {rows, cols}, v);
    std::string& bytes = owned.emplace_back();
    if (matrices == Precision::kBf16) {
      bytes.resize(v.size() * sizeof(uint16_t));
      ToBf16(v.data(), static_cast<int64_t>(v.size()), reinterpret_cast<uint16_t*>(bytes.data()));
      tensors.push_back({name, DType::kBF16, {rows, cols}, bytes.data()});
      return;
    }
    bytes.resize(v.size() + rows * sizeof(float));
    auto* q = reinterpret_cast<int8_t*>(bytes.data());
    auto* scales = reinterpret_cast<float*>(bytes.data() + v.size());
    for (int64_t r = 0; r < rows; ++r) {
      const float s = QuantizeInt8(v.data() + r * cols, cols, q + r * cols);
      std::memcpy(scales + r, &s, sizeof(float));
    }
    tensors.push_back({name, DType::kI8, {rows, cols}, q});
    tensors.push_back({name + ".scale", DType::kF32, {rows}, scales});
  }
};

void EncodeNetwork(const DenseWeights& w, Encoded* e) {
  e->metadata["input_dim"] = absl::StrCat(w.input_dim);
  e->metadata["output_dim"] = absl::StrCat(w.output_dim);
  e->metadata["width"] = absl::StrCat(w.width);
  e->metadata["activation"] = std::string(ActivationName(w.activation));
  e->Matrix("bottom.weight", w.width, w.input_dim, w.bottom_weight);
  e->F32("bottom.bias", {w.width}, w.bottom_bias);
  e->Matrix("top.weight", w.output_dim, w.width, w.top_weight);
  e->F32("top.bias", {w.output_dim}, w.top_bias);
}

// LSH tables are always float32 (their tensors are not weight matrices).
Encoded Encode(const LshTableWeights& w, Precision /*matrices*/) {
  Encoded e;
  e.metadata["kind"] = "lsh_table";
  e.metadata["input_dim"] = absl::StrCat(w.input_dim);
  e.metadata["output_dim"] = absl::StrCat(w.output_dim);
  e.metadata["tables"] = absl::StrCat(w.num_tables);
  e.metadata["hashes"] = absl::StrCat(w.num_hashes);
  e.metadata["degree"] = absl::StrCat(w.degree);
  e.metadata["family"] = std::string(HashFamilyName(w.family));
  e.metadata["bucket_width"] = FloatToString(w.bucket_width);
  const int64_t hashes = w.num_tables * w.num_hashes;
  e.F32("hash.projection", {hashes, w.input_dim}, w.projection);
  e.F32("hash.offset", {hashes}, w.offset);
  e.F32("alpha", {w.num_tables}, w.alpha);
  std::vector<int64_t> per_bucket = {w.output_dim};
  if (w.degree == 1) per_bucket.push_back(w.input_dim + 1);
  for (int64_t i = 0; i < w.num_tables; ++i) {
    const auto& t = w.tables[i];
    const int64_t n = static_cast<int64_t>(t.keys.size());
    const std::string prefix = absl::StrCat("table.", i);
    e.tensors.push_back({prefix + ".keys", DType::kU64, {n}, t.keys.data()});
    std::vector<int64_t> values_shape = {n};
    values_shape.insert(values_shape.end(), per_bucket.begin(), per_bucket.end());
    e.F32(prefix + ".values", values_shape, t.values);
    e.F32(prefix + ".fallback", per_bucket, t.fallback);
  }
  return e;
}

Encoded Encode(const DsmWeights& w, Precision matrices) {
  Encoded e;
  e.matrices = matrices;
  e.metadata["kind"] = "dsm";
  EncodeNetwork(w.network, &e);
  e.metadata["router"] = std::string(RouterKindName(w.router));
  e.metadata["blocks"] = absl::StrCat(w.num_blocks);
  e.metadata["experts"] = absl::StrCat(w.num_experts);
  e.metadata["active_units"] = absl::StrCat(w.active_units);
  const int64_t d = w.network.input_dim;
  switch (w.router) {
    case RouterKind::kLsh: {
      const int64_t bits = w.num_blocks * w.RouterBits();
      e.F32("router.weight", {bits, d}, w.router_weight);
      e.F32("router.bias", {bits}, w.router_bias);
      break;
    }
    case RouterKind::kKmeans:
      e.F32("router.weight", {w.num_blocks * w.num_experts, d}, w.router_weight);
      break;
    case RouterKind::kHash:
      e.metadata["hash_seed"] = absl::StrCat(w.hash_seed);
      break;
    case RouterKind::kTopk:
      break;
  }
  return e;
}

std::string Serialize(Encoded e) {
  e.metadata["format_version"] = absl::StrCat(kCheckpointFormatVersion);
  return SerializeSafetensors(e.metadata, e.tensors);
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

// ---- Manifest ---------------------------------------------------------------

struct ManifestEntry {
  uint64_t bytes = 0;
  std::string sha256;
  // format_version 2: the header (8 + N bytes) and each tensor's sums.
  uint64_t header_bytes = 0;
  std::string header_sha256;
  std::map<std::string, TensorHashes> tensors;
};

struct Manifest {
  int64_t format_version = 0;
  std::map<std::string, ManifestEntry> files;
};

bool IsSha256(const Json& j) {
  if (!j.is_string() || j.get<std::string>().size() != 64) return false;
  for (char c : j.get<std::string>()) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

absl::StatusOr<Manifest> ReadManifest(const std::string& dir) {
  // The size is checked before anything is read or allocated.
  absl::StatusOr<FileContents> file =
      FileContents::Read(dir + "/" + kManifestFile, kManifestFile, kMaxManifestBytes,
                         absl::StrCat("more than the ", kMaxManifestBytes, " a manifest can need"));
  if (absl::IsNotFound(file.status())) {
    return absl::NotFoundError(
        absl::StrCat("no ", kManifestFile, ": the version is incomplete or still being written"));
  }
  RETURN_IF_ERROR(file.status());
  const std::string m = kManifestFile;
  absl::StatusOr<Json> parsed = ParseJsonBounded(absl::string_view(
      reinterpret_cast<const char*>(file->bytes().data()), file->bytes().size()));
  if (!parsed.ok()) {
    const bool deep = absl::StartsWith(parsed.status().message(), "nests");
    return absl::InvalidArgumentError(absl::StrCat(
        m, ": not a JSON object", deep ? absl::StrCat(" (it ", parsed.status().message(), ")") : ""));
  }
  Json& json = *parsed;
  if (!json.is_object()) return absl::InvalidArgumentError(m + ": not a JSON object");
  Manifest manifest;
  if (json.contains("format_version") && json["format_version"].is_number_integer()) {
    manifest.format_version = json["format_version"].get<int64_t>();
  }
  if (manifest.format_version != 1 && manifest.format_version != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(m, ": format_version must be 1 or 2 (this build reads both)"));
  }
  if (!json.contains("files") || !json["files"].is_object()) {
    return absl::InvalidArgumentError(m + ": 'files' must be an object");
  }
  for (auto it = json["files"].begin(); it != json["files"].end(); ++it) {
    if (it.key() != kModelFile && it.key() != kDenseFile) {
      return absl::InvalidArgumentError(absl::StrCat(m, ": unexpected file '", it.key(), "'"));
    }
    const Json& e = it.value();
    if (!e.is_object() || !e.contains("bytes") || !e["bytes"].is_number_unsigned() ||
        !e.contains("sha256") || !IsSha256(e["sha256"])) {
      return absl::InvalidArgumentError(absl::StrCat(
          m, ": entry '", it.key(), "' needs 'bytes' (integer) and 'sha256' (64 hex digits)"));
    }
    ManifestEntry& entry = manifest.files[it.key()];
    entry.bytes = e["bytes"].get<uint64_t>();
    entry.sha256 = e["sha256"].get<std::string>();
    if (manifest.format_version < 2) continue;
    if (!e.contains("header_bytes") || !e["header_bytes"].is_number_unsigned() ||
        !e.contains("header_sha256") || !IsSha256(e["header_sha256"]) || !e.contains("tensors") ||
        !e["tensors"].is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(
          m, ": entry '", it.key(), "' needs 'header_bytes' (integer), 'header_sha256' (64 hex "
          "digits) and 'tensors' (an object) at format_version 2"));
    }
    entry.header_bytes = e["header_bytes"].get<uint64_t>();
    entry.header_sha256 = e["header_sha256"].get<std::string>();
    for (auto t = e["tensors"].begin(); t != e["tensors"].end(); ++t) {
      const Json& h = t.value();
      const std::string where = absl::StrCat(m, ": '", it.key(), "' tensor '", t.key(), "'");
      if (!h.is_object() || !h.contains("sha256") || !h["sha256"].is_array() ||
          h["sha256"].empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, " needs 'sha256', a non-empty list of sums"));
      }
      TensorHashes& hashes = entry.tensors[t.key()];
      if (h.contains("axis")) {
        if (!h["axis"].is_number_unsigned() || h["axis"].get<uint64_t>() > 8) {
          return absl::InvalidArgumentError(absl::StrCat(where, ": 'axis' must be 0 ... 8"));
        }
        hashes.axis = static_cast<int>(h["axis"].get<uint64_t>());
      }
      for (const Json& sum : h["sha256"]) {
        if (!IsSha256(sum)) {
          return absl::InvalidArgumentError(
              absl::StrCat(where, ": every sum must be 64 lowercase hex digits"));
        }
        hashes.sha256.push_back(sum.get<std::string>());
      }
    }
  }
  if (!manifest.files.contains(kModelFile)) {
    return absl::InvalidArgumentError(absl::StrCat(m, ": does not list ", kModelFile));
  }
  return manifest;
}

absl::StatusOr<FileContents> OpenVerified(const std::string& dir, const std::string& name,
                                        const ManifestEntry& entry) {
  // No bigger than the manifest says, checked before the file is read (the
  // manifest's sizes were held against the budget already).
  ASSIGN_OR_RETURN(FileContents file, FileContents::Read(dir + "/" + name, name, entry.bytes,
                                                         absl::StrCat("manifest says ", entry.bytes)));
  if (file.bytes().size() != entry.bytes) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": size ", file.bytes().size(),
                                                   " bytes, manifest says ", entry.bytes));
  }
  const std::string sha = Sha256Hex(file.bytes());
  if (sha != entry.sha256) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": SHA-256 ", sha,
                                                   " does not match the manifest's ", entry.sha256));
  }
  return file;
}

absl::StatusOr<DenseWeights> ReadDense(const FileContents& file) {
  ASSIGN_OR_RETURN(SafetensorsContents contents, ParseSafetensors(file.bytes(), kDenseFile));
  MetadataReader meta(contents.metadata, kDenseFile);
  TensorReader tensors(contents, kDenseFile);
  RETURN_IF_ERROR(WithFile(kDenseFile, CheckFormatVersion(meta)));
  ASSIGN_OR_RETURN(std::string kind, meta.String("kind"));
  if (kind != "dense") {
    return absl::InvalidArgumentError(
        absl::StrCat(kDenseFile, ": kind must be 'dense', got '", kind, "'"));
  }
  ASSIGN_OR_RETURN(DenseWeights w, DecodeNetwork(meta, tensors));
  RETURN_IF_ERROR(meta.Finish(nullptr));
  RETURN_IF_ERROR(tensors.Finish());
  RETURN_IF_ERROR(WithFile(kDenseFile, w.Validate()));
  return w;
}

// (input_dim, output_dim) of the sparse model.
std::pair<int64_t, int64_t> SparseDims(const std::variant<LshTableWeights, DsmWeights>& sparse) {
  return std::visit(
      [](const auto& w) -> std::pair<int64_t, int64_t> {
        if constexpr (std::is_same_v<std::decay_t<decltype(w)>, DsmWeights>) {
          return {w.network.input_dim, w.network.output_dim};
        } else {
          return {w.input_dim, w.output_dim};
        }
      },
      sparse);
}

}  // namespace

namespace {

// The parts a writer cuts a tensor into for its sums (docs/checkpoint-
// format.md): per expert for a routed DSM's sliced tensors, per table for an
// LSH model's hash functions and α; one part for everything else.
TensorHashes PartsFor(const Metadata& meta, const std::string& name, const TensorView& view) {
  TensorHashes h;
  auto number = [&meta](const char* key) {
    int64_t v = 0;
    auto it = meta.find(key);
    return it != meta.end() && absl::SimpleAtoi(it->second, &v) && v > 0 ? v : 0;
  };
  auto get = [&meta](const char* key) {
    auto it = meta.find(key);
    return it == meta.end() ? std::string() : it->second;
  };
  int64_t parts = 1;
  if (get("kind") == "dsm" && get("router") != "topk") {
    int64_t experts = 0;
    if (__builtin_mul_overflow(number("blocks"), number("experts"), &experts)) experts = 0;
    if (name == "bottom.weight" || name == "bottom.weight.scale" || name == "bottom.bias") {
      parts = experts;
    } else if (name == "top.weight") {
      parts = experts;
      h.axis = 1;
    }
  } else if (get("kind") == "lsh_table" &&
             (name == "hash.projection" || name == "hash.offset" || name == "alpha")) {
    parts = number("tables");
  }
  if (parts < 1 || static_cast<size_t>(h.axis) >= view.shape.size() ||
      view.shape[h.axis] < parts || view.shape[h.axis] % parts != 0) {
    parts = 1;
    h.axis = 0;
  }
  const AroundAxis around(view.shape, h.axis, static_cast<int64_t>(DTypeSize(view.dtype)));
  const int64_t units = around.units, outer = around.outer, inner = around.inner;
  const int64_t run = units / parts * inner;
  for (int64_t p = 0; p < parts; ++p) {
    Sha256 sha;
    for (int64_t o = 0; o < outer; ++o) {
      sha.Update(view.bytes.subspan((o * units) * inner + p * run, run));
    }
    h.sha256.push_back(sha.HexDigest());
  }
  return h;
}

}  // namespace

std::string ManifestJson(const std::map<std::string, std::string>& files) {
  Json manifest = {{"format_version", kManifestFormatVersion}, {"files", Json::object()}};
  for (const auto& [name, contents] : files) {
    const absl::Span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(contents.data()),
                                          contents.size());
    Json entry = {{"bytes", contents.size()}, {"sha256", Sha256Hex(bytes)}};
    absl::StatusOr<SafetensorsContents> parsed = ParseSafetensors(bytes, name);
    if (!parsed.ok()) {
      // Not a tensor file (a test's or fuzzer's bytes): sizes and sums
      // only, which is what format_version 1 holds.
      manifest["format_version"] = 1;
      manifest["files"][name] = entry;
      continue;
    }
    uint64_t header_len = 0;
    std::memcpy(&header_len, contents.data(), 8);
    entry["header_bytes"] = 8 + header_len;
    entry["header_sha256"] = Sha256Hex(bytes.subspan(0, 8 + header_len));
    entry["tensors"] = Json::object();
    for (const auto& [tensor, view] : parsed->tensors) {
      const TensorHashes h = PartsFor(parsed->metadata, tensor, view);
      Json t = {{"sha256", h.sha256}};
      if (h.sha256.size() > 1) t["axis"] = h.axis;
      entry["tensors"][tensor] = std::move(t);
    }
    manifest["files"][name] = std::move(entry);
  }
  if (manifest["format_version"] == 1) {
    for (auto& [name, entry] : manifest["files"].items()) {
      entry.erase("header_bytes");
      entry.erase("header_sha256");
      entry.erase("tensors");
    }
  }
  return manifest.dump(2) + "\n";
}

void RoundToStorage(Precision precision, DenseWeights* network) {
  auto round = [precision](int64_t rows, int64_t cols, std::vector<float>* v) {
    if (precision == Precision::kBf16) {
      for (float& x : *v) x = Bf16ToFloat(FloatToBf16(x));
    } else if (precision == Precision::kInt8) {
      std::vector<int8_t> q(cols);
      for (int64_t r = 0; r < rows; ++r) {
        float* row = v->data() + r * cols;
        const float scale = QuantizeInt8(row, cols, q.data());
        for (int64_t c = 0; c < cols; ++c) row[c] = q[c] * scale;
      }
    }
  };
  round(network->width, network->input_dim, &network->bottom_weight);
  round(network->output_dim, network->width, &network->top_weight);
}

std::string SerializeSparse(const Checkpoint& checkpoint) {
  Encoded e = std::visit(
      [&checkpoint](const auto& w) { return Encode(w, checkpoint.tensor_precision); },
      checkpoint.sparse);
  for (const auto& [key, value] : checkpoint.info) e.metadata[kInfoPrefix + key] = value;
  return Serialize(std::move(e));
}

std::string SerializeDense(const DenseWeights& dense, Precision matrices) {
  Encoded e;
  e.matrices = matrices;
  e.metadata["kind"] = "dense";
  EncodeNetwork(dense, &e);
  return Serialize(std::move(e));
}

namespace {

// Saturating arithmetic for estimates built from untrusted dimensions.
uint64_t SatMul(uint64_t a, uint64_t b) {
  uint64_t r = 0;
  return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX : r;
}
uint64_t SatAdd(uint64_t a, uint64_t b) {
  uint64_t r = 0;
  return __builtin_add_overflow(a, b, &r) ? UINT64_MAX : r;
}
uint64_t SatMul(std::initializer_list<int64_t> factors) {
  uint64_t r = 1;
  for (int64_t f : factors) r = SatMul(r, static_cast<uint64_t>(std::max<int64_t>(f, 0)));
  return r;
}

// The engine's bytes per stored LSH bucket key (hash-index slot, control
// byte and load-factor slack) and per table (bookkeeping of the decoded and
// the engine tables).
constexpr uint64_t kIndexBytesPerKey = 32;
constexpr uint64_t kBytesPerTable = 256;
// Tensor files are held about twice at the peak of a load (a DSM: the
// decoded tensors and the kernels' packed copy, each expert slice
// transposed straight into its place; measured on a 512 MiB DSM: peak RSS
// 1.9x the file whole, 1.9x its part on a shard). Before the kind is known
// this is the least a load needs.
constexpr uint64_t kMinFileCopies = 2;
// An LSH model's decoded tensors, its engine tables and the values scaled
// by α.
constexpr uint64_t kLshFileCopies = 3;

// The copies of the tensor files a load of `c` holds at its peak: an LSH
// model's kLshFileCopies; a DSM's decoded and packed tensors (2), plus the
// cost-only dense endpoint's own packed copy of the network, plus topk's
// transposed A.
uint64_t FileCopies(const Checkpoint& c, const LoadOptions& options) {
  const auto* dsm = std::get_if<DsmWeights>(&c.sparse);
  if (dsm == nullptr) return kLshFileCopies;
  const bool cost_only_dense =
      !c.dense.has_value() && c.part.role == ModelPart::Role::kWhole && options.cost_only_dense;
  return kMinFileCopies + (cost_only_dense ? 1 : 0) + (dsm->router == RouterKind::kTopk ? 1 : 0);
}

// Workspace floats one thread needs to run `w` on `rows` rows (DenseModel).
uint64_t DenseWorkspaceFloats(const DenseWeights& w, int64_t rows) {
  return SatMul({rows, w.width});
}

struct Estimate {
  uint64_t files = 0, index = 0, workspace = 0, total = 0;
};

Estimate Estimated(const Checkpoint& c, uint64_t file_bytes, const LoadOptions& options) {
  Estimate e;
  const int64_t rows = std::clamp<int64_t>(options.batch_rows, 1, 128);
  // Reduced-precision matrices are decoded to float32: 2x (BF16) or 4x (I8)
  // the bytes they take in the file (counted on the whole file: an upper bound).
  e.files = SatMul(SatMul(FileCopies(c, options), file_bytes),
                   static_cast<uint64_t>(4 / PrecisionBytes(c.tensor_precision)));
  uint64_t floats = 0, indices = 0;  // per thread
  int64_t d = 0, o = 0;
  if (const auto* lsh = std::get_if<LshTableWeights>(&c.sparse)) {
    d = lsh->input_dim;
    o = lsh->output_dim;
    uint64_t keys = 0;
    for (const auto& t : lsh->tables) keys = SatAdd(keys, t.keys.size());
    e.index = SatAdd(SatMul(keys, kIndexBytesPerKey),
                     SatMul(static_cast<uint64_t>(lsh->num_tables), kBytesPerTable));
    floats = SatAdd(SatMul({rows, lsh->num_tables, lsh->num_hashes}), SatAdd(d, 1));
    indices = SatMul({rows, lsh->num_tables});
  } else {
    const DsmWeights& dsm = std::get<DsmWeights>(c.sparse);
    const DenseWeights& net = dsm.network;
    d = net.input_dim;
    o = net.output_dim;
    const int64_t L = dsm.num_blocks, k = dsm.active_units, E = dsm.num_experts;
    if (dsm.router == RouterKind::kTopk) {
      floats = SatAdd(SatAdd(SatMul({rows, net.width}), SatMul({L, k})), SatMul({L, k, o}));
      indices = L > 0 ? static_cast<uint64_t>(net.width / L) : 0;
    } else {
      const int64_t router = dsm.router == RouterKind::kLsh      ? dsm.RouterBits()
                             : dsm.router == RouterKind::kKmeans ? E
                                                                 : 0;
      floats = SatAdd(SatMul({rows, L, router}), SatMul({rows, k + o + d}));
      indices = SatAdd(SatAdd(rows, E), SatAdd(2, SatMul({rows, L}) / 2));  // + expert ids
    }
    // The cost-only dense endpoint, made only for a whole model (a shard's or
    // a front's part has none) and when asked for.
    if (!c.dense.has_value() && c.part.role == ModelPart::Role::kWhole && options.cost_only_dense) {
      floats = SatAdd(floats, DenseWorkspaceFloats(net, rows));
    }
  }
  if (c.dense.has_value()) floats = SatAdd(floats, DenseWorkspaceFloats(*c.dense, rows));
  // Each thread's scratch, plus the warm-up's input and output rows.
  const uint64_t per_thread = SatAdd(SatMul(floats, sizeof(float)), SatMul(indices, 8));
  e.workspace = SatAdd(SatMul(per_thread, static_cast<uint64_t>(std::max(options.threads, 1))),
                       SatMul({2, rows, d + o, static_cast<int64_t>(sizeof(float))}));
  e.total = SatAdd(SatAdd(e.files, e.index), e.workspace);
  return e;
}

absl::Status OverBudget(uint64_t estimate, absl::string_view breakdown,
                        const LoadOptions& options) {
  return absl::ResourceExhaustedError(absl::StrCat(
      "the version needs an estimated ", estimate, " bytes to load and serve (", breakdown,
      "), more than the budget of ", options.max_bytes, " bytes (", options.budget_name, ")"));
}

// Reads the first line of a cgroup file as an integer; 0 if it is absent,
// "max" or not a number.
uint64_t ReadLimit(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  uint64_t v = 0;
  if (!std::getline(in, line) || !absl::SimpleAtoi(line, &v)) return 0;
  return v;
}

}  // namespace

uint64_t EstimateLoadBytes(const Checkpoint& checkpoint, uint64_t file_bytes,
                           const LoadOptions& options) {
  return Estimated(checkpoint, file_bytes, options).total;
}

uint64_t DefaultModelBudgetBytes() {
  uint64_t total = 0;
  {
    std::ifstream meminfo("/proc/meminfo");
    std::string line;
    while (std::getline(meminfo, line)) {
      absl::string_view rest = line;
      if (!absl::ConsumePrefix(&rest, "MemTotal:")) continue;
      rest = absl::StripAsciiWhitespace(rest);
      absl::ConsumeSuffix(&rest, "kB");
      uint64_t kib = 0;
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(rest), &kib)) total = SatMul(kib, 1024);
      break;
    }
  }
  // The cgroup's limit, where this process's cgroup is and at the root of
  // the cgroup mount (what a container sees as its own).
  std::vector<std::string> limits = {"/sys/fs/cgroup/memory.max",
                                     "/sys/fs/cgroup/memory/memory.limit_in_bytes"};
  {
    std::ifstream cgroups("/proc/self/cgroup");
    std::string line;
    while (std::getline(cgroups, line)) {
      const std::vector<std::string> parts = absl::StrSplit(line, absl::MaxSplits(':', 2));
      if (parts.size() != 3 || parts[2].find("..") != std::string::npos) continue;
      if (parts[0] == "0" && parts[1].empty()) {
        limits.push_back(absl::StrCat("/sys/fs/cgroup", parts[2], "/memory.max"));
      } else if (parts[1] == "memory") {
        limits.push_back(absl::StrCat("/sys/fs/cgroup/memory", parts[2], "/memory.limit_in_bytes"));
      }
    }
  }
  uint64_t memory = total;
  for (const std::string& path : limits) {
    const uint64_t limit = ReadLimit(path);  // 0: none ("max", absent)
    if (limit > 0 && (memory == 0 || limit < memory)) memory = limit;
  }
  if (memory == 0) memory = uint64_t{2} << 30;
  return memory / 2;
}

absl::StatusOr<Checkpoint> ReadCheckpoint(const std::string& dir, const LoadOptions& options) {
  ASSIGN_OR_RETURN(Manifest read_manifest, ReadManifest(dir));
  auto& manifest = read_manifest.files;
  for (const char* name : {kModelFile, kDenseFile}) {
    std::error_code ec;  // a file we cannot even stat is reported when opened
    if (!manifest.contains(name) && fs::symlink_status(fs::path(dir) / name, ec).type() !=
                                        fs::file_type::not_found && !ec) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " is present but not listed in ", kManifestFile));
    }
  }
  const ModelPart& part = options.part;
  // A part of the model reads only the ranges it needs, when the manifest
  // has the sums to check them (format_version 2); a shard never reads the
  // dense twin.
  const bool ranged = part.role != ModelPart::Role::kWhole && read_manifest.format_version >= 2;
  const bool read_dense = manifest.contains(kDenseFile) && part.role != ModelPart::Role::kShard;
  // The files the manifest declares, against the budget before any is read
  // (a part is checked once it is read, against what it read).
  uint64_t file_bytes = 0;
  for (const auto& [name, entry] : manifest) {
    if (name == kModelFile || read_dense) file_bytes = SatAdd(file_bytes, entry.bytes);
  }
  // A version-2 manifest names the tensors, so an LSH table model (the only
  // kind with hash.projection) is known before any tensor is read.
  const auto model_entry = manifest.find(kModelFile);
  const uint64_t copies = model_entry != manifest.end() &&
                                  model_entry->second.tensors.contains("hash.projection")
                              ? kLshFileCopies
                              : kMinFileCopies;
  if (!ranged && options.max_bytes > 0 && SatMul(copies, file_bytes) > options.max_bytes) {
    return OverBudget(SatMul(copies, file_bytes),
                      absl::StrCat(copies, " x ", file_bytes, " bytes of tensor files, as ",
                                   kManifestFile, " declares them"),
                      options);
  }
  Checkpoint checkpoint;
  checkpoint.part = part;
  checkpoint.model_sha256 = manifest[kModelFile].sha256;
  {
    const ManifestEntry& entry = manifest[kModelFile];
    std::optional<FileContents> whole;
    std::optional<RandomAccessFile> file;
    std::optional<RangedFile> range;
    SafetensorsContents contents;
    if (ranged) {
      ASSIGN_OR_RETURN(file, RandomAccessFile::Open(dir + "/" + kModelFile, kModelFile, entry.bytes));
      uint8_t first8[8] = {};
      if (file->size() >= 8) RETURN_IF_ERROR(file->ReadAt(0, absl::MakeSpan(first8)));
      ASSIGN_OR_RETURN(const uint64_t header_len,
                       SafetensorsHeaderLength(first8, file->size(), kModelFile));
      if (8 + header_len != entry.header_bytes) {
        return absl::InvalidArgumentError(absl::StrCat(kModelFile, ": header of ", 8 + header_len,
                                                       " bytes, manifest says ", entry.header_bytes));
      }
      std::string header(8 + header_len, '\0');
      auto* header_bytes = reinterpret_cast<uint8_t*>(header.data());
      RETURN_IF_ERROR(file->ReadAt(0, absl::MakeSpan(header_bytes, header.size())));
      const std::string sha = Sha256Hex(absl::MakeConstSpan(header_bytes, header.size()));
      if (sha != entry.header_sha256) {
        return absl::InvalidArgumentError(absl::StrCat(
            kModelFile, ": header SHA-256 ", sha, " does not match the manifest's ",
            entry.header_sha256));
      }
      ASSIGN_OR_RETURN(contents, ParseSafetensorsHeader(absl::string_view(header).substr(8),
                                                        file->size() - 8 - header_len, kModelFile));
      for (const auto& [name, view] : contents.tensors) {
        if (!entry.tensors.contains(name)) {
          return absl::InvalidArgumentError(
              absl::StrCat(kManifestFile, ": lists no sha256 for tensor '", name, "' of ", kModelFile));
        }
      }
      for (const auto& [name, hashes] : entry.tensors) {
        if (!contents.tensors.contains(name)) {
          return absl::InvalidArgumentError(absl::StrCat(
              kManifestFile, ": lists tensor '", name, "', which ", kModelFile, " does not hold"));
        }
      }
      range = RangedFile{&*file, 8 + header_len, &entry.tensors};
      checkpoint.bytes_read = 8 + header_len;
    } else {
      ASSIGN_OR_RETURN(whole, OpenVerified(dir, kModelFile, entry));
      ASSIGN_OR_RETURN(contents, ParseSafetensors(whole->bytes(), kModelFile));
      checkpoint.bytes_read = whole->bytes().size();
    }
    MetadataReader meta(contents.metadata, kModelFile);
    TensorReader tensors(contents, kModelFile, range ? &*range : nullptr);
    RETURN_IF_ERROR(WithFile(kModelFile, CheckFormatVersion(meta)));
    ASSIGN_OR_RETURN(std::string kind, meta.String("kind"));
    if (kind == "lsh_table") {
      ASSIGN_OR_RETURN(checkpoint.sparse, DecodeLsh(meta, tensors, kModelFile, part));
    } else if (kind == "dsm") {
      ASSIGN_OR_RETURN(checkpoint.sparse, DecodeDsm(meta, tensors, kModelFile, part));
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          kModelFile, ": kind must be 'lsh_table' or 'dsm', got '", kind, "'"));
    }
    RETURN_IF_ERROR(meta.Finish(&checkpoint.info));
    RETURN_IF_ERROR(tensors.Finish());
    checkpoint.bytes_read += tensors.bytes_read();
    checkpoint.tensor_precision = tensors.stored();
    const bool front = part.role == ModelPart::Role::kFront;
    RETURN_IF_ERROR(WithFile(kModelFile, std::visit(
        [front](const auto& w) {
          if (!front) return w.Validate();
          if constexpr (std::is_same_v<std::decay_t<decltype(w)>, DsmWeights>) {
            return w.ValidateRouting();
          } else {
            return w.ValidateHashing();
          }
        },
        checkpoint.sparse)));
  }
  if (ranged) file_bytes = checkpoint.bytes_read;
  if (read_dense) {
    ASSIGN_OR_RETURN(FileContents dense_file, OpenVerified(dir, kDenseFile, manifest[kDenseFile]));
    ASSIGN_OR_RETURN(checkpoint.dense, ReadDense(dense_file));
    if (ranged) file_bytes = SatAdd(file_bytes, dense_file.bytes().size());
    const auto [d, o] = SparseDims(checkpoint.sparse);
    if (checkpoint.dense->input_dim != d || checkpoint.dense->output_dim != o) {
      return absl::InvalidArgumentError(absl::StrCat(
          kDenseFile, ": the dense twin maps ", checkpoint.dense->input_dim, " -> ",
          checkpoint.dense->output_dim, " but the sparse model maps ", d, " -> ", o));
    }
  }
  // Every dimension now matches the tensors the files hold: the full
  // estimate, before the engine allocates anything.
  if (options.max_bytes > 0) {
    const Estimate e = Estimated(checkpoint, file_bytes, options);
    if (e.total > options.max_bytes) {
      return OverBudget(
          e.total,
          absl::StrCat(FileCopies(checkpoint, options), " x ", file_bytes,
                       " bytes of tensor files + ", e.index,
                       " of hash index + ", e.workspace, " of activation workspace for ",
                       std::max(options.threads, 1), " thread(s) at ",
                       std::clamp<int64_t>(options.batch_rows, 1, 128), " rows"),
          options);
    }
  }
  return checkpoint;
}

namespace {

// Publishing writes into <model_dir>/.tmp-<version>-<host>-<pid>-<n>/.
constexpr absl::string_view kTemporaryPrefix = ".tmp-";

std::string HostName() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "unknown";
  return name;
}

// Removes the temporary directories that writers on this host (`host`)
// left when they died mid-publish (a SIGKILL, a crash): those whose
// process no longer exists. Directories of live writers, and of writers on
// other hosts sharing the repository, are left alone.
void RemoveStaleTemporaryDirectories(const std::string& model_dir, const std::string& host) {
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(model_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!absl::StartsWith(name, kTemporaryPrefix)) continue;
    // <version>-<host>-<pid>-<n>, where the host may hold dashes.
    const std::vector<std::string> parts = absl::StrSplit(name.substr(kTemporaryPrefix.size()), '-');
    if (parts.size() < 4) continue;
    int64_t pid = 0;
    const std::string name_host = absl::StrJoin(parts.begin() + 1, parts.end() - 2, "-");
    if (name_host != host || !absl::SimpleAtoi(parts[parts.size() - 2], &pid) || pid <= 0 ||
        pid == ::getpid()) {
      continue;
    }
    if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) fs::remove_all(entry.path(), ec);
  }
}

}  // namespace

absl::Status WriteCheckpoint(const std::string& model_dir, int64_t version,
                             const Checkpoint& checkpoint) {
  if (version < 1) {
    return absl::InvalidArgumentError(absl::StrCat("version must be >= 1, got ", version));
  }
  RETURN_IF_ERROR(std::visit([](const auto& w) { return w.Validate(); }, checkpoint.sparse));
  const auto [d, o] = SparseDims(checkpoint.sparse);
  if (checkpoint.dense.has_value()) {
    RETURN_IF_ERROR(WithFile(kDenseFile, checkpoint.dense->Validate()));
    if (checkpoint.dense->input_dim != d || checkpoint.dense->output_dim != o) {
      return absl::InvalidArgumentError(absl::StrCat(
          "dense twin is ", checkpoint.dense->input_dim, " -> ", checkpoint.dense->output_dim,
          " but the sparse model is ", d, " -> ", o));
    }
  }
  std::map<std::string, std::string> files;
  files[kModelFile] = SerializeSparse(checkpoint);
  if (checkpoint.dense.has_value()) {
    files[kDenseFile] = SerializeDense(*checkpoint.dense, checkpoint.tensor_precision);
  }

  std::error_code ec;
  fs::create_directories(model_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", model_dir, ": ", ec.message()));
  const std::string target = (fs::path(model_dir) / std::to_string(version)).string();
  if (fs::symlink_status(target, ec).type() != fs::file_type::not_found) {
    return absl::AlreadyExistsError(absl::StrCat("version ", version, " already exists"));
  }
  const std::string host = HostName();
  RemoveStaleTemporaryDirectories(model_dir, host);
  static std::atomic<int> counter{0};
  const std::string tmp =
      (fs::path(model_dir) / absl::StrCat(kTemporaryPrefix, version, "-", host, "-", ::getpid(), "-",
                                          counter++))
          .string();
  fs::create_directory(tmp, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", tmp, ": ", ec.message()));
  absl::Status status = [&]() -> absl::Status {
    for (const auto& [name, contents] : files) {
      RETURN_IF_ERROR(WriteFileSynced(tmp + "/" + name, contents));
    }
    RETURN_IF_ERROR(WriteFileSynced(tmp + "/" + kManifestFile, ManifestJson(files)));
    RETURN_IF_ERROR(SyncDirectory(tmp));
    if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, target.c_str(), RENAME_NOREPLACE) != 0) {
      if (errno == EEXIST) {
        return absl::AlreadyExistsError(absl::StrCat("version ", version, " already exists"));
      }
      return absl::InternalError(absl::StrCat("cannot publish version ", version, ": ",
                                              std::strerror(errno)));
    }
    return SyncDirectory(model_dir);
  }();
  if (!status.ok()) fs::remove_all(tmp, ec);
  return status;
}

absl::StatusOr<LoadedModel> LoadCheckpoint(const std::string& version_dir,
                                           const LoadOptions& options) {
  // Every allocation is bounded by the files and the budget; this is the
  // net under that: running out of memory fails the version, not the process.
  try {
    if (options.part.role == ModelPart::Role::kFront) {
      return absl::FailedPreconditionError(
          "a front's part of a sharded model routes to its shards; the server builds it from "
          "ReadCheckpoint");
    }
    ASSIGN_OR_RETURN(Checkpoint checkpoint, ReadCheckpoint(version_dir, options));
    LoadedModel loaded;
    loaded.info = std::move(checkpoint.info);
    loaded.model_sha256 = checkpoint.model_sha256;
    const Precision precision = options.precision;
    if (const auto* lsh = std::get_if<LshTableWeights>(&checkpoint.sparse)) {
      ASSIGN_OR_RETURN(loaded.sparse, LshTableModel::Create(*lsh, precision));
    } else {
      const DsmWeights& dsm = std::get<DsmWeights>(checkpoint.sparse);
      ASSIGN_OR_RETURN(loaded.sparse, DsmModel::Create(dsm, precision));
      if (!checkpoint.dense.has_value() && !dsm.IsShard() && options.cost_only_dense) {
        ASSIGN_OR_RETURN(loaded.dense, DenseModel::Create(dsm.network, precision));
        loaded.dense_cost_only = true;
      }
    }
    if (checkpoint.dense.has_value()) {
      ASSIGN_OR_RETURN(loaded.dense, DenseModel::Create(*checkpoint.dense, precision));
    }
    return loaded;
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        "out of memory while loading the version (std::bad_alloc); lower its size or raise "
        "the memory available");
  } catch (const std::length_error& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat("a size too large to allocate while loading the version (", e.what(), ")"));
  }
}

}  // namespace sparse
