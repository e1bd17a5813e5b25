#include "model_store/model_source.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "common/client_text.h"
#include "model_store/file_util.h"

namespace sparse {

namespace fs = std::filesystem;

namespace {

constexpr char kConfigFile[] = "config.pbtxt";
// A config holds a few lines; this bounds what reading one can cost.
constexpr uint64_t kMaxConfigBytes = 1 << 20;

// Collects the first text-format error with its position.
class FirstError final : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (error.empty()) error = absl::StrCat("line ", line + 1, " column ", column + 1, ": ", message);
  }
  std::string error;
};

}  // namespace

absl::StatusOr<sparse::v1::ModelConfig> ParseModelConfig(absl::string_view text) {
  sparse::v1::ModelConfig config;
  google::protobuf::TextFormat::Parser parser;
  FirstError errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(std::string(text), &config)) {
    return absl::InvalidArgumentError(absl::StrCat(kConfigFile, " ", errors.error));
  }
  const sparse::v1::VersionPolicy& policy = config.version_policy();
  if (policy.has_latest() && policy.latest().num_versions() < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        kConfigFile, ": version_policy.latest.num_versions must be >= 1, got ",
        policy.latest().num_versions()));
  }
  if (policy.has_specific()) {
    if (policy.specific().versions().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(kConfigFile, ": version_policy.specific lists no versions"));
    }
    for (int64_t v : policy.specific().versions()) {
      if (v < 1) {
        return absl::InvalidArgumentError(absl::StrCat(
            kConfigFile, ": version_policy.specific.versions must be >= 1, got ", v));
      }
    }
  }
  if (config.has_dynamic_batching()) {
    const sparse::v1::DynamicBatching& b = config.dynamic_batching();
    if (b.max_batch_rows() < 0 || b.max_batch_rows() > (1 << 20) || b.max_queue_delay_us() < 0 ||
        b.max_queue_delay_us() > 10'000'000 || b.max_queue_size() < 0 ||
        b.max_queue_size() > (1 << 24)) {
      return absl::InvalidArgumentError(absl::StrCat(
          kConfigFile, ": dynamic_batching needs 0 <= max_batch_rows <= 1048576, ",
          "0 <= max_queue_delay_us <= 10000000 and 0 <= max_queue_size <= 16777216; got ",
          b.ShortDebugString()));
    }
  }
  if (!sparse::v1::Precision_IsValid(config.precision())) {
    return absl::InvalidArgumentError(absl::StrCat(
        kConfigFile, ": precision must be FP32, BF16 or INT8; got ", config.precision()));
  }
  return config;
}

Precision PrecisionFromConfig(sparse::v1::Precision precision) {
  switch (precision) {
    case sparse::v1::BF16:
      return Precision::kBf16;
    case sparse::v1::INT8:
      return Precision::kInt8;
    default:
      return Precision::kFp32;
  }
}

absl::Status CheckModelName(absl::string_view name) {
  if (name.empty() || name == "." || name == ".." || name[0] == '.' ||
      name.find('/') != absl::string_view::npos || name.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        "a model name is a plain directory name: not empty, not hidden, without '/' or NUL");
  }
  return absl::OkStatus();
}

AspiredVersions SelectVersions(const sparse::v1::VersionPolicy& policy,
                               const std::vector<int64_t>& on_disk) {
  AspiredVersions aspired;
  const std::set<int64_t> specific(policy.specific().versions().begin(),
                                   policy.specific().versions().end());
  for (int64_t version : on_disk) {
    if (policy.has_specific() && specific.count(version) == 0) continue;
    aspired.candidates.push_back(version);
  }
  aspired.count = policy.has_all() || policy.has_specific()
                      ? aspired.candidates.size()
                      : static_cast<size_t>(policy.has_latest() ? policy.latest().num_versions() : 1);
  return aspired;
}

