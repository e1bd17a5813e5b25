#include "model_store/model_repository.h"

#include <malloc.h>

#include <algorithm>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <system_error>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/client_text.h"
#include "engine/matmul_kernel.h"
#include "model_store/file_util.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"

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

// Every version directory under `model_dir`, newest first.
std::vector<int64_t> ListVersions(const fs::path& model_dir, std::error_code* ec) {
  std::vector<int64_t> versions;
  fs::directory_iterator it(model_dir, *ec);
  for (; !*ec && it != fs::directory_iterator(); it.increment(*ec)) {
    int64_t version = 0;
    std::error_code entry_ec;
    // Only canonical names ("7", not "007", "+7" or " 7"): a version is
    // looked up on disk by its number's name.
    const std::string name = it->path().filename().string();
    if (absl::SimpleAtoi(name, &version) && version >= 1 && std::to_string(version) == name &&
        it->is_directory(entry_ec)) {
      versions.push_back(version);
    }
  }
  std::sort(versions.rbegin(), versions.rend());
  return versions;
}

// Names, sizes and modification times of a version's files: a failed
// version is tried again only when this changes (a copy finished, a file
// was replaced), not on every rescan.
std::string Fingerprint(const fs::path& dir) {
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

// Whether any model's failed versions (which, their errors, their attempt
// counts) differ between two snapshots.
bool FailuresChanged(const RepositorySnapshot& a, const RepositorySnapshot& b) {
  auto same = [](const ModelState::Failure& x, const ModelState::Failure& y) {
    return x.error == y.error && x.attempts == y.attempts && x.fingerprint == y.fingerprint;
  };
  for (const auto& [name, state] : b) {
    auto it = a.find(name);
    const size_t before = it == a.end() ? 0 : it->second.failures.size();
    if (before != state.failures.size()) return true;
    if (before == 0) continue;
    if (!std::equal(state.failures.begin(), state.failures.end(), it->second.failures.begin(),
                    [&same](const auto& x, const auto& y) {
                      return x.first == y.first && same(x.second, y.second);
                    })) {
      return true;
    }
  }
  for (const auto& [name, state] : a) {
    if (!state.failures.empty() && b.count(name) == 0) return true;
  }
  return false;
}

void DefaultLog(const std::string& line) { std::fprintf(stderr, "sparse-server: %s\n", line.c_str()); }

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
  return config;
}

size_t ServingVersions(const RepositorySnapshot& snapshot) {
  size_t n = 0;
  for (const auto& [name, state] : snapshot) n += state.versions.size();
  return n;
}

absl::Status CheckModelName(absl::string_view name) {
  if (name.empty() || name == "." || name == ".." || name[0] == '.' ||
      name.find('/') != absl::string_view::npos || name.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        "a model name is a plain directory name: not empty, not hidden, without '/' or NUL");
  }
  return absl::OkStatus();
}

// Frees removed versions on its own thread: the last request to let go of
// one (a gRPC thread or a worker) only queues it here. Unmapping files and
// freeing packed weights then never adds to a request's latency.
class ModelRepository::Reaper {
 public:
  Reaper() : thread_([this] { Run(); }) {}
  ~Reaper() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    thread_.join();
  }
  void Retire(const Servable* servable) {
    absl::MutexLock lock(&mu_);
    queue_.push_back(servable);
  }

 private:
  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || !queue_.empty(); }
  void Run() {
    absl::MutexLock lock(&mu_);
    while (true) {
      mu_.Await(absl::Condition(this, &Reaper::HasWork));
      if (queue_.empty()) return;  // stopping, nothing left
      std::deque<const Servable*> batch;
      batch.swap(queue_);
      mu_.Unlock();
      for (const Servable* s : batch) delete s;
      malloc_trim(0);  // hand the freed weights back to the system
      mu_.Lock();
    }
  }

  absl::Mutex mu_;
  std::deque<const Servable*> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

