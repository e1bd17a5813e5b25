#include "model_store/model_repository.h"

#include <malloc.h>

#include <algorithm>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <functional>
#include <set>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/client_text.h"
#include "common/internal_error.h"
#include "common/status_macros.h"
#include "model_store/model_loader.h"

namespace sparse {

namespace {

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

// How many times `name` was published, per `generations` (0: never).
uint64_t GenerationOf(const absl::flat_hash_map<std::string, uint64_t>& generations,
                      const std::string& name) {
  auto it = generations.find(name);
  return it == generations.end() ? 0 : it->second;
}

// Models a rescan loads side by side.
constexpr size_t kScanThreads = 2;

// Runs work(i) for every i in [0, count) on up to `threads` threads, this
// one among them, each taking the next i once it is done with one.
void RunOnThreads(size_t count, size_t threads, const std::function<void(size_t)>& work) {
  absl::Mutex next_mu;
  size_t next = 0;
  auto run = [&] {
    while (true) {
      size_t i;
      {
        absl::MutexLock lock(&next_mu);
        if (next == count) return;
        i = next++;
      }
      work(i);
    }
  };
  std::vector<std::thread> helpers;
  for (size_t t = 1; t < std::min(threads, count); ++t) helpers.emplace_back(run);
  run();
  for (std::thread& helper : helpers) helper.join();
}

void DefaultLog(const std::string& line) { std::fprintf(stderr, "sparse-server: %s\n", line.c_str()); }

}  // namespace

int64_t ResidentBytes(const Servable& servable) {
  const LoadedModel& m = servable.loaded;
  return m.sparse->info().resident_bytes +
         (m.dense != nullptr ? m.dense->info().resident_bytes : 0);
}

size_t ServingVersions(const RepositorySnapshot& snapshot) {
  size_t n = 0;
  for (const auto& [name, state] : snapshot) n += state.versions.size();
  return n;
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
    : source_(std::move(root), options.single_model),
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
  if (!std::filesystem::is_directory(root, ec)) {
    return absl::NotFoundError(absl::StrCat("model repository ", root, " is not a directory"));
  }
  std::filesystem::directory_iterator probe(root, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot list ", root, ": ", ec.message()));
  if (!options.log) options.log = DefaultLog;
  auto repo = std::unique_ptr<ModelRepository>(new ModelRepository(root, options));
  repo->ScanAndPublish(/*first=*/true);
  // What did not load (the lines saying what did are for later scans' log).
  if (errors != nullptr) {
    for (const auto& [name, state] : *repo->snapshot()) {
      if (!state.config_error.empty()) errors->push_back(absl::StrCat(name, ": ", state.config_error));
      for (const auto& [version, failure] : state.failures) {
        errors->push_back(absl::StrCat(name, " version ", version, ": ", failure.error));
      }
    }
    for (const auto& [name, why] : repo->NotServed()) errors->push_back(absl::StrCat(name, ": ", why));
  }
  return repo;
}

std::chrono::milliseconds ModelRepository::RetryDelay(int attempts) const {
  std::chrono::milliseconds delay = options_.failed_retry_initial;
  for (int i = 1; i < attempts && delay < options_.failed_retry_max; ++i) delay *= 2;
  return std::min(delay, options_.failed_retry_max);
}

std::shared_ptr<const Servable> ModelRepository::Load(const std::string& name, int64_t version,
                                                      Precision precision,
                                                      std::string* error) const {
  const std::string dir = source_.VersionDir(name, version);
  if (!source_.InsideRoot(dir)) {
    // A symlink (of the version, the model or a file) leading out of the
    // repository: whoever can write the repository must not be able to
    // make the server read elsewhere.
    *error = "the version directory leads outside the model repository (a symlink?); refused";
    return nullptr;
  }
  // Loads of several models run side by side only while their files fit
  // the budget together: a load may take up to three times its tensor
  // files at its peak (EstimateLoadBytes), so that much is reserved for it
  // until it is done. A load alone always proceeds (its own budget check
  // then applies).
  const uint64_t reserve = 3 * RepositorySource::FileBytes(dir);
  {
    absl::MutexLock lock(&load_budget_mu_);
    auto fits = [this, reserve]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(load_budget_mu_) {
      return reserved_bytes_ == 0 || reserved_bytes_ + reserve <= max_model_bytes_;
    };
    load_budget_mu_.Await(absl::Condition(&fits));
    reserved_bytes_ += reserve;
  }
  // What the load throws (an allocation, oneDNN) fails this version alone.
  absl::StatusOr<std::unique_ptr<Servable>> loaded = nullptr;
  const absl::Status caught = CatchInternal(ErrorSite::kLoader, [&] {
    FaultPoint(ErrorSite::kLoader);
    LoaderOptions load = options_;  // the settings, with the budget resolved
    load.max_model_bytes = max_model_bytes_;
    const auto start = std::chrono::steady_clock::now();
    loaded = LoadServable(name, version, dir, load, precision);
    if (loaded.ok()) {
      (*loaded)->load_seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
  });
  if (!caught.ok()) loaded = caught;
  {
    absl::MutexLock lock(&load_budget_mu_);
    reserved_bytes_ -= reserve;
  }
  if (!loaded.ok()) {
    *error = loaded.status().code() == absl::StatusCode::kResourceExhausted
                 ? absl::StrCat("RESOURCE_EXHAUSTED: ", loaded.status().message())
                 : std::string(loaded.status().message());
    return nullptr;
  }
  // Freed by the reaper thread, or here when the repository is gone.
  std::weak_ptr<Reaper> reaper = reaper_;
  return std::shared_ptr<const Servable>(loaded->release(), [reaper](const Servable* s) {
    if (std::shared_ptr<Reaper> r = reaper.lock()) {
      r->Retire(s);
    } else {
      delete s;
    }
  });
}

void ModelRepository::LoadOrReuse(const std::string& name, const AspiredVersions& aspired,
                                  const ModelState* previous, bool retry_failed,
                                  ModelState* state, std::vector<std::string>* log) const {
  const Precision precision = PrecisionFromConfig(state->config.precision());
  for (int64_t version : aspired.candidates) {
    if (state->versions.size() >= aspired.count) break;
    // Loaded at another precision: it serves until the new load succeeds.
    std::shared_ptr<const Servable> other_precision;
    if (previous != nullptr) {
      auto loaded = previous->versions.find(version);
      if (loaded != previous->versions.end()) {
        // A retired weight cache mapping (another process opened its file
        // for writing) is loaded again, from a new file.
        if (loaded->second->precision == precision && !loaded->second->loaded.retired()) {
          state->versions.emplace(version, loaded->second);
          continue;
        }
        other_precision = loaded->second;
      }
    }
    // A failure is of these files at this precision (and these declared dims).
    const std::string fingerprint = absl::StrCat(
        RepositorySource::Fingerprint(source_.VersionDir(name, version)), " ",
        PrecisionName(precision), " ", state->config.declared_input_dim(), "x",
        state->config.declared_output_dim());
    const auto now = std::chrono::steady_clock::now();
    const ModelState::Failure* before = nullptr;
    if (previous != nullptr) {
      auto failed = previous->failures.find(version);
      if (failed != previous->failures.end()) before = &failed->second;
    }
    const bool same_files = before != nullptr && before->fingerprint == fingerprint;
    if (same_files && !retry_failed && now < before->attempted + RetryDelay(before->attempts)) {
      state->failures.emplace(version, *before);  // unchanged files: not yet tried again
      if (other_precision != nullptr) state->versions.emplace(version, other_precision);
      continue;
    }
    std::string error;
    std::shared_ptr<const Servable> servable = Load(name, version, precision, &error);
    if (servable != nullptr) {
      // Triton's schema declares the input and output widths.
      const ModelInfo& info = servable->loaded.sparse->info();
      if (absl::Status s = CheckDeclaredDims(state->config, info.input_dim, info.output_dim);
          !s.ok()) {
        error = std::string(s.message());
        servable = nullptr;
      }
    }
    if (servable == nullptr) {
      // Logged once per new error or new files, not on every retry.
      if (!same_files || before->error != error) {
        log->push_back(absl::StrCat(
            "model ", name, " version ", version, " not loaded: ", error,
            other_precision == nullptr
                ? ""
                : absl::StrCat(" (at ", PrecisionName(precision), "; it keeps serving at ",
                               PrecisionName(other_precision->precision), ")")));
      }
      state->failures.emplace(version, ModelState::Failure{error, fingerprint, now,
                                                           same_files ? before->attempts + 1 : 1});
      if (other_precision != nullptr) state->versions.emplace(version, other_precision);
      continue;
    }
    const LoadedModel& loaded = servable->loaded;
    log->push_back(absl::StrCat(
        "model ", name, " version ", version, " loaded in ", absl::StrFormat("%.3f", servable->load_seconds),
        " s: ", loaded.sparse->info().description,
        loaded.weight_cache == nullptr
            ? ""
            : absl::StrCat(" (weights mapped from ", loaded.weight_cache->path(), ", ",
                           loaded.weight_cache_event, "; verified on ",
                           WeightVerifyName(loaded.weight_cache->verify()), ")")));
    state->versions.emplace(version, std::move(servable));
  }
  if (previous != nullptr) {
    const int64_t now_ns = std::chrono::steady_clock::now().time_since_epoch().count();
    const int64_t retain_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(options_.retain_in_use).count();
    for (const auto& [version, servable] : previous->versions) {
      if (state->versions.count(version) != 0) continue;
      const int64_t used = servable->last_used_ns.load(std::memory_order_relaxed);
      if (retain_ns > 0 && used > 0 && now_ns - used < retain_ns &&
          servable->precision == precision) {
        // Still routed to by a front: kept until it has been idle that long.
        state->versions.emplace(version, servable);
        continue;
      }
      log->push_back(absl::StrCat("model ", name, " version ", version, " unloaded"));
    }
  }
}

ModelState ModelRepository::ScanModel(const std::string& name, const ModelState* previous,
                                      bool retry_failed, std::vector<std::string>* log) const {
  ModelState state;
  // A config whose declared dims disagree with a version that serves is a
  // config error (the previous config stays), as one that does not parse.
  source_.ReadModelConfig(name, previous, &state, log, [previous](const sparse::v1::ModelConfig& c) {
    if (previous == nullptr) return absl::OkStatus();
    for (const auto& [version, servable] : previous->versions) {
      const ModelInfo& info = servable->loaded.sparse->info();
      if (absl::Status s = CheckDeclaredDims(c, info.input_dim, info.output_dim); !s.ok()) {
        return absl::FailedPreconditionError(
            absl::StrCat(s.message(), " (version ", version, ", which serves)"));
      }
    }
    return absl::OkStatus();
  });
  std::error_code ec;
  const std::vector<int64_t> on_disk = source_.ListVersions(name, &ec);
  if (ec) {
    // Unreadable now: keep what serves rather than unloading on a glitch.
    log->push_back(absl::StrCat("model ", name, ": cannot list its versions (", ec.message(),
                                "); what serves stays"));
    if (previous != nullptr) return *previous;
    return state;
  }
  LoadOrReuse(name, SelectVersions(state.config.version_policy(), on_disk), previous,
              retry_failed, &state, log);
  return state;
}

std::shared_ptr<absl::Mutex> ModelRepository::ModelLock(const std::string& name) {
  absl::MutexLock lock(&model_locks_mu_);
  std::shared_ptr<absl::Mutex>& mu = model_locks_[name];
  if (mu == nullptr) mu = std::make_shared<absl::Mutex>();
  return mu;
}

std::optional<ModelState> ModelRepository::Current(const std::string& name,
                                                   uint64_t* generation) const {
  absl::MutexLock lock(&publish_mu_);
  *generation = GenerationOf(generations_, name);
  const std::shared_ptr<const RepositorySnapshot> current = snapshot();
  auto it = current->find(name);
  if (it == current->end()) return std::nullopt;
  return it->second;
}

void ModelRepository::PublishLocked(std::shared_ptr<const RepositorySnapshot> next,
                                    const std::vector<std::string>& log, bool notify) {
  for (const std::string& line : log) options_.log(line);
  std::shared_ptr<const RepositorySnapshot> old;
  {
    absl::MutexLock lock(&snapshot_mu_);
    old = std::exchange(snapshot_, next);
  }
  if (notify && options_.on_publish) options_.on_publish(*next);
  // `old` drops here; versions no request holds go to the reaper.
}

void ModelRepository::PublishModel(const std::string& name, std::optional<ModelState> state,
                                   const std::vector<std::string>& log) {
  absl::MutexLock lock(&publish_mu_);
  auto next = std::make_shared<RepositorySnapshot>(*snapshot());
  if (state.has_value()) {
    (*next)[name] = *std::move(state);
  } else {
    next->erase(name);
  }
  ++generations_[name];
  PublishLocked(std::move(next), log, /*notify=*/true);
}

std::optional<ModelState> ModelRepository::RescanModel(const std::string& name,
                                                       uint64_t* generation,
                                                       std::vector<std::string>* log,
                                                       std::string* not_served) {
  if (absl::Status refused = CheckNotDenseTwinName(name); !refused.ok()) {
    *not_served = std::string(refused.message());
    return std::nullopt;  // never published (LoadModel refuses it too)
  }
  std::shared_ptr<absl::Mutex> mu = ModelLock(name);
  absl::MutexLock lock(mu.get());
  const std::optional<ModelState> previous = Current(name, generation);
  ModelState state;
  // A scan that throws leaves the model as it was (counted, logged);
  // the next rescan tries again.
  const absl::Status scan = CatchInternal(ErrorSite::kLoader, [&] {
    state = ScanModel(name, previous ? &*previous : nullptr, /*retry_failed=*/false, log);
  });
  if (!scan.ok()) {
    log->push_back(absl::StrCat("model ", name, " kept as it was: ", scan.message()));
    return previous;
  }
  if (!state.versions.empty() || !state.failures.empty() || !state.config_error.empty()) {
    return state;
  }
  *not_served = source_.NothingToServe(name);
  if (previous.has_value()) {
    log->push_back(absl::StrCat("model ", name, " unloaded: no version directory left"));
  }
  return std::nullopt;
}

std::vector<std::string> ModelRepository::UpdateNotServed(
    const std::map<std::string, std::string>& reasons, bool whole) {
  std::vector<std::string> lines;
  absl::MutexLock lock(&not_served_mu_);
  for (const auto& [name, why] : reasons) {
    auto it = not_served_.find(name);
    if (why.empty()) {
      if (it != not_served_.end()) not_served_.erase(it);
      continue;
    }
    if (it != not_served_.end() && it->second == why) continue;  // logged already
    lines.push_back(absl::StrCat("model directory ", name, " serves nothing: ", why));
    not_served_[name] = why;
  }
  if (whole) {
    std::erase_if(not_served_, [&reasons](const auto& entry) {
      auto it = reasons.find(entry.first);
      return it == reasons.end() || it->second.empty();
    });
  }
  return lines;
}

std::map<std::string, std::string> ModelRepository::NotServed() const {
  absl::MutexLock lock(&not_served_mu_);
  return not_served_;
}

void ModelRepository::ScanAndPublish(bool first) {
  absl::MutexLock rescan(&rescan_mu_);
  // What served before the listing, with each model's generation: a model
  // missing from the listing leaves only if nothing published it since (a
  // LoadModel of a directory created after the listing).
  std::shared_ptr<const RepositorySnapshot> before;
  absl::flat_hash_map<std::string, uint64_t> before_generations;
  {
    absl::MutexLock lock(&publish_mu_);
    before = snapshot();
    before_generations = generations_;
  }
  std::error_code ec;
  const std::vector<std::string> names = source_.ListModels(&ec);
  if (ec && !first) {
    options_.log(absl::StrCat("cannot list the model repository (", ec.message(),
                              "); what serves stays"));
    return;
  }
  // Each model is scanned under its own lock (a LoadModel of another model
  // runs meanwhile), remembering the generation it was scanned from, by up
  // to kScanThreads threads: a slow load of one model does not hold back
  // the others' (the load budget still bounds their memory together).
  struct Scanned {
    std::optional<ModelState> state;  // nullopt: the model leaves
    uint64_t generation = 0;
    std::vector<std::string> log;
    std::string not_served;  // why it serves nothing (NotServed())
  };
  std::map<std::string, Scanned> scanned;
  for (const std::string& name : names) scanned[name];  // no insertion while the threads run
  const std::set<std::string> listed(names.begin(), names.end());
  RunOnThreads(names.size(), kScanThreads, [&](size_t i) {
    Scanned& s = scanned.find(names[i])->second;
    s.state = RescanModel(names[i], &s.generation, &s.log, &s.not_served);
  });
  std::map<std::string, std::string> not_served;  // the first scan's are Open()'s errors
  for (const auto& [name, s] : scanned) not_served[name] = s.not_served;
  for (const std::string& line : UpdateNotServed(not_served, /*whole=*/true)) {
    if (!first) options_.log(line);
  }
  for (const auto& [name, unused] : *before) {
    if (listed.count(name) == 0) {
      Scanned& s = scanned[name];
      s.generation = GenerationOf(before_generations, name);
      s.log.push_back(absl::StrCat("model ", name, " unloaded: its directory is gone"));
    }
  }

  absl::MutexLock lock(&publish_mu_);
  const std::shared_ptr<const RepositorySnapshot> current = snapshot();
  auto next = std::make_shared<RepositorySnapshot>(*current);
  std::vector<std::string> log;
  std::vector<std::string> changed;
  for (auto& [name, s] : scanned) {
    // Published since it was scanned (LoadModel, UnloadModel): that is newer.
    if (GenerationOf(generations_, name) != s.generation) continue;
    if (s.state.has_value()) {
      (*next)[name] = *std::move(s.state);
    } else {
      next->erase(name);
    }
    log.insert(log.end(), s.log.begin(), s.log.end());
    changed.push_back(name);
  }
  if (!first && ServingVersions(*next) == 0 && ServingVersions(*current) > 0) {
    // An empty or unmounted repository: keep serving what we have.
    options_.log(absl::StrCat("the model repository holds nothing that loads; keeping the ",
                              ServingVersions(*current), " version(s) that serve"));
    return;
  }
  // Publish only when something changed: log lines say what, and a failed
  // version retried, or dropped with its directory, changes the failures.
  if (log.empty() && next->size() == current->size() && !FailuresChanged(*current, *next)) return;
  for (const std::string& name : changed) ++generations_[name];
  if (first) {
    PublishLocked(std::move(next), {}, /*notify=*/false);
  } else {
    PublishLocked(std::move(next), log, /*notify=*/true);
  }
}

void ModelRepository::Rescan() { ScanAndPublish(/*first=*/false); }

absl::StatusOr<ModelState> ModelRepository::LoadModel(absl::string_view model) {
  if (absl::Status s = CheckModelName(model); !s.ok()) return s;
  RETURN_IF_ERROR(CheckNotDenseTwinName(model));
  const std::string name(model);
  if (!source_.HasModel(name)) {
    return absl::NotFoundError(
        absl::StrCat("the repository has no model directory '", ClientText(name), "'"));
  }
  std::shared_ptr<absl::Mutex> mu = ModelLock(name);
  absl::MutexLock lock(mu.get());
  uint64_t generation = 0;
  const std::optional<ModelState> previous = Current(name, &generation);
  std::vector<std::string> log;
  ModelState state = ScanModel(name, previous ? &*previous : nullptr, /*retry_failed=*/true, &log);
  const bool nothing =
      state.versions.empty() && state.failures.empty() && state.config_error.empty();
  const std::string not_served = nothing ? source_.NothingToServe(name) : "";
  for (std::string& line : UpdateNotServed({{name, not_served}}, /*whole=*/false)) {
    log.push_back(std::move(line));
  }
  PublishModel(name, state, log);
  if (state.versions.empty()) {
    std::vector<std::string> why;
    if (!state.config_error.empty()) why.push_back(state.config_error);
    for (const auto& [version, failure] : state.failures) {
      why.push_back(absl::StrCat("version ", version, ": ", failure.error));
    }
    if (nothing) why.push_back(not_served);
    return absl::FailedPreconditionError(absl::StrCat("model '", name,
                                                      "' has no version that loads: ",
                                                      absl::StrJoin(why, "; ")));
  }
  return state;
}

absl::Status ModelRepository::UnloadModel(absl::string_view model) {
  if (absl::Status s = CheckModelName(model); !s.ok()) return s;
  const std::string name(model);
  if (snapshot()->count(name) == 0) {
    return absl::NotFoundError(absl::StrCat("model '", ClientText(model), "' is not loaded"));
  }
  std::shared_ptr<absl::Mutex> mu = ModelLock(name);
  absl::MutexLock lock(mu.get());
  uint64_t generation = 0;
  if (!Current(name, &generation).has_value()) {
    return absl::NotFoundError(absl::StrCat("model '", ClientText(model), "' is not loaded"));
  }
  PublishModel(name, std::nullopt, {absl::StrCat("model ", name, " unloaded on request")});
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
      // What a rescan throws is counted; the next one tries again.
      (void)CatchInternal(ErrorSite::kLoader, [this] { Rescan(); });
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
    absl::string_view model, int64_t version, Scheduling* scheduling) const {
  absl::ReaderMutexLock lock(&snapshot_mu_);
  auto it = snapshot_->find(std::string(model));
  if (it == snapshot_->end()) {
    std::vector<std::string> names;
    for (const auto& [name, unused] : *snapshot_) names.push_back(name);
    std::string why;
    {
      absl::MutexLock not_served_lock(&not_served_mu_);
      auto reason = not_served_.find(std::string(model));
      if (reason != not_served_.end()) why = absl::StrCat(": ", reason->second);
    }
    return absl::NotFoundError(absl::StrCat(
        "model '", ClientText(model), "' is not loaded", why, " (loaded: ",
        names.empty() ? "none" : ClientText(absl::StrJoin(names, ", "), 512), ")"));
  }
  const ModelState::Versions& versions = it->second.versions;
  if (versions.empty()) {
    // The version asked for (or the newest) says why it did not load.
    const auto& failures = it->second.failures;
    auto failed = version == 0 ? failures.rbegin() : std::make_reverse_iterator(
                                                          failures.upper_bound(version));
    const std::string why =
        failed == failures.rend() || (version != 0 && failed->first != version)
            ? ""
            : absl::StrCat(": version ", failed->first, " failed to load: ",
                           ClientText(failed->second.error, 512));
    return absl::UnavailableError(absl::StrCat("model '", ClientText(model),
                                               "' has no version that loads", why,
                                               " (GetModel lists why)"));
  }
  if (scheduling != nullptr) {
    const sparse::v1::ModelConfig& config = it->second.config;
    if (config.has_dynamic_batching()) {
      scheduling->batching = config.dynamic_batching();
    } else {
      scheduling->batching.reset();
    }
    scheduling->priority_levels = static_cast<uint32_t>(config.priority_levels());
    scheduling->default_priority_level = static_cast<uint32_t>(config.default_priority_level());
    scheduling->instance_count = config.instance_count();
    scheduling->limits = config.limits();
  }
  if (version == 0) return versions.rbegin()->second;
  auto v = versions.find(version);
  if (v == versions.end()) {
    std::vector<int64_t> loaded;
    for (const auto& [number, unused] : versions) loaded.push_back(number);
    // A version that failed to load says why (as GetModel lists it).
    auto failed = it->second.failures.find(version);
    const std::string why =
        failed == it->second.failures.end()
            ? ""
            : absl::StrCat(": it failed to load: ", ClientText(failed->second.error, 512));
    return absl::NotFoundError(absl::StrCat("model '", ClientText(model), "' has no version ",
                                            version, why, " (loaded: ",
                                            ClientText(absl::StrJoin(loaded, ", "), 512), ")"));
  }
  return v->second;
}

}  // namespace sparse
