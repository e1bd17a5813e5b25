// ModelRepository: the versions being served from a repository root
// (DESIGN.md §3), and their life cycle.
//
// Layout: <root>/<model>/config.pbtxt (optional, sparse.v1.ModelConfig in
// text format) and <root>/<model>/<version>/ with integer versions >= 1.
// Hidden entries (".tmp-*" from a publisher in progress) are ignored.
//
// What serves is an immutable snapshot (model -> versions, config, failed
// loads), replaced whole. Rescan() and LoadModel() build the next snapshot
// off the request path: a version the policy selects that is not loaded yet
// is read, validated and warmed up (one prediction per batch bucket on each
// path) before the snapshot that holds it is published; a version that fails
// is logged and listed in the model's failures, and an older good version
// keeps serving. Lifecycle operations run one at a time, so a slow load can
// never publish over a newer one. Requests hold a shared_ptr to the version
// they run on; when the last one lets go of a removed version, a background
// thread frees it (never a request thread). A rescan that finds nothing to
// serve (an empty or unmounted repository) keeps everything. A version whose
// directory resolves (through symlinks) outside the root is refused.
//
// Thread-safe: Find() and snapshot() from any thread, any time.
#ifndef SPARSE_MODEL_STORE_MODEL_REPOSITORY_H_
#define SPARSE_MODEL_STORE_MODEL_REPOSITORY_H_

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "model_store/checkpoint.h"
#include "sparse/v1/model_config.pb.h"

namespace sparse {

struct Servable {
  std::string model;
  int64_t version = 0;
  LoadedModel loaded;
  // The sparse model's routing counts after warm-up; metrics report what
  // came after.
  RoutingCounts warmup_routing;
};

struct ModelState {
  using Versions = std::map<int64_t, std::shared_ptr<const Servable>>;
  Versions versions;  // may be empty while every selected version fails
  sparse::v1::ModelConfig config;
  std::string config_text;   // as read, to notice changes
  std::string config_error;  // config.pbtxt did not parse; `config` is the previous one
  struct Failure {
    std::string error;
    std::string fingerprint;  // the files as they were; retried at once when they change
    // When it was last tried and how many times in a row it failed with
    // these files: a rescan tries it again after a back-off that doubles per
    // attempt (Options::failed_retry_*); LoadModel always does.
    std::chrono::steady_clock::time_point attempted;
    int attempts = 1;
  };
  std::map<int64_t, Failure> failures;
};
using RepositorySnapshot = std::map<std::string, ModelState>;

// Versions serving across every model of `snapshot`.
size_t ServingVersions(const RepositorySnapshot& snapshot);

// Parses config.pbtxt text and checks its values. Errors name the line and
// column (never a path).
absl::StatusOr<sparse::v1::ModelConfig> ParseModelConfig(absl::string_view text);

// A plain model directory name: not empty, no '/', NUL, "." or "..", not
// hidden. INVALID_ARGUMENT otherwise.
absl::Status CheckModelName(absl::string_view name);

class ModelRepository {
 public:
  struct Options {
    // Largest batch a request may carry: warm-up runs every batch bucket
    // (1, 2, 4, ..., 128) up to it.
    int64_t max_batch_rows = 1024;
    // Worker threads: a checkpoint's scratch space is sized for them.
    int workers = 1;
    // Log lines after Open (loads, unloads, failures); default stderr.
    std::function<void(const std::string&)> log;
    // Called after each new snapshot is published (from the thread that
    // published it), e.g. to update health and metrics.
    std::function<void(const RepositorySnapshot&)> on_publish;
    // Memory budget of one version in bytes (--max_model_bytes): a version
    // whose estimate (EstimateLoadBytes, docs/configuration.md) is larger
    // fails with RESOURCE_EXHAUSTED before its tensors are read or the
    // engine allocates. 0 = DefaultModelBudgetBytes() (half of the memory
    // available to the process).
    uint64_t max_model_bytes = 0;
    // A failed version whose files did not change is tried again by a
    // rescan after this back-off, doubled per failed attempt up to the max
    // (a transient I/O error, a permission fixed without touching the files).
    std::chrono::milliseconds failed_retry_initial{1000};
    std::chrono::milliseconds failed_retry_max{300000};
  };