std::vector<std::string> RepositorySource::ListModels(std::error_code* ec) const {
  std::vector<std::string> models;
  for (fs::directory_iterator it(root_, *ec); !*ec && it != fs::directory_iterator();
       it.increment(*ec)) {
    const std::string name = it->path().filename().string();
    std::error_code dir_ec;
    if (CheckModelName(name).ok() && it->is_directory(dir_ec)) models.push_back(name);
  }
  return models;
}

bool RepositorySource::HasModel(const std::string& model) const {
  std::error_code ec;
  return CheckModelName(model).ok() && fs::is_directory(fs::path(root_) / model, ec);
}

std::string RepositorySource::VersionDir(const std::string& model, int64_t version) const {
  return (fs::path(root_) / model / std::to_string(version)).string();
}

std::vector<int64_t> RepositorySource::ListVersions(const std::string& model,
                                                    std::error_code* ec,
                                                    std::vector<std::string>* not_versions) const {
  std::vector<int64_t> versions;
  fs::directory_iterator it(fs::path(root_) / model, *ec);
  for (; !*ec && it != fs::directory_iterator(); it.increment(*ec)) {
    int64_t version = 0;
    std::error_code entry_ec;
    // Only canonical names ("7", not "007", "+7" or " 7"): a version is
    // looked up on disk by its number's name.
    const std::string name = it->path().filename().string();
    if (absl::SimpleAtoi(name, &version) && version >= 1 && std::to_string(version) == name &&
        it->is_directory(entry_ec)) {
      versions.push_back(version);
    } else if (not_versions != nullptr && !name.empty() && name[0] != '.' &&
               it->is_directory(entry_ec)) {
      not_versions->push_back(name);
    }
  }
  std::sort(versions.rbegin(), versions.rend());
  if (not_versions != nullptr) std::sort(not_versions->begin(), not_versions->end());
  return versions;
}

std::string RepositorySource::NothingToServe(const std::string& model) const {
  constexpr absl::string_view kReason = "no version directory to serve";
  std::error_code ec;
  std::vector<std::string> others;
  const std::vector<int64_t> versions = ListVersions(model, &ec, &others);
  if (ec) return absl::StrCat(kReason, " (cannot list it: ", ec.message(), ")");
  if (!versions.empty()) {
    return absl::StrCat(kReason, ": config.pbtxt's version_policy selects none of versions ",
                        absl::StrJoin(versions, ", "));
  }
  if (others.empty()) {
    return absl::StrCat(kReason, " (the model directory holds no directory; a version is a "
                                 "directory named by an integer >= 1, e.g. ",
                        ClientText(model), "/1/)");
  }
  const size_t count = others.size();
  if (others.size() > 8) others.resize(8);  // the first few say enough
  for (std::string& name : others) name = absl::StrCat(ClientText(name, 64), "/");
  return absl::StrCat(kReason, ": ", absl::StrJoin(others, ", "), count > others.size() ? ", ..." : "",
                      count == 1 ? " is not a version" : " are not versions",
                      " (a version directory is named by an integer >= 1 without leading "
                      "zeros, e.g. 1/)");
}

absl::Status CheckNotDenseTwinName(absl::string_view name) {
  if (!absl::EndsWith(name, kDenseTwinSuffix) || name.size() == kDenseTwinSuffix.size()) {
    return absl::OkStatus();
  }
  const absl::string_view twin_of = name.substr(0, name.size() - kDenseTwinSuffix.size());
  return absl::FailedPreconditionError(absl::StrCat(
      "refused: a model name ending in '.dense' names the dense twin of model '",
      ClientText(twin_of, 128), "' over REST and OIP; rename the directory (e.g. '",
      ClientText(twin_of, 128), "_dense')"));
}

std::string RepositorySource::Fingerprint(const std::string& dir) {
  std::vector<std::string> parts;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    std::error_code file_ec;
    const auto size = it->file_size(file_ec);
    const auto time = it->last_write_time(file_ec);
    parts.push_back(absl::StrCat(it->path().filename().string(), ":", file_ec ? 0 : size, ":",
                                 time.time_since_epoch().count()));
  }
  std::sort(parts.begin(), parts.end());
  return absl::StrJoin(parts, ",");
}