ModelRepository::ModelRepository(std::string root, Options options)
    : root_(std::move(root)),
      options_(std::move(options)),
      max_model_bytes_(options_.max_model_bytes > 0 ? options_.max_model_bytes
                                                    : DefaultModelBudgetBytes()),
      reaper_(std::make_shared<Reaper>()),
      snapshot_(std::make_shared<RepositorySnapshot>()) {}

ModelRepository::~ModelRepository() {
  StopPolling();
  // Whatever requests still hold is freed by them (the reaper is gone).
}

absl::StatusOr<std::unique_ptr<ModelRepository>> ModelRepository::Open(
    const std::string& root, Options options, std::vector<std::string>* errors) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    return absl::NotFoundError(absl::StrCat("model repository ", root, " is not a directory"));
  }
  fs::directory_iterator probe(root, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot list ", root, ": ", ec.message()));
  if (!options.log) options.log = DefaultLog;
  // The first scan reports into *errors; later ones into the log.
  auto repo = std::unique_ptr<ModelRepository>(new ModelRepository(root, options));
  std::vector<std::string> lines;
  {
    absl::MutexLock lock(&repo->load_mu_);
    // A listing that stops part way still serves what it found.
    std::shared_ptr<RepositorySnapshot> next = repo->ScanRepository(RepositorySnapshot(), &lines, &ec);
    absl::MutexLock snapshot_lock(&repo->snapshot_mu_);
    repo->snapshot_ = std::move(next);
  }
  // What did not load (the lines saying what did are for later scans' log).
  if (errors != nullptr) {
    for (const auto& [name, state] : *repo->snapshot()) {
      if (!state.config_error.empty()) errors->push_back(absl::StrCat(name, ": ", state.config_error));
      for (const auto& [version, failure] : state.failures) {
        errors->push_back(absl::StrCat(name, " version ", version, ": ", failure.error));
      }
    }
  }
  return repo;
}

std::chrono::milliseconds ModelRepository::RetryDelay(int attempts) const {
  std::chrono::milliseconds delay = options_.failed_retry_initial;
  for (int i = 1; i < attempts && delay < options_.failed_retry_max; ++i) delay *= 2;
  return std::min(delay, options_.failed_retry_max);
}

bool ModelRepository::UnderRoot(const fs::path& resolved) const {
  std::error_code ec;
  const fs::path root = fs::canonical(root_, ec);
  if (ec) return false;
  // Component by component: /models2 is not inside /models.
  return std::mismatch(root.begin(), root.end(), resolved.begin(), resolved.end()).first ==
         root.end();
}

