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
// A manifest lists two files; anything near this size is not one.
constexpr size_t kMaxManifestBytes = 64 << 10;

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

// Takes named tensors out of parsed contents with the dtype and shape the
// metadata implies; remembers which were taken so extras can be reported.
class TensorReader {
 public:
  TensorReader(const SafetensorsContents& contents, absl::string_view file)
      : contents_(contents), file_(file) {}

  template <typename T>
  absl::StatusOr<std::vector<T>> Get(const std::string& name, DType dtype,
                                     const std::vector<int64_t>& shape) {
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
    taken_.push_back(name);
    std::vector<T> out(view.elements);
    if (!out.empty()) std::memcpy(out.data(), view.bytes.data(), view.bytes.size());
    return out;
  }
  absl::StatusOr<std::vector<float>> F32(const std::string& name, const std::vector<int64_t>& shape) {
    return Get<float>(name, DType::kF32, shape);
  }
  // A weight matrix [rows, cols] stored as F32, as BF16, or as I8 with its
  // per-row (output channel) scales in the F32 tensor `<name>.scale`
  // [rows], >= 0: each value is q·scale. Returns float32 values;
  // stored() says which the file used.
  absl::StatusOr<std::vector<float>> Matrix(const std::string& name, int64_t rows, int64_t cols) {
    auto it = contents_.tensors.find(name);
    const DType dtype = it == contents_.tensors.end() ? DType::kF32 : it->second.dtype;
    if (dtype == DType::kBF16) {
      ASSIGN_OR_RETURN(std::vector<uint16_t> raw, Get<uint16_t>(name, DType::kBF16, {rows, cols}));
      std::vector<float> out(raw.size());
      for (size_t i = 0; i < raw.size(); ++i) out[i] = Bf16ToFloat(raw[i]);
      stored_ = Precision::kBf16;
      return out;
    }
    if (dtype == DType::kI8) {
      ASSIGN_OR_RETURN(std::vector<int8_t> q, Get<int8_t>(name, DType::kI8, {rows, cols}));
      ASSIGN_OR_RETURN(std::vector<float> scale, F32(name + ".scale", {rows}));
      std::vector<float> out(q.size());
      for (int64_t r = 0; r < rows; ++r) {
        if (!(scale[r] >= 0.0f && std::isfinite(scale[r]))) {
          return absl::InvalidArgumentError(absl::StrCat(
              file_, ": tensor '", name, ".scale' row ", r, " is ", scale[r],
              "; scales must be finite and >= 0"));
        }
        for (int64_t c = 0; c < cols; ++c) out[r * cols + c] = q[r * cols + c] * scale[r];
      }
      stored_ = Precision::kInt8;
      return out;
    }
    return F32(name, {rows, cols});
  }
  // The reduced precision a Matrix() was stored at (FP32 if none was).
  Precision stored() const { return stored_; }
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
  const SafetensorsContents& contents_;
  const std::string file_;
  std::vector<std::string> taken_;
  Precision stored_ = Precision::kFp32;
};

// ---- Decode -----------------------------------------------------------------

absl::StatusOr<DenseWeights> DecodeNetwork(MetadataReader& meta, TensorReader& tensors) {
  DenseWeights w;
  ASSIGN_OR_RETURN(w.input_dim, meta.Dim("input_dim"));
  ASSIGN_OR_RETURN(w.output_dim, meta.Dim("output_dim"));
  ASSIGN_OR_RETURN(w.width, meta.Dim("width"));
  ASSIGN_OR_RETURN(w.activation, meta.Enum("activation", &ParseActivation));
  ASSIGN_OR_RETURN(w.bottom_weight, tensors.Matrix("bottom.weight", w.width, w.input_dim));
  ASSIGN_OR_RETURN(w.bottom_bias, tensors.F32("bottom.bias", {w.width}));
  ASSIGN_OR_RETURN(w.top_weight, tensors.Matrix("top.weight", w.output_dim, w.width));
  ASSIGN_OR_RETURN(w.top_bias, tensors.F32("top.bias", {w.output_dim}));
  return w;
}