uint64_t RepositorySource::FileBytes(const std::string& dir) {
  uint64_t bytes = 0;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    std::error_code file_ec;
    if (!it->is_regular_file(file_ec)) continue;
    const uintmax_t size = it->file_size(file_ec);
    if (!file_ec) bytes += size;
  }
  return bytes;
}

bool RepositorySource::UnderRoot(const std::string& resolved) const {
  std::error_code ec;
  const fs::path root = fs::canonical(root_, ec);
  if (ec) return false;
  const fs::path path(resolved);
  // Component by component: /models2 is not inside /models.
  return std::mismatch(root.begin(), root.end(), path.begin(), path.end()).first == root.end();
}

bool RepositorySource::InsideRoot(const std::string& dir) const {
  std::error_code ec;
  const fs::path real = fs::canonical(dir, ec);
  if (ec || !UnderRoot(real.string())) return false;
  // The files too: a version's model.safetensors may be a link as well.
  for (fs::directory_iterator it(real, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    std::error_code file_ec;
    const fs::path file = fs::canonical(it->path(), file_ec);
    if (file_ec || !UnderRoot(file.string())) return false;
  }
  return !ec;
}

absl::StatusOr<std::string> RepositorySource::ReadConfigText(const std::string& model) const {
  const fs::path path = fs::path(root_) / model / kConfigFile;
  std::error_code ec;
  if (fs::symlink_status(path, ec).type() == fs::file_type::not_found) return std::string();
  const fs::path real = fs::canonical(path, ec);
  if (ec == std::errc::no_such_file_or_directory) return std::string();  // gone, or dangling
  if (ec || !UnderRoot(real.string())) {
    return absl::InvalidArgumentError(absl::StrCat(
        kConfigFile, " leads outside the model repository (a symlink?); refused"));
  }
  // Opened without blocking (a FIFO), only if it is a regular file (not a
  // device or a directory), and only up to the cap: never a hang while
  // loading, never unbounded memory.
  absl::StatusOr<FileContents> file = FileContents::Read(
      real.string(), kConfigFile, kMaxConfigBytes,
      absl::StrCat("more than the ", kMaxConfigBytes, " bytes a config may have"));
  if (absl::IsNotFound(file.status())) return std::string();
  if (!file.ok()) return file.status();
  return std::string(reinterpret_cast<const char*>(file->bytes().data()), file->bytes().size());
}

void RepositorySource::ReadModelConfig(const std::string& model, const ModelState* previous,
                                       ModelState* state, std::vector<std::string>* log) const {
  if (previous != nullptr) {
    state->config = previous->config;
    state->config_text = previous->config_text;
  }
  // Logged once per new error, saying what applies meanwhile.
  auto fail = [&](absl::string_view error) {
    state->config_error = std::string(error);
    if (previous == nullptr || previous->config_error != state->config_error) {
      log->push_back(absl::StrCat("model ", model, ": ", state->config_error,
                                  previous != nullptr && previous->config_error.empty()
                                      ? " (the previous config stays)"
                                      : " (defaults apply)"));
    }
  };
  absl::StatusOr<std::string> text = ReadConfigText(model);
  if (!text.ok()) {
    fail(text.status().message());
    return;
  }
  if (previous != nullptr && *text == previous->config_text && previous->config_error.empty()) {
    return;  // unchanged
  }
  absl::StatusOr<sparse::v1::ModelConfig> config = ParseModelConfig(*text);
  if (!config.ok()) {
    fail(config.status().message());
    return;
  }
  state->config = *std::move(config);
  state->config_text = *std::move(text);
  if (previous != nullptr) log->push_back(absl::StrCat("model ", model, ": new ", kConfigFile, " applied"));
}

}  // namespace sparse
