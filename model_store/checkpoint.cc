// The orchestration of a version directory: the manifest, reading a version
// (or a part of it), writing one, and loading it into engine models. What
// is in the tensor files is each kind's codec's (kind_codec.h), reading and
// writing tensors is tensor_io.h's, and what a load may cost load_budget.h's.
#include "model_store/checkpoint.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <new>
#include <stdexcept>
#include <system_error>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "model_store/file_util.h"
#include "model_store/json_util.h"
#include "model_store/kind_codec.h"
#include "model_store/kinds/dense_codec.h"
#include "model_store/load_budget.h"
#include "model_store/safetensors.h"
#include "model_store/tensor_io.h"
#include "nlohmann/json.hpp"

namespace sparse {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

// A manifest lists two files and, at format_version 2, ~70 bytes per
// tensor part: 16 MiB holds 200,000 sums (e.g. 4,096 experts in 16 blocks
// and their three sliced tensors), and bounds what parsing it costs.
constexpr size_t kMaxManifestBytes = 16 << 20;

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

// The 'tensors' of file `file` at format_version 2: each tensor's sums.
absl::Status ReadTensorSums(const std::string& file, const Json& tensors,
                            std::map<std::string, TensorHashes>* out) {
  const std::string m = kManifestFile;
  for (auto t = tensors.begin(); t != tensors.end(); ++t) {
    const Json& h = t.value();
    const std::string where = absl::StrCat(m, ": '", file, "' tensor '", t.key(), "'");
    if (!h.is_object() || !h.contains("sha256") || !h["sha256"].is_array() ||
        h["sha256"].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, " needs 'sha256', a non-empty list of sums"));
    }
    TensorHashes& hashes = (*out)[t.key()];
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
  return absl::OkStatus();
}

// The entry `e` of file `file` in a manifest of `format_version`.
absl::Status ReadManifestEntry(const std::string& file, const Json& e, int64_t format_version,
                               ManifestEntry* entry) {
  const std::string m = kManifestFile;
  if (!e.is_object() || !e.contains("bytes") || !e["bytes"].is_number_unsigned() ||
      !e.contains("sha256") || !IsSha256(e["sha256"])) {
    return absl::InvalidArgumentError(absl::StrCat(
        m, ": entry '", file, "' needs 'bytes' (integer) and 'sha256' (64 hex digits)"));
  }
  entry->bytes = e["bytes"].get<uint64_t>();
  entry->sha256 = e["sha256"].get<std::string>();
  if (format_version < 2) return absl::OkStatus();
  if (!e.contains("header_bytes") || !e["header_bytes"].is_number_unsigned() ||
      !e.contains("header_sha256") || !IsSha256(e["header_sha256"]) || !e.contains("tensors") ||
      !e["tensors"].is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        m, ": entry '", file, "' needs 'header_bytes' (integer), 'header_sha256' (64 hex "
        "digits) and 'tensors' (an object) at format_version 2"));
  }
  entry->header_bytes = e["header_bytes"].get<uint64_t>();
  entry->header_sha256 = e["header_sha256"].get<std::string>();
  return ReadTensorSums(file, e["tensors"], &entry->tensors);
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
    RETURN_IF_ERROR(ReadManifestEntry(it.key(), it.value(), manifest.format_version,
                                      &manifest.files[it.key()]));
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

// The parts a writer cuts a tensor into for its sums (docs/checkpoint-
// format.md): as the file's kind cuts it (KindCodec::PartsOf), one part
// where its shape does not divide so, and for files of no sparse kind.
TensorHashes PartsFor(const Metadata& meta, const std::string& name, const TensorView& view) {
  const KindCodec* codec = FindCodec(MetadataValue(meta, "kind"));
  const TensorParts cut = codec != nullptr ? codec->PartsOf(meta, name) : TensorParts{};
  TensorHashes h;
  h.axis = cut.axis;
  int64_t parts = cut.parts;
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
  const KindCodec& codec = CodecOf(checkpoint.sparse);
  TensorWriter out(checkpoint.tensor_precision);
  out.Set("kind", std::string(codec.name()));
  codec.Encode(checkpoint.sparse, &out);
  for (const auto& [key, value] : checkpoint.info) out.Set(kInfoPrefix + key, value);
  return out.Serialize();
}

