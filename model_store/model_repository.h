// ModelRepository: the manager of the model life cycle (DESIGN.md §3, split
// as TF Serving splits it): it publishes the snapshot of what serves and
// reaps the versions that leave it. What the repository on disk asks for
// comes from the source (model_store/model_source.h: config.pbtxt and the
// version policy); each version is read, validated and warmed up by the
// loader (model_store/model_loader.h).
//
// What serves is an immutable snapshot (model -> versions, config, failed
// loads), replaced whole. Rescan() and LoadModel() build the next state of a
// model off the request path, and publish it only once every version it
// serves has loaded; a version that fails is logged and listed in the
// model's failures, and an older good version keeps serving. Each model has
// its own lock: loading one model never waits for another's load (unless
// their files together exceed the memory budget of one version), and
// requests (Find) never wait for any load. A state built from an older view
// of a model (a rescan overtaken by LoadModel) is never published over a
// newer one. Requests hold a shared_ptr to the version they run on; when the
// last one lets go of a removed version, a background thread frees it
// (never a request thread). A rescan that finds nothing to serve (an empty
// or unmounted repository) keeps everything.
//
// Thread-safe: Find() and snapshot() from any thread, any time.
#ifndef SPARSE_MODEL_STORE_MODEL_REPOSITORY_H_
#define SPARSE_MODEL_STORE_MODEL_REPOSITORY_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/container/flat_hash_map.h"
#include "model_store/checkpoint.h"
#include "model_store/model_loader.h"
#include "model_store/model_source.h"
#include "model_store/model_state.h"
#include "sparse/v1/model_config.pb.h"

namespace sparse {

class ModelRepository {
 public:
  // The loader's settings (max_batch_rows, workers, max_model_bytes with 0 =
  // DefaultModelBudgetBytes(), cost_only_dense, the part and the front
  // factory: model_store/model_loader.h), and the manager's own.
  struct Options : LoaderOptions {
    // Log lines after Open (loads, unloads, failures); default stderr.
    std::function<void(const std::string&)> log;
    // Called after each new snapshot is published (from the thread that
    // published it), e.g. to update health and metrics.
    std::function<void(const RepositorySnapshot&)> on_publish;
    // A failed version whose files did not change is tried again by a
    // rescan after this back-off, doubled per failed attempt up to the max
    // (a transient I/O error, a permission fixed without touching the files).
    std::chrono::milliseconds failed_retry_initial{1000};
    std::chrono::milliseconds failed_retry_max{300000};
    // A version the policy no longer asks for stays loaded while a request
    // used it (Servable::MarkUsed) within this long: a shard keeps the
    // version its fronts still route with until they have all moved on.
    // 0 = unload at once.
    std::chrono::milliseconds retain_in_use{0};
    // --model_name: the root is KServe's layout of this one model
    // (RepositorySource); empty = a repository of model directories.
    std::string single_model;
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
  // With `scheduling`, also the model's batching and priority settings as
  // they are now: they can change without a reload.
  absl::StatusOr<std::shared_ptr<const Servable>> Find(
      absl::string_view model, int64_t version, Scheduling* scheduling = nullptr) const;
  std::shared_ptr<const RepositorySnapshot> snapshot() const;
  // Model directories that serve nothing and why, as of the last scan or
  // load of each: "no version directory to serve" (with what the directory
  // holds instead: "v1/", "latest/", nothing) or a refused name (ending in
  // ".dense"). Each reason is logged once, when it first appears or
  // changes, not on every rescan.
  std::map<std::string, std::string> NotServed() const;
  // The model directories under the root, loaded or not (a repository
  // index); *ec is set when the listing stopped part way.
  std::vector<std::string> ModelDirectories(std::error_code* ec) const {
    return source_.ListModels(ec);
  }

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

