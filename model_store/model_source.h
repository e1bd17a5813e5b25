// The source of the model life cycle (TF Serving's term): what the
// repository on disk asks to serve, read without loading anything.
//
// Layout: <root>/<model>/config.pbtxt (optional, sparse.v1.ModelConfig in
// text format) and <root>/<model>/<version>/ with integer versions >= 1.
// Hidden entries (".tmp-*" from a publisher in progress) are ignored. A path
// that resolves (through symlinks) outside the root is refused.
//
// The manager (model_store/model_repository.h) asks the source for a
// model's config (ReadModelConfig), the versions its policy aspires to
// serve (SelectVersions), and where each version's files are; the loader
// (model_store/model_loader.h) loads them.
#ifndef SPARSE_MODEL_STORE_MODEL_SOURCE_H_
#define SPARSE_MODEL_STORE_MODEL_SOURCE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <system_error>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/precision.h"
#include "model_store/model_state.h"
#include "sparse/v1/model_config.pb.h"

namespace sparse {

// Parses config.pbtxt text and checks its values. Errors name the line and
// column (never a path). The text is today's form (sparse.v1.ModelConfig)
// or Triton's schema (inference.ModelConfig, as Seldon Core 2 writes it),
// told apart by the first field today's form does not know; Triton's is
// mapped to today's form, and every field the server cannot honour is
// refused by name (docs/configuration.md). With `model`, Triton's `name`
// must be it (Triton's rule: the model directory's name).
absl::StatusOr<sparse::v1::ModelConfig> ParseModelConfig(absl::string_view text,
                                                         absl::string_view model = {});

// At most this many priority levels (Triton's priority_levels).
inline constexpr uint64_t kMaxPriorityLevels = 1024;
// Bounds of limits.worker_weight and limits.max_delay_us (a minute).
inline constexpr int64_t kMaxWorkerWeight = 1000;
inline constexpr int64_t kMaxDelayUs = 60'000'000;

// Whether a loaded version's widths (d inputs, o outputs) are what the
// config declares (Triton's input and output dims); FAILED_PRECONDITION
// naming both otherwise.
absl::Status CheckDeclaredDims(const sparse::v1::ModelConfig& config, int64_t input_dim,
                               int64_t output_dim);

// A plain model directory name: not empty, no '/', NUL, "." or "..", not
// hidden. INVALID_ARGUMENT otherwise.
absl::Status CheckModelName(absl::string_view name);

// Over REST and OIP, "<m>.dense" names the dense twin of model <m>, so a
// model directory with that suffix could never be addressed as itself
// there: the repository refuses it (FAILED_PRECONDITION, saying why).
inline constexpr absl::string_view kDenseTwinSuffix = ".dense";
absl::Status CheckNotDenseTwinName(absl::string_view name);

// The versions a model's policy aspires to serve: try `candidates` in order
// (newest first) and serve the first `count` that load, so a corrupt newest
// version leaves an older good one serving.
// config.pbtxt's precision as the engine names it.
Precision PrecisionFromConfig(sparse::v1::Precision precision);

struct AspiredVersions {
  std::vector<int64_t> candidates;
  size_t count = 0;
};
// `on_disk`: the version directories, newest first. The default policy is
// `latest 1`, as in Triton and TF Serving.
AspiredVersions SelectVersions(const sparse::v1::VersionPolicy& policy,
                               const std::vector<int64_t>& on_disk);

class RepositorySource {
 public:
  // With `single_model` (--model_name), the root is KServe's layout: the
  // directory of that one model (version directories 1/, 2/, ... and its
  // config.pbtxt), or of one version (manifest.json and model.safetensors
  // directly in it), served as version 1.
  explicit RepositorySource(std::string root, std::string single_model = "")
      : root_(std::move(root)), single_model_(std::move(single_model)) {}

  const std::string& root() const { return root_; }

  // The model directories under the root, by name; *ec is set when the
  // listing stopped part way.
  std::vector<std::string> ListModels(std::error_code* ec) const;
  bool HasModel(const std::string& model) const;

  // Fills state->config / config_text / config_error of `model` from its
  // config.pbtxt: absent = defaults; unreadable or unparsable = the
  // previous config stays (or the defaults, the first time) and
  // config_error says why. Appends a log line when that changes.
  // `check`, when given, vets a config that parsed (e.g. its declared
  // dims against the versions that serve); its error is a config error.
  void ReadModelConfig(
      const std::string& model, const ModelState* previous, ModelState* state,
      std::vector<std::string>* log,
      const std::function<absl::Status(const sparse::v1::ModelConfig&)>& check = nullptr) const;

  // The version directories of `model`, newest first (canonical names
  // only: "7", not "007"); *ec is set when they cannot be listed. With
  // `not_versions`, also the other directories in it, sorted ("v1",
  // "latest", "007"; hidden ones are a publisher's and not listed).
  std::vector<int64_t> ListVersions(const std::string& model, std::error_code* ec,
                                    std::vector<std::string>* not_versions = nullptr) const;
  // Why nothing of `model`'s directory can serve when it holds no version
  // directory the policy selects: the reason docs/api.md gives ("no version
  // directory to serve") and what the directory holds instead.
  std::string NothingToServe(const std::string& model) const;
  std::string VersionDir(const std::string& model, int64_t version) const;

  // Whether a version directory and every file in it, with every symlink
  // resolved, are inside the root.
  bool InsideRoot(const std::string& dir) const;

  // Names, sizes and modification times of a version's files: a failed
  // version is tried again at once when this changes (a copy finished, a
  // file was replaced).
  static std::string Fingerprint(const std::string& dir);
  // The bytes of the regular files in a version directory.
  static uint64_t FileBytes(const std::string& dir);

 private:
  // The version directories in `dir` (ListVersions).
  static std::vector<int64_t> ListVersionsIn(const std::string& dir, std::error_code* ec,
                                             std::vector<std::string>* not_versions);
  // config.pbtxt of `model` (empty when absent), or why it cannot be read:
  // not a regular file, too large, or leading outside the root.
  absl::StatusOr<std::string> ReadConfigText(const std::string& model) const;
  bool UnderRoot(const std::string& resolved) const;
  // The directory of `model`: <root>/<model>, or the root itself with
  // --model_name.
  std::string ModelDir(const std::string& model) const;
  // KServe's layout (single_model_): what the root holds.
  struct SingleLayout {
    std::vector<int64_t> version_dirs;  // newest first
    std::vector<std::string> version_files;  // manifest.json, model.safetensors found directly
  };
  SingleLayout ReadSingleLayout(std::error_code* ec) const;

  const std::string root_;
  const std::string single_model_;
};

}  // namespace sparse

#endif  // SPARSE_MODEL_STORE_MODEL_SOURCE_H_