std::string SerializeDense(const DenseWeights& dense, Precision matrices) {
  TensorWriter out(matrices);
  out.Set("kind", "dense");
  EncodeNetwork(dense, &out);
  return out.Serialize();
}

namespace {

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

// A tensor file present in `dir` but not listed in its manifest.
absl::Status CheckAllListed(const std::string& dir,
                            const std::map<std::string, ManifestEntry>& manifest) {
  for (const char* name : {kModelFile, kDenseFile}) {
    std::error_code ec;  // a file we cannot even stat is reported when opened
    if (!manifest.contains(name) && fs::symlink_status(fs::path(dir) / name, ec).type() !=
                                        fs::file_type::not_found && !ec) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " is present but not listed in ", kManifestFile));
    }
  }
  return absl::OkStatus();
}

// Reads model.safetensors into *checkpoint (for checkpoint->part): the
// whole file, its size and SHA-256 checked, or when `ranged` its header
// and the parts of the tensors the part needs, each checked as it is read.
absl::Status ReadSparse(const std::string& dir, const ManifestEntry& entry, bool ranged,
                        Checkpoint* checkpoint) {
  std::optional<FileContents> whole;
  std::optional<RandomAccessFile> file;
  std::optional<RangedFile> range;
  SafetensorsContents contents;
  if (ranged) {
    ASSIGN_OR_RETURN(file, RandomAccessFile::Open(dir + "/" + kModelFile, kModelFile, entry.bytes));
    ASSIGN_OR_RETURN(contents, ReadCheckedHeader(*file, entry.header_bytes, entry.header_sha256,
                                                 entry.tensors, kModelFile));
    range = RangedFile{&*file, entry.header_bytes, &entry.tensors};
    checkpoint->bytes_read = entry.header_bytes;
  } else {
    ASSIGN_OR_RETURN(whole, OpenVerified(dir, kModelFile, entry));
    ASSIGN_OR_RETURN(contents, ParseSafetensors(whole->bytes(), kModelFile));
    checkpoint->bytes_read = whole->bytes().size();
  }
  MetadataReader meta(contents.metadata, kModelFile);
  TensorReader tensors(contents, kModelFile, range ? &*range : nullptr);
  RETURN_IF_ERROR(WithFile(kModelFile, CheckFormatVersion(meta)));
  ASSIGN_OR_RETURN(std::string kind, meta.String("kind"));
  const KindCodec* codec = FindCodec(kind);
  if (codec == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(kModelFile, ": kind must be ", KindNames(), ", got '", kind, "'"));
  }
  if ((checkpoint->part.role == ModelPart::Role::kShardSkeleton ||
       checkpoint->part.units.has_value()) &&
      !codec->MapsShardWeights()) {
    // Its Decode would read such a part as something else (a whole model,
    // or all of the shard's units).
    return absl::FailedPreconditionError(absl::StrCat(
        kModelFile, ": a shard's skeleton or a group of its units is read only of a kind whose "
        "shards are mapped (dsm), not of kind '", kind, "'"));
  }
  ASSIGN_OR_RETURN(checkpoint->sparse, codec->Decode(meta, tensors, kModelFile, checkpoint->part));
  RETURN_IF_ERROR(meta.Finish(&checkpoint->info));
  RETURN_IF_ERROR(tensors.Finish());
  checkpoint->bytes_read += tensors.bytes_read();
  checkpoint->tensor_precision = tensors.stored();
  return WithFile(kModelFile, codec->Validate(checkpoint->sparse, checkpoint->part.role));
}

}  // namespace