bool ModelRepository::InsideRoot(const fs::path& path) const {
  std::error_code ec;
  const fs::path real = fs::canonical(path, ec);
  if (ec) return false;
  auto inside = [this](const fs::path& p) { return UnderRoot(p); };
  if (!inside(real)) return false;
  // The files too: a version's model.safetensors may be a link as well.
  for (fs::directory_iterator it(real, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    std::error_code file_ec;
    const fs::path file = fs::canonical(it->path(), file_ec);
    if (file_ec || !inside(file)) return false;
  }
  return !ec;
}

std::shared_ptr<const Servable> ModelRepository::LoadVersion(const std::string& name,
                                                             int64_t version,
                                                             const std::string& dir,
                                                             std::string* error) const {
  // Whatever a checkpoint holds, running out of memory while loading or
  // warming it up fails this version, never the process.
  try {
    return LoadAndWarmUp(name, version, dir, error);
  } catch (const std::bad_alloc&) {
    *error = "RESOURCE_EXHAUSTED: out of memory while loading or warming up the version "
             "(std::bad_alloc); see --max_model_bytes";
  } catch (const std::length_error& e) {
    *error = absl::StrCat("RESOURCE_EXHAUSTED: a size too large to allocate while loading the "
                          "version (", e.what(), "); see --max_model_bytes");
  }
  return nullptr;
}

std::shared_ptr<const Servable> ModelRepository::LoadAndWarmUp(const std::string& name,
                                                               int64_t version,
                                                               const std::string& dir,
                                                               std::string* error) const {
  const int64_t warmup_rows = std::min<int64_t>(options_.max_batch_rows, 128);
  LoadOptions load_options;
  load_options.max_bytes = max_model_bytes_;
  load_options.batch_rows = warmup_rows;
  load_options.threads = options_.workers + 1;  // the workers and this thread
  load_options.budget_name = "--max_model_bytes";
  absl::StatusOr<LoadedModel> loaded = LoadCheckpoint(dir, load_options);
  if (!loaded.ok()) {
    *error = loaded.status().code() == absl::StatusCode::kResourceExhausted
                 ? absl::StrCat("RESOURCE_EXHAUSTED: ", loaded.status().message())
                 : std::string(loaded.status().message());
    return nullptr;
  }
  // Warm up: one prediction per batch bucket on each path, on this thread,
  // so the first requests find every code path run once and a model that
  // cannot predict never serves.
  SetKernelThreads(1);
  for (const Model* model : {static_cast<const Model*>(loaded->sparse.get()),
                             static_cast<const Model*>(loaded->dense.get())}) {
    if (model == nullptr) continue;
    const int64_t d = model->info().input_dim, o = model->info().output_dim;
    const int64_t largest = warmup_rows;
    std::vector<float> x(largest * d, 0.0f), y(largest * o);
    for (int64_t rows = 1; rows <= largest; rows *= 2) {
      PredictStats stats;
      absl::Status s = model->Predict(absl::MakeConstSpan(x.data(), rows * d), rows,
                                      absl::MakeSpan(y.data(), rows * o), &stats, nullptr);
      if (!s.ok()) {
        *error = absl::StrCat("warm-up prediction of ", rows, " rows failed: ", s.message());
        return nullptr;
      }
    }
  }
  // Freed by the reaper thread, or here when the repository is gone.
  std::weak_ptr<Reaper> reaper = reaper_;
  std::shared_ptr<Servable> servable(new Servable(), [reaper](const Servable* s) {
    if (std::shared_ptr<Reaper> r = reaper.lock()) {
      r->Retire(s);
    } else {
      delete s;
    }
  });
  servable->model = name;
  servable->version = version;
  servable->loaded = *std::move(loaded);
  servable->warmup_routing = servable->loaded.sparse->Routing();
  return servable;
}

absl::StatusOr<std::string> ModelRepository::ReadConfig(const fs::path& model_dir) const {
  const fs::path path = model_dir / kConfigFile;
  std::error_code ec;
  if (fs::symlink_status(path, ec).type() == fs::file_type::not_found) return std::string();
  const fs::path real = fs::canonical(path, ec);
  if (ec == std::errc::no_such_file_or_directory) return std::string();  // gone, or dangling
  if (ec || !UnderRoot(real)) {
    return absl::InvalidArgumentError(absl::StrCat(
        kConfigFile, " leads outside the model repository (a symlink?); refused"));
  }
  // Opened without blocking (a FIFO), only if it is a regular file (not a
  // device or a directory), and only up to the cap: never a hang under the
  // repository lock, never unbounded memory.
  absl::StatusOr<FileContents> file = FileContents::Read(
      real.string(), kConfigFile, kMaxConfigBytes,
      absl::StrCat("more than the ", kMaxConfigBytes, " bytes a config may have"));
  if (absl::IsNotFound(file.status())) return std::string();
  if (!file.ok()) return file.status();
  return std::string(reinterpret_cast<const char*>(file->bytes().data()), file->bytes().size());
}

ModelState ModelRepository::ScanModel(const std::string& name, const ModelState* previous,
                                      bool retry_failed, std::vector<std::string>* log) const {
  const fs::path model_dir = fs::path(root_) / name;
  ModelState state;
  if (previous != nullptr) {
    state.config = previous->config;
    state.config_text = previous->config_text;
  }
  // config.pbtxt: absent = defaults; unreadable or unparsable = keep the
  // previous one.
  std::error_code ec;
  absl::StatusOr<std::string> read = ReadConfig(model_dir);
  const std::string text = read.ok() ? *read : std::string();
  if (!read.ok()) {
    state.config_error = std::string(read.status().message());
    if (previous == nullptr || previous->config_error != state.config_error) {
      log->push_back(absl::StrCat("model ", name, ": ", state.config_error,
                                  previous != nullptr && previous->config_error.empty()
                                      ? " (the previous config stays)"
                                      : " (defaults apply)"));
    }
  } else if (previous == nullptr || text != previous->config_text ||
             !previous->config_error.empty()) {
    absl::StatusOr<sparse::v1::ModelConfig> config = ParseModelConfig(text);
    if (config.ok()) {
      const bool had = previous != nullptr &&
                       (text != previous->config_text || !previous->config_error.empty());
      state.config = *std::move(config);
      state.config_text = text;
      if (had) log->push_back(absl::StrCat("model ", name, ": new ", kConfigFile, " applied"));
    } else {
      state.config_error = std::string(config.status().message());
      if (previous == nullptr || previous->config_error != state.config_error) {
        log->push_back(absl::StrCat("model ", name, ": ", state.config_error,
                                    previous != nullptr && previous->config_error.empty()
                                        ? " (the previous config stays)"
                                        : " (defaults apply)"));
      }
    }
  } else {
    state.config_error = previous->config_error;
  }

  const std::vector<int64_t> on_disk = ListVersions(model_dir, &ec);
  if (ec) {
    // Unreadable now: keep what serves rather than unloading on a glitch.
    log->push_back(absl::StrCat("model ", name, ": cannot list its versions (", ec.message(),
                                "); what serves stays"));
    if (previous != nullptr) return *previous;
    return state;
  }
  const sparse::v1::VersionPolicy& policy = state.config.version_policy();
  const std::set<int64_t> specific(policy.specific().versions().begin(),
                                   policy.specific().versions().end());
  const size_t want = policy.has_all() || policy.has_specific()
                          ? on_disk.size()
                          : (policy.has_latest() ? policy.latest().num_versions() : 1);
  for (int64_t version : on_disk) {
    if (state.versions.size() >= want) break;
    if (policy.has_specific() && specific.count(version) == 0) continue;
    if (previous != nullptr) {
      auto loaded = previous->versions.find(version);
      if (loaded != previous->versions.end()) {
        state.versions.emplace(version, loaded->second);
        continue;
      }
    }
    const fs::path dir = model_dir / std::to_string(version);
    const std::string fingerprint = Fingerprint(dir);
    const auto now = std::chrono::steady_clock::now();
    const ModelState::Failure* before = nullptr;
    if (previous != nullptr) {
      auto failed = previous->failures.find(version);
      if (failed != previous->failures.end()) before = &failed->second;
    }
    const bool same_files = before != nullptr && before->fingerprint == fingerprint;
    if (same_files && !retry_failed && now < before->attempted + RetryDelay(before->attempts)) {
      state.failures.emplace(version, *before);  // unchanged files: not yet tried again
      continue;
    }
    std::string error;
    std::shared_ptr<const Servable> servable;
    if (InsideRoot(dir)) {
      servable = LoadVersion(name, version, dir.string(), &error);
    } else {
      // A symlink (of the version, the model or a file) leading out of the
      // repository: whoever can write the repository must not be able to
      // make the server read elsewhere.
      error = "the version directory leads outside the model repository (a symlink?); refused";
    }
    if (servable == nullptr) {
      // Logged once per new error or new files, not on every retry.
      if (!same_files || before->error != error) {
        log->push_back(absl::StrCat("model ", name, " version ", version, " not loaded: ", error));
      }
      state.failures.emplace(version, ModelState::Failure{error, fingerprint, now,
                                                          same_files ? before->attempts + 1 : 1});
      continue;
    }
    log->push_back(absl::StrCat("model ", name, " version ", version, " loaded: ",
                                servable->loaded.sparse->info().description));
    state.versions.emplace(version, std::move(servable));
  }
  if (previous != nullptr) {
    for (const auto& [version, unused] : previous->versions) {
      if (state.versions.count(version) == 0) {
        log->push_back(absl::StrCat("model ", name, " version ", version, " unloaded"));
      }
    }
  }
  return state;
}

void ModelRepository::Publish(std::shared_ptr<const RepositorySnapshot> next,
                              const std::vector<std::string>& log) {
  for (const std::string& line : log) options_.log(line);
  std::shared_ptr<const RepositorySnapshot> old;
  {
    absl::MutexLock lock(&snapshot_mu_);
    old = std::exchange(snapshot_, next);
  }
  if (options_.on_publish) options_.on_publish(*next);
  // `old` drops here; versions no request holds go to the reaper.
}

std::shared_ptr<RepositorySnapshot> ModelRepository::ScanRepository(
    const RepositorySnapshot& current, std::vector<std::string>* log, std::error_code* ec) const {
  auto next = std::make_shared<RepositorySnapshot>();
  std::set<std::string> seen;
  for (fs::directory_iterator it(root_, *ec); !*ec && it != fs::directory_iterator();
       it.increment(*ec)) {
    const std::string name = it->path().filename().string();
    std::error_code dir_ec;
    if (!CheckModelName(name).ok() || !it->is_directory(dir_ec)) continue;
    seen.insert(name);
    auto previous = current.find(name);
    ModelState state = ScanModel(name, previous == current.end() ? nullptr : &previous->second,
                                 /*retry_failed=*/false, log);
    if (!state.versions.empty() || !state.failures.empty() || !state.config_error.empty()) {
      next->emplace(name, std::move(state));
    } else if (previous != current.end()) {
      log->push_back(absl::StrCat("model ", name, " unloaded: no version directory left"));
    }
  }
  for (const auto& [name, unused] : current) {
    if (seen.count(name) == 0) {
      log->push_back(absl::StrCat("model ", name, " unloaded: its directory is gone"));
    }
  }
  return next;
}

void ModelRepository::Rescan() {
  absl::MutexLock lock(&load_mu_);
  const std::shared_ptr<const RepositorySnapshot> current = snapshot();
  std::vector<std::string> log;
  std::error_code ec;
  std::shared_ptr<RepositorySnapshot> next = ScanRepository(*current, &log, &ec);
  if (ec) {
    options_.log(absl::StrCat("cannot list the model repository (", ec.message(),
                              "); what serves stays"));
    return;
  }
  if (ServingVersions(*next) == 0 && ServingVersions(*current) > 0) {
    // An empty or unmounted repository: keep serving what we have.
    options_.log(absl::StrCat("the model repository holds nothing that loads; keeping the ",
                              ServingVersions(*current), " version(s) that serve"));
    return;
  }
  // Publish only when something changed: log lines say what, and a failed
  // version retried, or dropped with its directory, changes the failures.
  if (log.empty() && next->size() == current->size() && !FailuresChanged(*current, *next)) return;
  Publish(std::move(next), log);
}

absl::StatusOr<ModelState> ModelRepository::LoadModel(absl::string_view model) {
  if (absl::Status s = CheckModelName(model); !s.ok()) return s;
  const std::string name(model);
  absl::MutexLock lock(&load_mu_);
  std::error_code ec;
  if (!fs::is_directory(fs::path(root_) / name, ec)) {
    return absl::NotFoundError(
        absl::StrCat("the repository has no model directory '", ClientText(name), "'"));
  }
  const std::shared_ptr<const RepositorySnapshot> current = snapshot();
  auto previous = current->find(name);
  std::vector<std::string> log;
  ModelState state = ScanModel(name, previous == current->end() ? nullptr : &previous->second,
                               /*retry_failed=*/true, &log);
  auto next = std::make_shared<RepositorySnapshot>(*current);
  (*next)[name] = state;
  Publish(std::move(next), log);
  if (state.versions.empty()) {
    std::vector<std::string> why;
    if (!state.config_error.empty()) why.push_back(state.config_error);
    for (const auto& [version, failure] : state.failures) {
      why.push_back(absl::StrCat("version ", version, ": ", failure.error));
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "model '", name, "' has no version that loads",
        why.empty() ? " (no version directory)" : absl::StrCat(": ", absl::StrJoin(why, "; "))));
  }
  return state;
}

