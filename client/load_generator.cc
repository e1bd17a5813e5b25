#include "client/load_generator.h"

#include <sys/prctl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <deque>
#include <memory>
#include <random>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "common/process_cpu.h"

namespace sparse {
namespace {

using Clock = std::chrono::steady_clock;

int64_t Nanos(Clock::duration d) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
}

struct Record {
  int64_t latency_ns;
  ServerSide server;
};

// What one window collected, kept raw until the level is summarised.
struct Window {
  std::vector<Record> records;
  int64_t errors = 0;
  double seconds = 0;
  int64_t client_cpu_ns = 0;
  int64_t server_cpu_ns = -1;  // -1: unknown
};

// The state every in-flight request's callback shares; owned jointly by the
// callbacks and RunLevel, so a late callback never touches freed memory.
class Run : public std::enable_shared_from_this<Run> {
 public:
  Run(const LoadPath& path, const Load& load, const Schedule& schedule)
      : path_(path), load_(load), schedule_(schedule) {}

  void StartClosedLoop() {
    {
      absl::MutexLock lock(&mu_);
      outstanding_ += load_.concurrency;
    }
    for (int i = 0; i < load_.concurrency; ++i) Issue(Clock::now());
  }

  // The open-loop sender: issues request i at start + (sum of gaps), late or
  // not. Runs on its own thread until Stop().
  void SendOpenLoop() {
    prctl(PR_SET_TIMERSLACK, 1UL);  // wake on time, not up to 50 us late
    std::mt19937_64 rng(schedule_.seed);
    std::exponential_distribution<double> poisson(load_.rate);
    const double constant_gap = 1.0 / load_.rate;
    auto due = Clock::now();
    while (true) {
      // Sleep until the request is due, waking at least every 50 ms so a
      // slow rate never holds up the end of the level.
      while (Clock::now() < due) {
        if (stop_requested_.load()) return;
        std::this_thread::sleep_until(std::min(due, Clock::now() + std::chrono::milliseconds(50)));
      }
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](Run* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(r->mu_) {
              return r->stopping_ || r->outstanding_ < r->schedule_.max_outstanding;
            },
            this));
        if (stopping_ || issued_.load() >= schedule_.max_requests) return;
        ++outstanding_;
      }
      Issue(due);
      const double gap = load_.poisson ? poisson(rng) : constant_gap;
      due += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap));
    }
  }

  // Ends the current window and starts the next: returns what it collected.
  Window TakeWindow() {
    Window w;
    absl::MutexLock lock(&mu_);
    const auto now = Clock::now();
    w.records.swap(records_);
    w.errors = errors_;
    errors_ = 0;
    w.seconds = std::chrono::duration<double>(now - window_start_).count();
    window_start_ = now;
    return w;
  }

  // Stops issuing and waits for every request in flight to end.
  void Stop() {
    stop_requested_.store(true);
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    mu_.Await(absl::Condition(
        +[](Run* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(r->mu_) { return r->outstanding_ == 0; }, this));
  }

  int64_t issued() const { return issued_.load(); }
  std::string first_error() {
    absl::MutexLock lock(&mu_);
    return first_error_;
  }

 private:
  // The caller has counted the request in outstanding_.
  void Issue(Clock::time_point intended) {
    const int64_t index = issued_++;
    path_.issue(index, [self = shared_from_this(), intended](absl::Status status, ServerSide server) {
      self->OnDone(intended, status, server);
    });
  }

  void OnDone(Clock::time_point intended, const absl::Status& status, const ServerSide& server) {
    const auto now = Clock::now();
    bool again = false;
    {
      absl::MutexLock lock(&mu_);
      if (status.ok()) {
        records_.push_back(Record{Nanos(now - intended), server});
      } else {
        ++errors_;
        if (first_error_.empty()) {
          first_error_ = absl::StrCat(absl::StatusCodeToString(status.code()), ": ", status.message());
        }
      }
      --outstanding_;
      if (load_.mode == Load::Mode::kClosed && !stopping_ &&
          issued_.load() < schedule_.max_requests) {
        ++outstanding_;
        again = true;
      }
    }
    if (again) Issue(Clock::now());
  }

  const LoadPath& path_;
  const Load load_;
  const Schedule schedule_;
  std::atomic<int64_t> issued_{0};
  std::atomic<bool> stop_requested_{false};  // stopping_, readable without mu_
  absl::Mutex mu_;
  std::vector<Record> records_ ABSL_GUARDED_BY(mu_);
  int64_t errors_ ABSL_GUARDED_BY(mu_) = 0;
  std::string first_error_ ABSL_GUARDED_BY(mu_);
  int64_t outstanding_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  Clock::time_point window_start_ ABSL_GUARDED_BY(mu_) = Clock::now();
};