absl::StatusOr<Checkpoint> ReadCheckpoint(const std::string& dir, const LoadOptions& options) {
  ASSIGN_OR_RETURN(Manifest read_manifest, ReadManifest(dir));
  auto& manifest = read_manifest.files;
  RETURN_IF_ERROR(CheckAllListed(dir, manifest));
  const ModelPart& part = options.part;
  // A part of the model reads only the ranges it needs, when the manifest
  // has the sums to check them (format_version 2); a shard never reads the
  // dense twin.
  const bool ranged = part.role != ModelPart::Role::kWhole && read_manifest.format_version >= 2;
  const bool read_dense = manifest.contains(kDenseFile) && !part.Shard();
  // The files the manifest declares, against the budget before any is read
  // (a part is checked once it is read, against what it read).
  uint64_t file_bytes = 0;
  for (const auto& [name, entry] : manifest) {
    if (name == kModelFile || read_dense) file_bytes = SatAdd(file_bytes, entry.bytes);
  }
  if (!ranged) RETURN_IF_ERROR(CheckDeclaredBytes(file_bytes, manifest[kModelFile].tensors, options));
  Checkpoint checkpoint;
  checkpoint.part = part;
  checkpoint.model_sha256 = manifest[kModelFile].sha256;
  RETURN_IF_ERROR(ReadSparse(dir, manifest[kModelFile], ranged, &checkpoint));
  if (ranged) file_bytes = checkpoint.bytes_read;
  if (read_dense) {
    ASSIGN_OR_RETURN(FileContents dense_file, OpenVerified(dir, kDenseFile, manifest[kDenseFile]));
    ASSIGN_OR_RETURN(checkpoint.dense, ReadDense(dense_file));
    if (ranged) file_bytes = SatAdd(file_bytes, dense_file.bytes().size());
    const auto [d, o] = CodecOf(checkpoint.sparse).Dims(checkpoint.sparse);
    if (checkpoint.dense->input_dim != d || checkpoint.dense->output_dim != o) {
      return absl::InvalidArgumentError(absl::StrCat(
          kDenseFile, ": the dense twin maps ", checkpoint.dense->input_dim, " -> ",
          checkpoint.dense->output_dim, " but the sparse model maps ", d, " -> ", o));
    }
  }
  // Every dimension now matches the tensors the files hold: the full
  // estimate, before the engine allocates anything.
  RETURN_IF_ERROR(CheckLoadBytes(checkpoint, file_bytes, options));
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
  const KindCodec& codec = CodecOf(checkpoint.sparse);
  RETURN_IF_ERROR(codec.Validate(checkpoint.sparse, ModelPart::Role::kWhole));
  const auto [d, o] = codec.Dims(checkpoint.sparse);
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

namespace {

// The engine models of `c` (a whole model, or a front's part read as the
// skeleton of a mapped one), their arrays from `store`.
absl::StatusOr<LoadedModel> CreateModels(const Checkpoint& c, const LoadOptions& options,
                                         WeightStore& store) {
  LoadedModel loaded;
  loaded.info = c.info;
  loaded.model_sha256 = c.model_sha256;
  const Precision precision = options.precision;
  PrefixedStore sparse(&store, "sparse/"), dense(&store, "dense/");
  ASSIGN_OR_RETURN(loaded.sparse, CodecOf(c.sparse).CreateModel(c.sparse, precision, sparse));
  if (const DenseWeights* network = CostOnlyDense(c, options)) {
    ASSIGN_OR_RETURN(loaded.dense, DenseModel::Create(*network, precision, &dense));
    loaded.dense_cost_only = true;
  }
  if (c.dense.has_value()) {
    ASSIGN_OR_RETURN(loaded.dense, DenseModel::Create(*c.dense, precision, &dense));
  }
  return loaded;
}

// The kind a version-2 manifest's tensors name (its signature tensor).
const KindCodec* KindOfManifest(const ManifestEntry& model) {
  for (const KindCodec* codec : KindCodecs()) {
    if (model.tensors.contains(std::string(codec->SignatureTensor()))) return codec;
  }
  return nullptr;
}

// Hands the arrays of a model made from a group of units (a shard's part,
// ReadCheckpoint kShard) to `writer`: part p of each at place(p) of the
// file's array of `parts` parts, the whole model's (KindCodec::WholePartOf)
// or a shard's (ShardPartOf). A place outside the array fails the write.
class GroupStore : public WeightStore {
 public:
  GroupStore(WeightCacheWriter* writer, int64_t parts, std::function<int64_t(int64_t)> place)
      : writer_(writer), parts_(parts), place_(std::move(place)) {}
  absl::StatusOr<PackedWeights> Array(absl::string_view name, int64_t parts, int64_t part_floats,
                                      PartFill fill) override {
    if (!writer_->Has(name)) RETURN_IF_ERROR(writer_->Reserve(name, parts_, part_floats));
    std::vector<float> part(static_cast<size_t>(part_floats));
    for (int64_t p = 0; p < parts; ++p) {
      std::fill(part.begin(), part.end(), 0.0f);
      RETURN_IF_ERROR(fill(p, part.data()));
      RETURN_IF_ERROR(writer_->WritePart(name, place_(p), part.data()));
    }
    return PackedWeights();
  }

 private:
  WeightCacheWriter* writer_;
  const int64_t parts_;
  const std::function<int64_t(int64_t)> place_;
};

// The bytes a group of a weight cache file's units decodes at most: about
// options.cache_group_bytes, at most a quarter of the memory budget.
uint64_t CacheGroupBytes(const LoadOptions& options) {
  uint64_t group_bytes = std::max<uint64_t>(options.cache_group_bytes, 1);
  if (options.max_bytes > 0) {
    group_bytes = std::max<uint64_t>(1, std::min(group_bytes, options.max_bytes / 4));
  }
  return group_bytes;
}

// The SHA-256 of a whole file, read in 8 MiB pieces, against `entry`.
absl::Status CheckWholeFile(const std::string& dir, const std::string& name,
                            const ManifestEntry& entry) {
  ASSIGN_OR_RETURN(RandomAccessFile file, RandomAccessFile::Open(dir + "/" + name, name, entry.bytes));
  Sha256 sha;
  std::vector<uint8_t> buffer(8 << 20);
  for (uint64_t at = 0; at < entry.bytes; at += buffer.size()) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(buffer.size(), entry.bytes - at));
    RETURN_IF_ERROR(file.ReadAt(at, absl::MakeSpan(buffer.data(), n)));
    sha.Update(absl::MakeConstSpan(buffer.data(), n));
  }
  const std::string got = sha.HexDigest();
  if (got != entry.sha256) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": SHA-256 ", got,
                                                   " does not match the manifest's ", entry.sha256));
  }
  return absl::OkStatus();
}

