// The load generator behind `sparse-cli bench`, in the spirit of
// perf_analyzer, wrk2 and ghz. It drives one path (the sparse endpoint, the
// dense endpoint, Echo...) at one load level and measures it:
//
//  - closed loop: `concurrency` requests in flight; each completion issues
//    the next one at once. Latency is measured from the actual send.
//  - open loop: requests are due at a constant or Poisson rate whether or not
//    earlier ones have come back, and latency is measured from each
//    request's *intended* send time. When the server stalls, requests queue
//    up and their latency grows: no coordinated omission.
//
// A level runs a warm-up, then measurement windows until the throughput of
// the last `stable_windows` windows lies within ±`stability` of their mean
// (or `max_windows` windows or `max_requests` requests were reached); the
// result aggregates those last windows. Client CPU comes from getrusage,
// server CPU from a callback (GetServerStats), both divided by the requests
// completed, so "CPU per request" includes everything each process did.
//
// The generator knows nothing about gRPC: a path is a function that starts
// one asynchronous request and calls back when it ends. Thread-safe to call
// RunLevel from one thread at a time.
#ifndef SPARSE_CLIENT_LOAD_GENERATOR_H_
#define SPARSE_CLIENT_LOAD_GENERATOR_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sparse {

// What the server said about one request (zero where a path has no cost).
struct ServerSide {
  int64_t total_ns = 0, queue_ns = 0, route_ns = 0, compute_ns = 0, flops = 0;
  int64_t weight_bytes = 0;  // 0 when the answer does not report it
  int64_t major_faults = 0;  // Cost.major_faults; 0 when the answer does not report it
};

struct LoadPath {
  std::string name;
  // Starts request number `index` and returns at once; `done` must be called
  // exactly once, from another thread, when the request ends (not from
  // inside `issue`: a closed loop would recurse; gRPC's callbacks never do).
  std::function<void(int64_t index, std::function<void(absl::Status, ServerSide)> done)> issue;
  // The server process's CPU time in ns so far; null or an error when the
  // server cannot tell (then server CPU per request is reported as unknown).
  std::function<absl::StatusOr<int64_t>()> server_cpu_ns;
};

struct Load {
  enum class Mode { kClosed, kOpen };
  Mode mode = Mode::kClosed;
  int concurrency = 1;   // closed loop: requests in flight
  double rate = 100;     // open loop: requests per second
  bool poisson = false;  // open loop: exponential gaps instead of constant ones
  std::string Describe() const;  // "concurrency 4", "1000 req/s poisson"
};

struct Schedule {
  double warmup_seconds = 1;
  double window_seconds = 1;
  int stable_windows = 3;  // windows that must agree (and are reported)
  int max_windows = 10;
  double stability = 0.10;       // ±10 % of the mean throughput
  int64_t max_requests = 1'000'000;  // per level, warm-up included
  // Open loop: at most this many requests in flight; beyond it the sender
  // waits, and the wait counts in latency (measured from intended times).
  int64_t max_outstanding = 4096;
  uint64_t seed = 1;  // Poisson gaps
};

struct WindowResult {
  double seconds = 0;
  int64_t completed = 0, errors = 0;
  double throughput = 0;  // completed per second
  double p50_us = 0, p99_us = 0;
};

struct LevelResult {
  std::string path;
  Load load;
  std::vector<WindowResult> windows;  // every measured window, in order
  bool stable = false;
  // Over the reported (last stable_windows) windows:
  double seconds = 0;
  int64_t completed = 0, errors = 0;
  double throughput = 0;
  double p50_us = 0, p90_us = 0, p99_us = 0, p999_us = 0, mean_us = 0, max_us = 0;
  // Means per successful request: where the round trip went. `network_us`
  // is what the server did not account for (transport, serialization, the
  // client), i.e. mean round trip minus mean server total.
  double server_us = 0, queue_us = 0, route_us = 0, compute_us = 0, network_us = 0;
  double route_p50_us = 0, compute_p50_us = 0;
  int64_t flops_per_request = 0;
  int64_t weight_bytes_per_request = 0;
  // Mean major page faults per request (the server's Cost.major_faults): a
  // fraction when few requests fault.
  double major_faults_per_request = 0;
  double client_cpu_us_per_request = 0;
  double server_cpu_us_per_request = -1;  // -1: unknown
  std::string first_error;
};

// Called after each window with the level so far (for a progress line).
using ProgressCallback = std::function<void(const LevelResult& so_far, int window)>;

// Runs `path` at `load`. Errors only for an invalid load or schedule; failed
// requests are counted in the result.
absl::StatusOr<LevelResult> RunLevel(const LoadPath& path, const Load& load,
                                     const Schedule& schedule,
                                     const ProgressCallback& progress = nullptr);

// The value at quantile q (0..1) of `values` (nearest rank), in µs from ns.
double QuantileMicros(std::vector<int64_t> values, double q);

}  // namespace sparse

#endif  // SPARSE_CLIENT_LOAD_GENERATOR_H_