absl::Status ModelRepository::UnloadModel(absl::string_view model) {
  if (absl::Status s = CheckModelName(model); !s.ok()) return s;
  absl::MutexLock lock(&load_mu_);
  const std::shared_ptr<const RepositorySnapshot> current = snapshot();
  if (current->count(std::string(model)) == 0) {
    return absl::NotFoundError(absl::StrCat("model '", ClientText(model), "' is not loaded"));
  }
  auto next = std::make_shared<RepositorySnapshot>(*current);
  next->erase(std::string(model));
  Publish(std::move(next), {absl::StrCat("model ", model, " unloaded on request")});
  return absl::OkStatus();
}

void ModelRepository::StartPolling(std::chrono::milliseconds interval) {
  absl::MutexLock lock(&poll_mu_);
  if (polling_) return;
  polling_ = true;
  poller_ = std::thread([this, interval] {
    absl::MutexLock lock(&poll_mu_);
    while (true) {
      if (poll_mu_.AwaitWithTimeout(absl::Condition(this, &ModelRepository::PollStopped),
                                    absl::FromChrono(interval))) {
        return;
      }
      poll_mu_.Unlock();
      Rescan();
      poll_mu_.Lock();
    }
  });
}

void ModelRepository::StopPolling() {
  {
    absl::MutexLock lock(&poll_mu_);
    polling_ = false;
  }
  if (poller_.joinable()) poller_.join();
}