// Writes the weight cache file of the version in `dir` (its skeleton read
// already): group by group of experts when the kind allows and no
// cost-only dense endpoint needs the whole network, each group's ranges
// checked against their part sums while the whole file's SHA-256 is
// checked beside them; otherwise from the whole model decoded at once.
absl::Status WriteWeightCache(const std::string& dir, const Manifest& manifest,
                              const Checkpoint& skeleton, const LoadOptions& options,
                              WeightCacheWriter& writer) {
  const KindCodec& codec = CodecOf(skeleton.sparse);
  const ManifestEntry& model = manifest.files.at(kModelFile);
  // The units a group holds: a routed DSM's experts (the kinds whose
  // WholePartOf places a shard's parts).
  const auto* dsm = std::get_if<DsmWeights>(&skeleton.sparse);
  const int64_t experts = dsm != nullptr && dsm->router != RouterKind::kTopk ? dsm->num_experts : 0;
  if (experts == 0 || CostOnlyDense(skeleton, options) != nullptr) {
    ASSIGN_OR_RETURN(Checkpoint whole, ReadCheckpoint(dir, options));
    return CreateModels(whole, options, writer).status();
  }
  absl::Status whole_file;
  std::thread hash([&] { whole_file = CheckWholeFile(dir, kModelFile, model); });
  absl::Status status = [&]() -> absl::Status {
    // A group decodes its tensors and holds them while it is packed: at
    // most a quarter of the memory budget.
    const uint64_t group_bytes = CacheGroupBytes(options);
    const int groups = static_cast<int>(std::clamp<uint64_t>(
        (model.bytes + group_bytes - 1) / group_bytes, 1,
        static_cast<uint64_t>(std::min<int64_t>(experts, kMaxShards))));
    for (int g = 0; g < groups; ++g) {
      LoadOptions group_options = options;
      group_options.part = {.role = ModelPart::Role::kShard, .shard = {.index = g, .count = groups}};
      ASSIGN_OR_RETURN(Checkpoint group, ReadCheckpoint(dir, group_options));
      GroupStore store(&writer, codec.WholeParts(group.sparse),
                       [&](int64_t p) { return codec.WholePartOf(group.sparse, p); });
      PrefixedStore sparse(&store, "sparse/");
      RETURN_IF_ERROR(codec.CreateModel(group.sparse, options.precision, sparse).status());
    }
    if (skeleton.dense.has_value()) {
      PrefixedStore dense(&writer, "dense/");
      RETURN_IF_ERROR(DenseModel::Create(*skeleton.dense, options.precision, &dense).status());
    }
    return absl::OkStatus();
  }();
  hash.join();
  RETURN_IF_ERROR(whole_file);
  return status;
}