bool Stable(const std::deque<Window>& windows, double tolerance) {
  double mean = 0;
  for (const Window& w : windows) mean += w.records.size() / w.seconds;
  mean /= windows.size();
  if (mean <= 0) return false;
  for (const Window& w : windows) {
    if (std::abs(w.records.size() / w.seconds - mean) > tolerance * mean) return false;
  }
  return true;
}

WindowResult Summarise(const Window& w) {
  std::vector<int64_t> latency;
  latency.reserve(w.records.size());
  for (const Record& r : w.records) latency.push_back(r.latency_ns);
  return WindowResult{.seconds = w.seconds,
                      .completed = static_cast<int64_t>(w.records.size()),
                      .errors = w.errors,
                      .throughput = w.records.size() / w.seconds,
                      .p50_us = QuantileMicros(latency, 0.5),
                      .p99_us = QuantileMicros(latency, 0.99)};
}

// Fills the level's figures from the reported windows.
void Aggregate(const std::deque<Window>& windows, LevelResult* out) {
  std::vector<int64_t> latency, route, compute;
  double server = 0, queue = 0, route_sum = 0, compute_sum = 0, flops = 0, bytes = 0, faults = 0;
  int64_t client_cpu = 0, server_cpu = 0;
  bool server_cpu_known = true;
  for (const Window& w : windows) {
    out->seconds += w.seconds;
    out->errors += w.errors;
    client_cpu += w.client_cpu_ns;
    if (w.server_cpu_ns < 0) server_cpu_known = false;
    server_cpu += w.server_cpu_ns;
    for (const Record& r : w.records) {
      latency.push_back(r.latency_ns);
      route.push_back(r.server.route_ns);
      compute.push_back(r.server.compute_ns);
      server += r.server.total_ns;
      queue += r.server.queue_ns;
      route_sum += r.server.route_ns;
      compute_sum += r.server.compute_ns;
      flops += static_cast<double>(r.server.flops);
      bytes += static_cast<double>(r.server.weight_bytes);
      faults += static_cast<double>(r.server.major_faults);
    }
  }
  const int64_t n = static_cast<int64_t>(latency.size());
  out->completed = n;
  out->throughput = out->seconds > 0 ? n / out->seconds : 0;
  out->p50_us = QuantileMicros(latency, 0.5);
  out->p90_us = QuantileMicros(latency, 0.9);
  out->p99_us = QuantileMicros(latency, 0.99);
  out->p999_us = QuantileMicros(latency, 0.999);
  out->max_us = QuantileMicros(latency, 1.0);
  out->route_p50_us = QuantileMicros(route, 0.5);
  out->compute_p50_us = QuantileMicros(compute, 0.5);
  if (n > 0) {
    double sum = 0;
    for (int64_t v : latency) sum += static_cast<double>(v);
    out->mean_us = sum / n / 1000.0;
    out->server_us = server / n / 1000.0;
    out->queue_us = queue / n / 1000.0;
    out->route_us = route_sum / n / 1000.0;
    out->compute_us = compute_sum / n / 1000.0;
    out->network_us = out->mean_us - out->server_us;
    out->flops_per_request = static_cast<int64_t>(std::llround(flops / n));
    out->weight_bytes_per_request = static_cast<int64_t>(std::llround(bytes / n));
    out->major_faults_per_request = faults / n;
  }
  const int64_t requests = n + out->errors;
  if (requests > 0) {
    out->client_cpu_us_per_request = client_cpu / 1000.0 / requests;
    out->server_cpu_us_per_request = server_cpu_known ? server_cpu / 1000.0 / requests : -1;
  }
}