  // Loads what `root` holds. Errors only if `root` is not a readable
  // directory; each version that fails to load adds a line to *errors (may
  // be null).
  static absl::StatusOr<std::unique_ptr<ModelRepository>> Open(const std::string& root,
                                                               Options options,
                                                               std::vector<std::string>* errors);
  ~ModelRepository();

  // The version to serve: `version`, or the newest when it is 0.
  // NOT_FOUND names the model or version asked for and what is loaded;
  // UNAVAILABLE when the model is known but no version of it loaded.
  // With `batching`, also the model's dynamic_batching settings as they are
  // now (nullopt when its config.pbtxt asks for none): they can change
  // without a reload.
  absl::StatusOr<std::shared_ptr<const Servable>> Find(
      absl::string_view model, int64_t version,
      std::optional<sparse::v1::DynamicBatching>* batching = nullptr) const;
  std::shared_ptr<const RepositorySnapshot> snapshot() const;

  // Reads every model directory again and publishes what changed.
  void Rescan();
  // Rescan() every `interval` on a background thread until Stop().
  void StartPolling(std::chrono::milliseconds interval);
  // Stops polling (waits for a rescan in progress). Idempotent.
  void StopPolling();

  // The memory budget of one version in bytes (Options::max_model_bytes
  // resolved).
  uint64_t max_model_bytes() const { return max_model_bytes_; }

  // Explicit control. LoadModel (re)reads one model directory, trying every
  // failed version of it again; the error says why nothing of it serves
  // (its previous versions keep serving).
  absl::StatusOr<ModelState> LoadModel(absl::string_view model);
  absl::Status UnloadModel(absl::string_view model);

 private:
  class Reaper;
  explicit ModelRepository(std::string root, Options options);

  // Builds the next snapshot from every model directory under the root,
  // logging what loaded, failed and unloaded against `current`; *ec is set
  // when the listing stopped.
  std::shared_ptr<RepositorySnapshot> ScanRepository(const RepositorySnapshot& current,
                                                     std::vector<std::string>* log,
                                                     std::error_code* ec) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(load_mu_);
  // Builds the next state of one model from disk. `previous` may be null.
  // With `retry_failed`, failed versions are tried again regardless of
  // their back-off.
  ModelState ScanModel(const std::string& name, const ModelState* previous, bool retry_failed,
                       std::vector<std::string>* log) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(load_mu_);
  // config.pbtxt of `model_dir` (empty when absent), or why it cannot be
  // read: not a regular file, too large, or leading outside the root.
  absl::StatusOr<std::string> ReadConfig(const std::filesystem::path& model_dir) const;
  std::shared_ptr<const Servable> LoadVersion(const std::string& name, int64_t version,
                                              const std::string& dir,
                                              std::string* error) const;
  // LoadVersion without its net for std::bad_alloc / std::length_error.
  std::shared_ptr<const Servable> LoadAndWarmUp(const std::string& name, int64_t version,
                                                const std::string& dir,
                                                std::string* error) const;
  // Whether `path` and the entries in it, with every symlink resolved, are
  // inside the root.
  bool InsideRoot(const std::filesystem::path& path) const;
  // The back-off before a failed version with unchanged files is tried
  // again after `attempts` failed attempts.
  std::chrono::milliseconds RetryDelay(int attempts) const;
  // Whether `resolved` (a canonical path) is inside the root.
  bool UnderRoot(const std::filesystem::path& resolved) const;
  void Publish(std::shared_ptr<const RepositorySnapshot> next,
               const std::vector<std::string>& log) ABSL_EXCLUSIVE_LOCKS_REQUIRED(load_mu_);

  bool PollStopped() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(poll_mu_) { return !polling_; }

  const std::string root_;
  const Options options_;
  const uint64_t max_model_bytes_;
  std::shared_ptr<Reaper> reaper_;

  // Serializes Rescan, LoadModel and UnloadModel.
  absl::Mutex load_mu_;
  mutable absl::Mutex snapshot_mu_;
  std::shared_ptr<const RepositorySnapshot> snapshot_ ABSL_GUARDED_BY(snapshot_mu_);

  absl::Mutex poll_mu_;
  bool polling_ ABSL_GUARDED_BY(poll_mu_) = false;
  std::thread poller_;
};

}  // namespace sparse

#endif  // SPARSE_MODEL_STORE_MODEL_REPOSITORY_H_
