// `sparse-cli bench`: the sparse and dense endpoints of one model (and,
// when asked, Echo on the same server and a bare gRPC echo server) driven by
// the load generator at every requested load level, over each requested
// protocol (native gRPC, the Open Inference Protocol on gRPC, REST with JSON
// and with binary tensors), alternating paths at each level, then printed
// side by side, and optionally written as CSV, JSON and an SVG
// latency-vs-throughput plot.
#ifndef SPARSE_CLIENT_BENCH_COMMAND_H_
#define SPARSE_CLIENT_BENCH_COMMAND_H_

#include <chrono>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/client.h"
#include "client/load_generator.h"

namespace sparse {

struct BenchOptions {
  std::string target;       // sparse-server
  std::string echo_target;  // bench/echo_server (plaintext); "" = none
  ClientTls tls;            // how to reach `target`
  bool allow_remote = false;
  std::string model;
  int64_t version = 0;
  std::vector<std::string> paths;  // sparse, dense, echo, bare_echo
  // native (sparse.v1), oip (ModelInfer, raw tensors), rest (KServe JSON),
  // rest_binary (Triton's binary tensor data); sparse and dense run on each,
  // named "sparse@oip" and so on ("sparse" alone is native).
  std::vector<std::string> protocols = {"native"};
  std::string http_target;  // sparse-server's --http_port, host:port (rest*)
  int64_t batch = 1;
  // A .npy or CSV file of input rows (--rows), sent in order, --batch rows
  // per request, cycling; "" = random rows in [-1, 1].
  std::string rows_path;
  Load::Mode mode = Load::Mode::kClosed;
  std::vector<int> concurrency;  // closed loop levels
  std::vector<double> rates;     // open loop levels
  bool poisson = false;
  Schedule schedule;
  uint32_t priority = 0;  // each request's priority level; 0: the model's default
  std::chrono::milliseconds timeout{30000};
  std::string csv_path, plot_path;  // "" = not written
  bool json = false;                // print JSON instead of the table
  bool progress = true;             // a line per window on stderr
};

// Runs the benchmark and prints the result on stdout. Errors: bad options
// (INVALID_ARGUMENT, with the flag to fix), an unreachable server, an
// unknown model, or a path whose every request failed.
absl::Status RunBench(const BenchOptions& options);

// The inputs of the requests a bench cycles through, each `o.batch` rows
// of `d` values, row-major: with `o.rows_path`, the file's rows in order
// (the last request of a pass wraps around to the first rows when the
// batch does not divide them; a file of the wrong width is refused);
// otherwise 64 batches of random values in [-1, 1], seeded alike on every
// run.
absl::StatusOr<std::vector<std::vector<float>>> BenchInputs(const BenchOptions& o, int64_t d);

// A load path sending `requests` in turn to Predict (or PredictDense when
// `dense`) through `client`, with the server's CPU from GetServerStats.
// `client` and `requests` (not empty) must outlive every level run on it.
LoadPath PredictLoadPath(const std::string& name, SparseClient* client,
                         const std::vector<sparse::v1::PredictRequest>* requests, bool dense);

// True for targets on this machine: localhost, 127.0.0.0/8, [::1], unix:.
bool IsLoopbackTarget(const std::string& target);

// Bytes for people: "812 B", "296.0 KiB", "1.04 MiB", "1.25 GiB".
std::string HumanBytes(int64_t bytes);

}  // namespace sparse

#endif  // SPARSE_CLIENT_BENCH_COMMAND_H_