std::shared_ptr<const RepositorySnapshot> ModelRepository::snapshot() const {
  absl::ReaderMutexLock lock(&snapshot_mu_);
  return snapshot_;
}

absl::StatusOr<std::shared_ptr<const Servable>> ModelRepository::Find(
    absl::string_view model, int64_t version,
    std::optional<sparse::v1::DynamicBatching>* batching) const {
  absl::ReaderMutexLock lock(&snapshot_mu_);
  auto it = snapshot_->find(std::string(model));
  if (it == snapshot_->end()) {
    std::vector<std::string> names;
    for (const auto& [name, unused] : *snapshot_) names.push_back(name);
    return absl::NotFoundError(absl::StrCat(
        "model '", ClientText(model), "' is not loaded (loaded: ",
        names.empty() ? "none" : ClientText(absl::StrJoin(names, ", "), 512), ")"));
  }
  const ModelState::Versions& versions = it->second.versions;
  if (versions.empty()) {
    return absl::UnavailableError(absl::StrCat(
        "model '", ClientText(model), "' has no version that loads (GetModel lists why)"));
  }
  if (batching != nullptr) {
    const sparse::v1::ModelConfig& config = it->second.config;
    if (config.has_dynamic_batching()) {
      *batching = config.dynamic_batching();
    } else {
      batching->reset();
    }
  }
  if (version == 0) return versions.rbegin()->second;
  auto v = versions.find(version);
  if (v == versions.end()) {
    std::vector<int64_t> loaded;
    for (const auto& [number, unused] : versions) loaded.push_back(number);
    return absl::NotFoundError(absl::StrCat("model '", ClientText(model), "' has no version ",
                                            version, " (loaded: ",
                                            ClientText(absl::StrJoin(loaded, ", "), 512), ")"));
  }
  return v->second;
}

}  // namespace sparse