absl::Status Validate(const Load& load, const Schedule& s) {
  if (load.mode == Load::Mode::kClosed && (load.concurrency < 1 || load.concurrency > 4096)) {
    return absl::InvalidArgumentError(
        absl::StrCat("concurrency must be in [1, 4096], got ", load.concurrency));
  }
  if (load.mode == Load::Mode::kOpen && !(load.rate > 0 && load.rate <= 1e7)) {
    return absl::InvalidArgumentError(
        absl::StrCat("rate must be in (0, 1e7] requests per second, got ", load.rate));
  }
  if (!(s.warmup_seconds >= 0) || !(s.window_seconds > 0) || s.stable_windows < 1 ||
      s.max_windows < s.stable_windows || !(s.stability > 0) || s.max_requests < 1 ||
      s.max_outstanding < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad schedule: need warm-up >= 0 s, window > 0 s, 1 <= stable windows (", s.stable_windows,
        ") <= max windows (", s.max_windows, "), stability > 0, max requests >= 1"));
  }
  return absl::OkStatus();
}

int64_t ServerCpu(const LoadPath& path) {
  if (!path.server_cpu_ns) return -1;
  absl::StatusOr<int64_t> ns = path.server_cpu_ns();
  return ns.ok() ? *ns : -1;
}

}  // namespace

std::string Load::Describe() const {
  if (mode == Mode::kClosed) return absl::StrCat("concurrency ", concurrency);
  return absl::StrFormat("%g req/s %s", rate, poisson ? "poisson" : "constant");
}

double QuantileMicros(std::vector<int64_t> values, double q) {
  if (values.empty()) return 0;
  const size_t rank = std::min(values.size() - 1, static_cast<size_t>(std::ceil(q * values.size())) -
                                                      (q > 0 ? 1 : 0));
  std::nth_element(values.begin(), values.begin() + rank, values.end());
  return values[rank] / 1000.0;
}

absl::StatusOr<LevelResult> RunLevel(const LoadPath& path, const Load& load,
                                     const Schedule& schedule, const ProgressCallback& progress) {
  if (absl::Status s = Validate(load, schedule); !s.ok()) return s;
  auto run = std::make_shared<Run>(path, load, schedule);
  std::thread sender;
  if (load.mode == Load::Mode::kClosed) {
    run->StartClosedLoop();
  } else {
    sender = std::thread([run] { run->SendOpenLoop(); });
  }
  auto sleep = [](double seconds) {
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  };
  sleep(schedule.warmup_seconds);
  run->TakeWindow();  // the warm-up's requests are not measured

  LevelResult result;
  result.path = path.name;
  result.load = load;
  std::deque<Window> kept;  // the last stable_windows windows
  ProcessCpu client_before = ReadProcessCpu();
  int64_t server_before = ServerCpu(path);
  for (int w = 0; w < schedule.max_windows; ++w) {
    sleep(schedule.window_seconds);
    Window window = run->TakeWindow();
    const ProcessCpu client_after = ReadProcessCpu();
    const int64_t server_after = ServerCpu(path);
    window.client_cpu_ns = client_after.total_ns() - client_before.total_ns();
    window.server_cpu_ns = server_before >= 0 && server_after >= 0 ? server_after - server_before : -1;
    client_before = client_after;
    server_before = server_after;
    result.windows.push_back(Summarise(window));
    kept.push_back(std::move(window));
    if (static_cast<int>(kept.size()) > schedule.stable_windows) kept.pop_front();
    if (progress) {
      LevelResult so_far = result;
      so_far.throughput = result.windows.back().throughput;
      so_far.p50_us = result.windows.back().p50_us;
      so_far.p99_us = result.windows.back().p99_us;
      so_far.errors = result.windows.back().errors;
      progress(so_far, w);
    }
    if (static_cast<int>(kept.size()) == schedule.stable_windows &&
        Stable(kept, schedule.stability)) {
      result.stable = true;
      break;
    }
    if (run->issued() >= schedule.max_requests) break;
  }
  run->Stop();
  if (sender.joinable()) sender.join();
  Aggregate(kept, &result);
  result.first_error = run->first_error();
  return result;
}

}  // namespace sparse