absl::StatusOr<LshTableWeights> DecodeLsh(MetadataReader& meta, TensorReader& tensors,
                                          absl::string_view file) {
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
  ASSIGN_OR_RETURN(w.projection, tensors.F32("hash.projection", {hashes, w.input_dim}));
  ASSIGN_OR_RETURN(w.offset, tensors.F32("hash.offset", {hashes}));
  ASSIGN_OR_RETURN(w.alpha, tensors.F32("alpha", {w.num_tables}));
  std::vector<int64_t> per_bucket = {w.output_dim};
  if (w.degree == 1) per_bucket.push_back(w.input_dim + 1);
  // Three tensors per table must be in the file before a table is made.
  if (w.num_tables > tensors.Count() / 3) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": tables=", w.num_tables, " needs ",
                                                   3 * w.num_tables, " table tensors; the file holds ",
                                                   tensors.Count(), " tensors in all"));
  }
  w.tables.resize(w.num_tables);
  for (int64_t i = 0; i < w.num_tables; ++i) {
    const std::string prefix = absl::StrCat("table.", i);
    ASSIGN_OR_RETURN(int64_t n, tensors.Length(prefix + ".keys"));
    ASSIGN_OR_RETURN(w.tables[i].keys, tensors.Get<uint64_t>(prefix + ".keys", DType::kU64, {n}));
    std::vector<int64_t> values_shape = {n};
    values_shape.insert(values_shape.end(), per_bucket.begin(), per_bucket.end());
    ASSIGN_OR_RETURN(w.tables[i].values, tensors.F32(prefix + ".values", values_shape));
    ASSIGN_OR_RETURN(w.tables[i].fallback, tensors.F32(prefix + ".fallback", per_bucket));
  }
  return w;
}

absl::StatusOr<DsmWeights> DecodeDsm(MetadataReader& meta, TensorReader& tensors,
                                     absl::string_view file) {
  DsmWeights w;
  ASSIGN_OR_RETURN(w.network, DecodeNetwork(meta, tensors));
  ASSIGN_OR_RETURN(w.router, meta.Enum("router", &ParseRouterKind));
  ASSIGN_OR_RETURN(w.num_blocks, meta.Dim("blocks"));
  ASSIGN_OR_RETURN(w.num_experts, meta.Dim("experts"));
  ASSIGN_OR_RETURN(w.active_units, meta.Dim("active_units"));
  const int64_t d = w.network.input_dim;
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
};