// Writes the weight cache file of a shard's part (`skeleton`, read
// already) one group of the shard's experts at a time, each group's ranges
// checked against their part sums as they are read: writing it holds one
// group decoded and no packed copy, never the shard's part twice. Like
// the shard's copy-in read, it reads only the shard's ranges; the whole
// file's SHA-256 is not checked (format_version 2's part sums are).
absl::Status WriteShardWeightCache(const std::string& dir, const Manifest& manifest,
                                   const Checkpoint& skeleton, const LoadOptions& options,
                                   WeightCacheWriter& writer) {
  const KindCodec& codec = CodecOf(skeleton.sparse);
  const auto* dsm = std::get_if<DsmWeights>(&skeleton.sparse);
  if (dsm == nullptr || !dsm->IsShard()) {
    return absl::InternalError(absl::StrCat(
        "a shard's weight cache file is written from a DSM shard's skeleton, got kind '",
        codec.name(), "'", dsm != nullptr ? " that is not a shard's part" : ""));
  }
  const UnitRange owned{dsm->first_expert, dsm->first_expert + dsm->num_experts};
  // The shard's share of the file is about its experts' share of it: the
  // sliced tensors are nearly all of a DSM's bytes.
  const uint64_t model_bytes = manifest.files.at(kModelFile).bytes;
  const uint64_t shard_bytes =
      SatMul(model_bytes / static_cast<uint64_t>(dsm->total_experts) + 1,
             static_cast<uint64_t>(owned.size()));
  const uint64_t group_bytes = CacheGroupBytes(options);
  const int groups = static_cast<int>(std::clamp<uint64_t>(
      (shard_bytes + group_bytes - 1) / group_bytes, 1,
      static_cast<uint64_t>(std::min<int64_t>(owned.size(), kMaxShards))));
  for (int g = 0; g < groups; ++g) {
    const UnitRange in_shard = OwnedUnits(owned.size(), g, groups);
    LoadOptions group_options = options;
    group_options.part = options.part;
    group_options.part.units = UnitRange{owned.begin + in_shard.begin, owned.begin + in_shard.end};
    ASSIGN_OR_RETURN(Checkpoint group, ReadCheckpoint(dir, group_options));
    GroupStore store(&writer, codec.ShardParts(skeleton.sparse), [&](int64_t p) {
      return codec.ShardPartOf(group.sparse, skeleton.sparse, p);
    });
    PrefixedStore sparse(&store, "sparse/");
    RETURN_IF_ERROR(codec.CreateModel(group.sparse, options.precision, sparse).status());
  }
  return absl::OkStatus();
}

