// A structure-aware checkpoint fuzzer (issue 15). checkpoint_fuzz mutates
// bytes, so it rarely gets a header past the JSON parser with a new shape;
// this target starts from a valid version of every kind and reads its
// input as a small program of edits on the parsed safetensors headers and
// the manifest: metadata values set to extreme integers or junk, tensor
// shapes, offsets and dtypes changed, keys dropped, duplicated or renamed,
// values nested deeply, data bytes changed, the manifest's sizes changed.
// The files are serialised again, the manifest resealed (unless an edit
// changed it), and LoadCheckpoint must return an error or a model that
// predicts, never crash, leak, hang or allocate past -rss_limit_mb.
//
// Sizes come from the input as small codes (an index into a table of
// extreme integers, a nesting depth in units of 1200), so nesting hundreds
// of thousands deep and sizes of 2^62 are reached with a few bytes, well
// inside -max_len.
//
// Input: byte 0 picks the base version (bits 0-2: lsh_table Δ=0,
// lsh_table Δ=1 euclidean, dsm lsh, dsm hash, dsm kmeans, dsm topk; bit 3:
// without its dense twin; bit 4: load under a 1 MiB budget), then edits of
// 4 bytes each: opcode, a, b, c.
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "model_store/checkpoint.h"
#include "nlohmann/json.hpp"
#include "tests/fuzz/fuzz_util.h"
#include "tests/testing/random_models.h"

namespace {

using Json = nlohmann::json;
using sparse::Checkpoint;

// Values an edit can set, by index: the boundaries a loader must hold.
const char* const kIntegers[] = {
    "0", "1", "2", "3", "7", "8", "64", "65", "-1", "-9223372036854775808",
    "2147483647", "2147483648", "4294967295", "4294967297", "1099511627776", "1099511627777",
    "4611686018427387904", "9223372036854775807", "18446744073709551615",
    "18446744073709551616", "1e3", "0x10", " 1", "1 ", "", "NaN", "inf", "-0", "+5", "0.5",
    "relu", "identity", "topk", "lsh", "hash", "kmeans", "hyperplane", "euclidean", "dsm",
    "lsh_table", "dense"};
constexpr size_t kNumIntegers = sizeof(kIntegers) / sizeof(kIntegers[0]);

const uint64_t kShapeValues[] = {0,
                                 1,
                                 2,
                                 3,
                                 8,
                                 17,
                                 64,
                                 1024,
                                 uint64_t{1} << 31,
                                 uint64_t{1} << 32,
                                 uint64_t{1} << 40,
                                 (uint64_t{1} << 40) + 1,
                                 uint64_t{1} << 62,
                                 uint64_t{INT64_MAX},
                                 uint64_t{INT64_MAX} + 1,
                                 UINT64_MAX};
constexpr size_t kNumShapeValues = sizeof(kShapeValues) / sizeof(kShapeValues[0]);

const char* const kKeys[] = {"format_version", "kind",        "input_dim",   "output_dim",
                             "tables",         "hashes",      "degree",      "family",
                             "bucket_width",   "width",       "activation",  "router",
                             "blocks",         "experts",     "active_units", "hash_seed",
                             "info.note",      "unknown_key"};
constexpr size_t kNumKeys = sizeof(kKeys) / sizeof(kKeys[0]);

const char* const kDtypes[] = {"F32", "U64", "I64", "F16", "BF16", "", "f32"};
constexpr size_t kNumDtypes = sizeof(kDtypes) / sizeof(kDtypes[0]);

// A placeholder string replaced, after serialisation, by `depth` nested
// arrays around `inner` (so the fuzzer's own DOM never holds the nesting).
struct Deep {
  size_t depth;
  std::string inner;
};

struct Header {
  Json json;
  std::string data;
};

Header Split(const std::string& file) {
  uint64_t n = 0;
  std::memcpy(&n, file.data(), 8);
  return {Json::parse(file.substr(8, n)), file.substr(8 + n)};
}

std::string Join(const Header& h, const std::vector<Deep>& deep) {
  std::string text = h.json.dump();
  for (size_t i = 0; i < deep.size(); ++i) {
    const std::string marker = absl::StrCat("\"@@deep", i, "@@\"");
    const std::string nested = std::string(deep[i].depth, '[') + deep[i].inner +
                               std::string(deep[i].depth, ']');
    const size_t at = text.find(marker);
    if (at != std::string::npos) text.replace(at, marker.size(), nested);
  }
  const uint64_t n = text.size();
  return std::string(reinterpret_cast<const char*>(&n), 8) + text + h.data;
}

// The tensor names of a header (not __metadata__), in order.
std::vector<std::string> TensorNames(const Json& header) {
  std::vector<std::string> names;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() != "__metadata__") names.push_back(it.key());
  }
  return names;
}