absl::StatusOr<std::map<std::string, ManifestEntry>> ReadManifest(const std::string& dir) {
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
  Json& manifest = *parsed;
  if (!manifest.is_object()) return absl::InvalidArgumentError(m + ": not a JSON object");
  if (!manifest.contains("format_version") || !manifest["format_version"].is_number_integer() ||
      manifest["format_version"].get<int64_t>() != kCheckpointFormatVersion) {
    return absl::InvalidArgumentError(absl::StrCat(m, ": format_version must be ",
                                                   kCheckpointFormatVersion));
  }
  if (!manifest.contains("files") || !manifest["files"].is_object()) {
    return absl::InvalidArgumentError(m + ": 'files' must be an object");
  }
  std::map<std::string, ManifestEntry> entries;
  for (auto it = manifest["files"].begin(); it != manifest["files"].end(); ++it) {
    if (it.key() != kModelFile && it.key() != kDenseFile) {
      return absl::InvalidArgumentError(absl::StrCat(m, ": unexpected file '", it.key(), "'"));
    }
    const Json& e = it.value();
    if (!e.is_object() || !e.contains("bytes") || !e["bytes"].is_number_unsigned() ||
        !e.contains("sha256") || !e["sha256"].is_string() ||
        e["sha256"].get<std::string>().size() != 64) {
      return absl::InvalidArgumentError(absl::StrCat(
          m, ": entry '", it.key(), "' needs 'bytes' (integer) and 'sha256' (64 hex digits)"));
    }
    entries[it.key()] = {e["bytes"].get<uint64_t>(), e["sha256"].get<std::string>()};
  }
  if (!entries.contains(kModelFile)) {
    return absl::InvalidArgumentError(absl::StrCat(m, ": does not list ", kModelFile));
  }
  return entries;
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

std::string ManifestJson(const std::map<std::string, std::string>& files) {
  Json manifest = {{"format_version", kCheckpointFormatVersion}, {"files", Json::object()}};
  for (const auto& [name, contents] : files) {
    manifest["files"][name] = {
        {"bytes", contents.size()},
        {"sha256", Sha256Hex({reinterpret_cast<const uint8_t*>(contents.data()), contents.size()})}};
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
// Tensor files are held about three times at the peak of a load.
constexpr uint64_t kFileCopies = 3;

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
  e.files = SatMul(SatMul(kFileCopies, file_bytes),
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
      indices = SatAdd(SatAdd(rows, E), SatAdd(1, SatMul({rows, L}) / 2));  // + expert ids
    }
    if (!c.dense.has_value()) floats = SatAdd(floats, DenseWorkspaceFloats(net, rows));
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
  ASSIGN_OR_RETURN(auto manifest, ReadManifest(dir));
  for (const char* name : {kModelFile, kDenseFile}) {
    std::error_code ec;  // a file we cannot even stat is reported when opened
    if (!manifest.contains(name) && fs::symlink_status(fs::path(dir) / name, ec).type() !=
                                        fs::file_type::not_found && !ec) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " is present but not listed in ", kManifestFile));
    }
  }
  // The files the manifest declares, against the budget before any is read.
  uint64_t file_bytes = 0;
  for (const auto& [name, entry] : manifest) file_bytes = SatAdd(file_bytes, entry.bytes);
  if (options.max_bytes > 0 && SatMul(kFileCopies, file_bytes) > options.max_bytes) {
    return OverBudget(SatMul(kFileCopies, file_bytes),
                      absl::StrCat(kFileCopies, " x ", file_bytes, " bytes of tensor files, as ",
                                   kManifestFile, " declares them"),
                      options);
  }
  Checkpoint checkpoint;
  {
    ASSIGN_OR_RETURN(FileContents model_file, OpenVerified(dir, kModelFile, manifest[kModelFile]));
    ASSIGN_OR_RETURN(SafetensorsContents contents,
                     ParseSafetensors(model_file.bytes(), kModelFile));
    MetadataReader meta(contents.metadata, kModelFile);
    TensorReader tensors(contents, kModelFile);
    RETURN_IF_ERROR(WithFile(kModelFile, CheckFormatVersion(meta)));
    ASSIGN_OR_RETURN(std::string kind, meta.String("kind"));
    if (kind == "lsh_table") {
      ASSIGN_OR_RETURN(checkpoint.sparse, DecodeLsh(meta, tensors, kModelFile));
    } else if (kind == "dsm") {
      ASSIGN_OR_RETURN(checkpoint.sparse, DecodeDsm(meta, tensors, kModelFile));
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          kModelFile, ": kind must be 'lsh_table' or 'dsm', got '", kind, "'"));
    }
    RETURN_IF_ERROR(meta.Finish(&checkpoint.info));
    RETURN_IF_ERROR(tensors.Finish());
    checkpoint.tensor_precision = tensors.stored();
    RETURN_IF_ERROR(WithFile(kModelFile, std::visit([](const auto& w) { return w.Validate(); },
                                                    checkpoint.sparse)));
  }
  if (manifest.contains(kDenseFile)) {
    ASSIGN_OR_RETURN(FileContents dense_file, OpenVerified(dir, kDenseFile, manifest[kDenseFile]));
    ASSIGN_OR_RETURN(checkpoint.dense, ReadDense(dense_file));
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
          absl::StrCat(kFileCopies, " x ", file_bytes, " bytes of tensor files + ", e.index,
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
    ASSIGN_OR_RETURN(Checkpoint checkpoint, ReadCheckpoint(version_dir, options));
    LoadedModel loaded;
    loaded.info = std::move(checkpoint.info);
    const Precision precision = options.precision;
    if (const auto* lsh = std::get_if<LshTableWeights>(&checkpoint.sparse)) {
      ASSIGN_OR_RETURN(loaded.sparse, LshTableModel::Create(*lsh, precision));
    } else {
      const DsmWeights& dsm = std::get<DsmWeights>(checkpoint.sparse);
      ASSIGN_OR_RETURN(loaded.sparse, DsmModel::Create(dsm, precision));
      if (!checkpoint.dense.has_value()) {
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