  // Reads every model directory and publishes what changed. The first scan
  // (from Open) logs nothing and serves what a listing that stopped part
  // way found; later ones keep what serves when the listing fails or finds
  // nothing that loads.
  void ScanAndPublish(bool first);
  // A rescan's next state of one model (nullopt: it leaves), scanned under
  // the model's lock from the state it has now, whose generation goes to
  // *generation. A scan that throws keeps the state it has.
  // When it leaves or is refused, *not_served says why (NotServed()).
  std::optional<ModelState> RescanModel(const std::string& name, uint64_t* generation,
                                        std::vector<std::string>* log, std::string* not_served);
  // Records why models serve nothing (a reason "" = it serves, or is
  // gone); `whole` replaces every model's. Returns the lines to log: one
  // per reason that is new or changed.
  std::vector<std::string> UpdateNotServed(const std::map<std::string, std::string>& reasons,
                                           bool whole);
  // The next state of one model: its config (source), the versions its
  // policy aspires to (source), then those versions loaded or reused.
  // `previous` may be null. REQUIRES: the model's lock.
  ModelState ScanModel(const std::string& name, const ModelState* previous, bool retry_failed,
                       std::vector<std::string>* log) const;
  // Fills state->versions with the first `aspired.count` candidates that
  // serve: already loaded ones are reused, others loaded, unless a failed
  // version's files are unchanged and its back-off has not passed (or
  // `retry_failed`). Failures go to state->failures.
  void LoadOrReuse(const std::string& name, const AspiredVersions& aspired,
                   const ModelState* previous, bool retry_failed, ModelState* state,
                   std::vector<std::string>* log) const;
  // One version through the loader at `precision`, freed by the reaper
  // once published and let go of; null with *error when it does not load.
  std::shared_ptr<const Servable> Load(const std::string& name, int64_t version,
                                       Precision precision, std::string* error) const;
  // The back-off before a failed version with unchanged files is tried
  // again after `attempts` failed attempts.
  std::chrono::milliseconds RetryDelay(int attempts) const;

  // The lock of one model's life cycle (created on first use).
  std::shared_ptr<absl::Mutex> ModelLock(const std::string& name);
  // The model's state in the current snapshot (nullopt: not in it) and its
  // generation (how many times it was published), read together.
  std::optional<ModelState> Current(const std::string& name, uint64_t* generation) const;
  // Publishes `state` (nullopt: the model leaves) for `name` into the
  // current snapshot, with its log lines.
  void PublishModel(const std::string& name, std::optional<ModelState> state,
                    const std::vector<std::string>& log);
  void PublishLocked(std::shared_ptr<const RepositorySnapshot> next,
                     const std::vector<std::string>& log, bool notify)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(publish_mu_);

  bool PollStopped() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(poll_mu_) { return !polling_; }

  const RepositorySource source_;
  const Options options_;
  const uint64_t max_model_bytes_;
  std::shared_ptr<Reaper> reaper_;

  // One rescan at a time (the poller, or a caller of Rescan()).
  absl::Mutex rescan_mu_;
  absl::Mutex model_locks_mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<absl::Mutex>> model_locks_
      ABSL_GUARDED_BY(model_locks_mu_);
  // Serializes publishing: each new snapshot is built from the latest one.
  // Lock order: rescan_mu_, a model's lock, publish_mu_, snapshot_mu_.
  mutable absl::Mutex publish_mu_;
  absl::flat_hash_map<std::string, uint64_t> generations_ ABSL_GUARDED_BY(publish_mu_);
  mutable absl::Mutex snapshot_mu_;
  std::shared_ptr<const RepositorySnapshot> snapshot_ ABSL_GUARDED_BY(snapshot_mu_);

  // Bytes reserved by loads in progress (Load): together they stay within
  // the budget of one version, so loading models side by side never needs
  // more memory than loading the largest alone.
  mutable absl::Mutex load_budget_mu_;
  mutable uint64_t reserved_bytes_ ABSL_GUARDED_BY(load_budget_mu_) = 0;

  // NotServed(). A leaf lock: nothing else is taken while it is held.
  mutable absl::Mutex not_served_mu_;
  std::map<std::string, std::string> not_served_ ABSL_GUARDED_BY(not_served_mu_);

  absl::Mutex poll_mu_;
  bool polling_ ABSL_GUARDED_BY(poll_mu_) = false;
  std::thread poller_;
};

}  // namespace sparse

#endif  // SPARSE_MODEL_STORE_MODEL_REPOSITORY_H_