// Valid base versions, built once: model.safetensors and dense.safetensors.
const std::vector<std::map<std::string, std::string>>& Bases() {
  static const auto* bases = [] {
    using namespace sparse;
    using namespace sparse::testing;
    auto* out = new std::vector<std::map<std::string, std::string>>;
    std::vector<Checkpoint> checkpoints(6);
    checkpoints[0].sparse = RandomLshTable({.d = 3, .o = 2, .s = 2, .m = 3, .sample_rows = 64}, 1);
    checkpoints[1].sparse =
        RandomLshTable({.d = 3, .o = 2, .s = 2, .m = 2, .degree = 1,
                        .family = HashFamily::kEuclidean, .sample_rows = 64},
                       2);
    checkpoints[2].sparse = RandomDsm({.d = 3, .o = 2, .blocks = 2, .experts = 2,
                                       .active_units = 2, .router = RouterKind::kLsh},
                                      3);
    checkpoints[3].sparse = RandomDsm({.d = 3, .o = 2, .blocks = 2, .experts = 2,
                                       .active_units = 2, .router = RouterKind::kHash},
                                      4);
    checkpoints[4].sparse = RandomDsm({.d = 3, .o = 2, .blocks = 2, .experts = 2,
                                       .active_units = 2, .router = RouterKind::kKmeans},
                                      5);
    checkpoints[5].sparse = RandomDsm({.d = 3, .o = 2, .blocks = 2, .active_units = 2,
                                       .router = RouterKind::kTopk, .topk_block_units = 4},
                                      6);
    for (Checkpoint& c : checkpoints) {
      c.dense = RandomDense(3, 8, 2, Activation::kRelu, 7);
      out->push_back({{kModelFile, SerializeSparse(c)}, {kDenseFile, SerializeDense(*c.dense)}});
    }
    return out;
  }();
  return *bases;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const std::string dir = sparse::fuzz::ScratchDir("checkpoint_structure");
  const uint8_t mode = data[0];
  const auto& base = Bases()[(mode & 7) % 6];
  const bool with_dense = (mode & 8) == 0;
  std::map<std::string, Header> files;
  files[sparse::kModelFile] = Split(base.at(sparse::kModelFile));
  if (with_dense) files[sparse::kDenseFile] = Split(base.at(sparse::kDenseFile));
  std::map<std::string, std::vector<Deep>> deep;
  Json manifest_edits = Json::object();  // file -> {"bytes": n}
  bool manifest_deep = false;
  size_t manifest_depth = 0;
  std::string target = sparse::kModelFile;

  for (size_t i = 1; i + 4 <= size; i += 4) {
    const uint8_t op = data[i], a = data[i + 1], b = data[i + 2], c = data[i + 3];
    Header& h = files.count(target) ? files[target] : files[sparse::kModelFile];
    Json& header = h.json;
    // An edit that does not fit what earlier edits left (a key of a header
    // that is no longer an object, say) is skipped.
    try {
    const std::vector<std::string> names = header.is_object() ? TensorNames(header)
                                                              : std::vector<std::string>();
    const std::string tensor = names.empty() ? "x" : names[a % names.size()];
    switch (op % 14) {
      case 0:  // a metadata value
        header["__metadata__"][kKeys[a % kNumKeys]] = kIntegers[b % kNumIntegers];
        break;
      case 1: {  // a shape dimension
        Json& shape = header[tensor]["shape"];
        if (!shape.is_array()) shape = Json::array();
        const uint64_t v = kShapeValues[c % kNumShapeValues];
        if (shape.empty() || b % 4 == 3) {
          shape.push_back(v);
        } else if (b % 4 == 2) {
          shape.erase(shape.size() - 1);
        } else {
          shape[b % shape.size()] = v;
        }
        break;
      }
      case 2: {  // data_offsets: an extreme value, or nudged by a few bytes
        Json& offsets = header[tensor]["data_offsets"];
        if (!offsets.is_array() || offsets.size() != 2) offsets = {0, 0};
        const int k = b & 1;
        if (b & 2) {
          offsets[k] = kShapeValues[c % kNumShapeValues];
        } else if (offsets[k].is_number_unsigned()) {
          offsets[k] = offsets[k].get<uint64_t>() + static_cast<int8_t>(c);
        }
        break;
      }
      case 3:
        header[tensor]["dtype"] = kDtypes[b % kNumDtypes];
        break;
      case 4: {  // nest a value (or the whole header) 1024 * (b + 1) deep
        auto& list = deep[target];
        const std::string marker = absl::StrCat("@@deep", list.size(), "@@");
        const size_t depth = static_cast<size_t>(b + 1) * 1200 + c;
        std::string inner = (a & 1) ? "1" : "";
        switch (a % 4) {
          case 0: header[tensor]["shape"] = marker; break;
          case 1: header["__metadata__"][kKeys[c % kNumKeys]] = marker; break;
          case 2: header[tensor]["data_offsets"] = marker; break;
          case 3: header = marker; break;
        }
        list.push_back({depth, inner});
        break;
      }
      case 5:  // drop a tensor or a metadata key
        if (b & 1) {
          header["__metadata__"].erase(kKeys[a % kNumKeys]);
        } else {
          header.erase(tensor);
        }
        break;
      case 6:  // duplicate a tensor under another (plausible) name
        header[absl::StrCat("table.", c, b & 1 ? ".keys" : ".values")] = header[tensor];
        break;
      case 7:  // rename a tensor
        if (!names.empty()) {
          Json moved = header[tensor];
          header.erase(tensor);
          header[absl::StrCat(tensor, b & 1 ? "x" : "", c)] = std::move(moved);
        }
        break;
      case 8:  // a data byte (NaNs, infinities, unsorted keys)
        if (!h.data.empty()) h.data[(b * 256 + c) % h.data.size()] = static_cast<char>(a);
        break;
      case 9:  // the data section shorter or longer
        if (b & 1) {
          h.data.resize(h.data.size() > c ? h.data.size() - c : 0);
        } else {
          h.data.append(c, static_cast<char>(a));
        }
        break;
      case 10:
        target = target == sparse::kModelFile ? sparse::kDenseFile : sparse::kModelFile;
        break;
      case 11:  // the manifest declares another size for a file
        manifest_edits[b & 1 ? sparse::kDenseFile : sparse::kModelFile] =
            kShapeValues[c % kNumShapeValues];
        break;
      case 12:  // the manifest nested deeply
        manifest_deep = true;
        manifest_depth = static_cast<size_t>(b) * 256 + c;
        break;
      case 13:  // a long metadata string
        header["__metadata__"][kKeys[a % kNumKeys]] = std::string(b * 256 + c, '7');
        break;
    }
    } catch (const Json::exception&) {
    }
  }

  std::map<std::string, std::string> bytes;
  for (const auto& [name, h] : files) bytes[name] = Join(h, deep[name]);
  std::error_code ec;
  std::filesystem::remove(dir + "/" + sparse::kDenseFile, ec);
  for (const auto& [name, contents] : bytes) {
    std::ofstream(dir + "/" + name, std::ios::binary)
        .write(contents.data(), static_cast<std::streamsize>(contents.size()));
  }
  std::string manifest = sparse::ManifestJson(bytes);
  if (!manifest_edits.empty()) {
    Json m = Json::parse(manifest);
    for (auto it = manifest_edits.begin(); it != manifest_edits.end(); ++it) {
      if (m["files"].contains(it.key())) m["files"][it.key()]["bytes"] = it.value();
    }
    manifest = m.dump();
  }
  if (manifest_deep) {
    manifest = absl::StrReplaceAll(
        manifest, {{"\"format_version\"", absl::StrCat("\"x\":", std::string(manifest_depth, '['),
                                                       std::string(manifest_depth, ']'),
                                                       ",\"format_version\"")}});
  }
  std::ofstream(dir + "/" + sparse::kManifestFile, std::ios::binary) << manifest;
  sparse::LoadOptions options;
  if (mode & 16) options.max_bytes = 1 << 20;
  absl::StatusOr<sparse::LoadedModel> loaded = sparse::LoadCheckpoint(dir, options);
  if (loaded.ok()) sparse::fuzz::PredictOnce(*loaded);
  return 0;
}