// The mapped load (weight_cache.h) of a whole model or of a shard's part;
// nullopt when it cannot be mapped (a format_version 1 manifest, a kind
// that is copied in, or whose shards are).
absl::StatusOr<std::optional<LoadedModel>> LoadMapped(const std::string& dir,
                                                      const LoadOptions& options) {
  ASSIGN_OR_RETURN(Manifest manifest, ReadManifest(dir));
  const KindCodec* kind = KindOfManifest(manifest.files[kModelFile]);
  const bool shard = options.part.role == ModelPart::Role::kShard;
  if (manifest.format_version < 2 || kind == nullptr || !kind->MapsWeights() ||
      (shard && (!kind->MapsShardWeights() || options.part.units.has_value()))) {
    return std::nullopt;
  }
  // A shard's file holds its experts only: no dense network (a shard
  // serves none), and its key names the shard, so that each shard of the
  // version, and each split of it, has its own file.
  const std::string key =
      shard ? WeightCacheKey(manifest.files[kModelFile].sha256, "", options.precision,
                             /*cost_only_dense=*/false, options.part.shard.ToString())
            : WeightCacheKey(
                  manifest.files[kModelFile].sha256,
                  manifest.files.contains(kDenseFile) ? manifest.files[kDenseFile].sha256 : "",
                  options.precision, options.cost_only_dense);
  const std::string path = WeightCachePath(options.weight_cache_dir, key);
  absl::StatusOr<std::shared_ptr<WeightCacheFile>> file =
      WeightCacheFile::Open(path, key, options.weight_verify);
  std::string event = "mapped";
  if (!file.ok()) {
    event = absl::IsNotFound(file.status()) ? "built"
                                            : absl::StrCat("rebuilt: ", file.status().message());
  }
  // The skeleton: dimensions, routing, a0 (and the dense twin), read as a
  // front reads them, each range checked against its sum; of a shard, its
  // dimensions and expert range.
  LoadOptions skeleton_options = options;
  skeleton_options.part = shard ? ModelPart{.role = ModelPart::Role::kShardSkeleton,
                                            .shard = options.part.shard}
                                : ModelPart{.role = ModelPart::Role::kSkeleton};
  ASSIGN_OR_RETURN(Checkpoint skeleton, ReadCheckpoint(dir, skeleton_options));
  // What the models are made of: a whole model (a cost-only dense endpoint
  // if it has one) or the shard's part (none).
  skeleton.part = shard ? options.part : ModelPart{};
  if (!file.ok()) {
    // First sight: every file's SHA-256 checked, the arrays written part
    // by part in the kernels' layouts, then mapped.
    ASSIGN_OR_RETURN(std::unique_ptr<WeightCacheWriter> writer,
                     WeightCacheWriter::Create(path, key));
    RETURN_IF_ERROR(shard ? WriteShardWeightCache(dir, manifest, skeleton, options, *writer)
                          : WriteWeightCache(dir, manifest, skeleton, options, *writer));
    RETURN_IF_ERROR(writer->Publish());
    file = WeightCacheFile::Open(path, key, options.weight_verify);
    RETURN_IF_ERROR(file.status());
  }
  ASSIGN_OR_RETURN(LoadedModel loaded, CreateModels(skeleton, options, **file));
  RETURN_IF_ERROR((*file)->CheckAllUsed());
  loaded.weight_cache = *std::move(file);
  loaded.weight_cache_event = std::move(event);
  return loaded;
}

}  // namespace

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
    if (!options.weight_cache_dir.empty() && (options.part.role == ModelPart::Role::kWhole ||
                                              options.part.role == ModelPart::Role::kShard)) {
      ASSIGN_OR_RETURN(std::optional<LoadedModel> mapped, LoadMapped(version_dir, options));
      if (mapped.has_value()) return *std::move(mapped);
    }
    ASSIGN_OR_RETURN(Checkpoint checkpoint, ReadCheckpoint(version_dir, options));
    return CreateModels(checkpoint, options, CopyIn());
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
