// sparse-server: serves every model of a model repository over gRPC —
// sparse.v1.SparseInference (Predict on the routed sparse path, PredictDense
// on the dense baseline), grpc.health.v1.Health and server reflection.
// SIGINT or SIGTERM stops it cleanly. Run with --help for the flags.
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "common/command_line.h"
#include "common/version.h"
#include "server/server.h"
#include "server/server_flag_rules.h"

ABSL_FLAG(std::string, model_repository, "",
          "Model repository: <repository>/<model>/<version>/ directories written by sparse-train. "
          "Each model's config.pbtxt picks the versions that load (default: the newest one that "
          "loads); a request without a version gets the newest loaded.");
ABSL_FLAG(std::string, model_name, "",
          "Serve --model_repository as KServe's layout of one model named this (e.g. "
          "--model_repository=/mnt/models --model_name=m): its version directories 1/, 2/, ... "
          "(and config.pbtxt), or one version's files (manifest.json, model.safetensors) served "
          "as version 1. Empty: a repository of model directories.");
ABSL_FLAG(std::string, address, "0.0.0.0", "Address to listen on (127.0.0.1 for loopback only).");
ABSL_FLAG(int, port, 8500, "gRPC port (0 picks a free one and prints it).");
ABSL_FLAG(int, workers, 0, "Inference worker threads, one request each (0 = one per core).");
ABSL_FLAG(int64_t, max_queue, 1024,
          "Requests that may wait for a worker; beyond it requests get UNAVAILABLE.");
ABSL_FLAG(int64_t, max_batch_rows, 1024, "Largest batch (rows) a request may carry.");
ABSL_FLAG(int, max_concurrent_streams, 1024,
          "Calls one client connection may have open at once (HTTP/2 "
          "SETTINGS_MAX_CONCURRENT_STREAMS); further calls wait in the client. Bounds what one "
          "connection can hold on the server.");
ABSL_FLAG(int64_t, inline_max_flops, -1,
          "Requests costing at most this many FLOPs (rows x FLOPs per row) run on the gRPC thread "
          "that received them instead of queueing for a worker: for an LSH table or a small expert "
          "slice the hand-off costs more than the model. 0 queues every request. -1 = 262144, or "
          "4194304 on a shard server (--shard), whose calls compute one expert slice per row.");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain for TLS on --port (with --tls_key); empty = plaintext.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key for --tls_cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA certificates: with TLS on, clients must present a certificate one of them "
          "signed (mutual TLS).");
ABSL_FLAG(int, health_port, -1,
          "Also serve grpc.health.v1 alone, in plaintext, on this port (for Kubernetes probes "
          "when --port needs TLS); -1 = no such port, 0 = a free one (printed after --port).");
ABSL_FLAG(int, metrics_port, -1,
          "Serve Prometheus metrics (GET /metrics) on this port: requests by model, path and code, "
          "latency histograms, FLOPs, batch sizes, loaded versions; -1 = off, 0 = a free one "
          "(printed on stdout after --port and --health_port).");
ABSL_FLAG(int, http_port, -1,
          "Also serve the Open Inference Protocol over HTTP/REST (KServe v2, with Triton's "
          "binary tensor extension) on this port, with --port's TLS, limits and drain; "
          "-1 = off, 0 = a free one (printed on stdout after the metrics port).");
ABSL_FLAG(int64_t, max_message_bytes, 0,
          "Largest request, in bytes, on the gRPC and HTTP ports (larger ones are refused before "
          "they are buffered); 0 = enough for --max_batch_rows rows of the widest loaded model "
          "plus 1 MiB, at least 64 MiB.");
ABSL_FLAG(int, http_threads, 0,
          "Threads that run the HTTP port's connections (asynchronous I/O, and the requests "
          "cheap enough to answer inline); 0 = one per core.");
ABSL_FLAG(int64_t, http_header_bytes, 16384,
          "On the HTTP and metrics ports: the most bytes a request's line, header fields, chunk "
          "extensions and trailers may take together; beyond it the request gets 431 and its "
          "connection closes.");
ABSL_FLAG(double, http_idle_seconds, 60,
          "On the HTTP and metrics ports: a keep-alive connection with no request for this long "
          "is closed.");
ABSL_FLAG(double, http_header_seconds, 10,
          "On the HTTP and metrics ports: a request's header must arrive within this long of its "
          "first byte, else the connection closes (slowloris clients hold nothing long).");
ABSL_FLAG(double, http_body_seconds, 60,
          "On the HTTP and metrics ports: a request's body must arrive, and its reply be taken by "
          "the client, within this long each, else the connection closes.");
ABSL_FLAG(int64_t, http_max_connections, 1024,
          "On each of the HTTP and metrics ports: the most connections open at once; one more gets "
          "503 with Connection: close. Keep it below the file-descriptor limit (ulimit -n).");
ABSL_FLAG(double, poll_seconds, 0,
          "Rescan --model_repository this often: new versions load in the background and serve "
          "once validated and warmed up, removed ones unload, a changed config.pbtxt applies. "
          "0 = load once at start.");
ABSL_FLAG(int64_t, max_model_bytes, 0,
          "Memory budget of one model version, in bytes: a version whose estimated cost (tensor "
          "files, hash index, activation workspace per worker; docs/configuration.md) is larger "
          "fails to load (RESOURCE_EXHAUSTED) before its tensors are read, and what serves "
          "stays. 0 = half of the memory available to the process (the cgroup limit, else "
          "MemTotal).");
ABSL_FLAG(bool, model_control, false,
          "Serve sparse.v1.ModelControl (LoadModel / UnloadModel) so a client decides what "
          "serves; excludes --poll_seconds. With TLS it needs --tls_client_ca.");
ABSL_FLAG(double, drain_seconds, 30,
          "On SIGINT/SIGTERM: health turns NOT_SERVING, new calls are refused, and calls in "
          "flight or queued get this long to finish (match Kubernetes' "
          "terminationGracePeriodSeconds); then the rest are cancelled and the process exits 0.");

ABSL_FLAG(bool, cost_only_dense, true,
          "Give a DSM version without a trained dense twin a cost-only dense endpoint: its own "
          "weights run unmasked (PredictDense reports the dense cost; dense_cost_only is set). "
          "It holds a second copy of the weights; --nocost_only_dense serves no dense endpoint "
          "for such versions instead.");
ABSL_FLAG(std::string, weight_cache_dir, "",
          "A writable directory (an emptyDir in Kubernetes) where the server keeps each DSM "
          "version's weights in the kernels' layout, written on its first load, and computes on a "
          "read-only mapping of that file: memory then follows the experts requests use, and "
          "processes serving one version share it (docs/weight-cache.md). Empty: weights are "
          "copied into process memory, as they are for versions that cannot be mapped: LSH tables "
          "(and their shards' parts) and format_version 1 manifests. A DSM shard (--shard) maps "
          "its part from a file of its own.");
ABSL_FLAG(std::string, weight_verify, "load",
          "When a mapped weight cache file's per-part SHA-256 sums are checked: 'load' (every part, "
          "on every core, before the version serves) or 'touch' (each expert slice on its first "
          "request: loads at once, and a corrupt slice fails only the requests routed to it, "
          "with DATA_LOSS).");
ABSL_FLAG(std::string, shard, "",
          "Serve as shard i of N of every model in the repository, e.g. 0/4 (docs/deploy.md, "
          "\"Sharded models\"): load only experts [iE/N, (i+1)E/N) of each DSM block, or tables "
          "[is/N, (i+1)s/N) of each LSH model, read and checked range by range, and answer the "
          "fronts' sparse.v1.ShardService calls. On Kubernetes the pod's ordinal gives i.");
ABSL_FLAG(std::string, shard_index_env, "",
          "A shard whose index is in this environment variable (e.g. LWS_WORKER_INDEX on a "
          "LeaderWorkerSet): --shard then gives the count alone, e.g. --shard=/4 "
          "(docs/deploy.md, \"LeaderWorkerSet\").");
ABSL_FLAG(int, shard_index_offset, 0,
          "Added to a shard's index, from --shard or --shard_index_env: -1 on a LeaderWorkerSet, "
          "whose workers are numbered 1..N after the leader's 0.");
ABSL_FLAG(std::string, shard_targets, "",
          "Serve as the front of sharded models: one gRPC target per shard index, in order, "
          "separated by ';' (e.g. 'dns:///shard-0.shards:8500;dns:///shard-1.shards:8500'; a "
          "target that resolves to several replicas of one index is balanced round-robin with "
          "health checks). The front routes each row and calls the shards that hold it.");
ABSL_FLAG(double, shard_wait_seconds, 120,
          "A front's load of a version waits this long for every shard to serve it; the version "
          "it serves meanwhile stays.");
ABSL_FLAG(double, shard_retain_seconds, 60,
          "A shard keeps a version its fronts still call, after a newer one loaded, until it has "
          "had no call for this long.");
ABSL_FLAG(double, shard_max_reconnect_seconds, 2,
          "A front retries a shard that went away after at most this long (gRPC's reconnect "
          "back-off).");
ABSL_FLAG(double, shard_keepalive_seconds, 10,
          "A front calls every shard with no rows this often for each version it serves (a "
          "burst of 8 per shard index, spread over its replicas), so the shards keep that "
          "version while the front serves it, busy or idle; keep it well below the shards' "
          "--shard_retain_seconds.");
ABSL_FLAG(bool, shard_tls, false,
          "A front talks TLS to its shards (implied by any other --shard_tls_ flag); the "
          "system's roots verify them unless --shard_tls_ca is given.");
ABSL_FLAG(std::string, shard_tls_ca, "",
          "A front's PEM CA certificates that verify its shards' certificates.");
ABSL_FLAG(std::string, shard_tls_cert, "",
          "A front's PEM client certificate, for shards that require mutual TLS "
          "(--tls_client_ca on the shards).");
ABSL_FLAG(std::string, shard_tls_key, "", "PEM private key of --shard_tls_cert.");
ABSL_FLAG(std::string, shard_tls_server_name, "",
          "Name to check every shard's certificate against, when it differs from the targets' "
          "host names.");

namespace {

// The flags as the server's options; false (having said why) when one
// cannot be read as what it takes. ServerOptions::Validate checks the rest.
bool OptionsFromFlags(sparse::ServerOptions& options) {
  options.model_repository = absl::GetFlag(FLAGS_model_repository);
  options.model_name = absl::GetFlag(FLAGS_model_name);
  options.address = absl::GetFlag(FLAGS_address);
  options.port = absl::GetFlag(FLAGS_port);
  options.workers = absl::GetFlag(FLAGS_workers);
  options.max_queue = absl::GetFlag(FLAGS_max_queue);
  options.max_batch_rows = absl::GetFlag(FLAGS_max_batch_rows);
  options.inline_max_flops = absl::GetFlag(FLAGS_inline_max_flops);
  options.max_concurrent_streams = absl::GetFlag(FLAGS_max_concurrent_streams);
  options.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  options.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  options.health_port = absl::GetFlag(FLAGS_health_port);
  options.metrics_port = absl::GetFlag(FLAGS_metrics_port);
  options.http_port = absl::GetFlag(FLAGS_http_port);
  options.http_threads = absl::GetFlag(FLAGS_http_threads);
  options.http_header_bytes = absl::GetFlag(FLAGS_http_header_bytes);
  options.http_idle_seconds = absl::GetFlag(FLAGS_http_idle_seconds);
  options.http_header_seconds = absl::GetFlag(FLAGS_http_header_seconds);
  options.http_body_seconds = absl::GetFlag(FLAGS_http_body_seconds);
  options.http_max_connections = absl::GetFlag(FLAGS_http_max_connections);
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  options.poll_seconds = absl::GetFlag(FLAGS_poll_seconds);
  options.model_control = absl::GetFlag(FLAGS_model_control);
  options.drain_seconds = absl::GetFlag(FLAGS_drain_seconds);
  options.cost_only_dense = absl::GetFlag(FLAGS_cost_only_dense);
  options.weight_cache_dir = absl::GetFlag(FLAGS_weight_cache_dir);
  {
    absl::StatusOr<sparse::WeightVerify> verify =
        sparse::ParseWeightVerify(absl::GetFlag(FLAGS_weight_verify));
    if (!verify.ok()) {
      std::fprintf(stderr, "sparse-server: --weight_verify: %s\n",
                   std::string(verify.status().message()).c_str());
      return false;
    }
    options.weight_verify = *verify;
  }
  options.shard = absl::GetFlag(FLAGS_shard);
  options.shard_index_env = absl::GetFlag(FLAGS_shard_index_env);
  options.shard_index_offset = absl::GetFlag(FLAGS_shard_index_offset);
  for (absl::string_view target :
       absl::StrSplit(absl::GetFlag(FLAGS_shard_targets), ';', absl::SkipWhitespace())) {
    options.shard_targets.emplace_back(absl::StripAsciiWhitespace(target));
  }
  options.shard_wait_seconds = absl::GetFlag(FLAGS_shard_wait_seconds);
  options.shard_retain_seconds = absl::GetFlag(FLAGS_shard_retain_seconds);
  options.shard_max_reconnect_seconds = absl::GetFlag(FLAGS_shard_max_reconnect_seconds);
  options.shard_keepalive_seconds = absl::GetFlag(FLAGS_shard_keepalive_seconds);
  options.shard_tls = {.enabled = absl::GetFlag(FLAGS_shard_tls),
                       .ca_file = absl::GetFlag(FLAGS_shard_tls_ca),
                       .cert_file = absl::GetFlag(FLAGS_shard_tls_cert),
                       .key_file = absl::GetFlag(FLAGS_shard_tls_key),
                       .server_name = absl::GetFlag(FLAGS_shard_tls_server_name)};
  const int64_t max_model_bytes = absl::GetFlag(FLAGS_max_model_bytes);
  if (max_model_bytes < 0) {
    std::fprintf(stderr, "sparse-server: --max_model_bytes takes bytes >= 0 (0 = half the memory), got %lld\n",
                 static_cast<long long>(max_model_bytes));
    return false;
  }
  options.max_model_bytes = static_cast<uint64_t>(max_model_bytes);
  return true;
}

// What serves and where: the models on stderr; each port on its own line
// of stdout (the gRPC port, then health, metrics and REST when on), for
// scripts that start it on port 0.
void ReportStarted(const sparse::SparseServer& server, const sparse::ServerOptions& options) {
  for (const auto& [name, state] : *server.repository().snapshot()) {
    if (state.versions.empty()) {
      std::fprintf(stderr, "sparse-server: model %s: no version loads (GetModel lists why)\n",
                   name.c_str());
      continue;
    }
    const auto& newest = state.versions.rbegin()->second->loaded;
    std::fprintf(stderr, "sparse-server: model %s: %zu version(s), newest %lld (loaded in %.3f s): %s\n",
                 name.c_str(), state.versions.size(),
                 static_cast<long long>(state.versions.rbegin()->first),
                 state.versions.rbegin()->second->load_seconds,
                 newest.sparse->info().description.c_str());
  }
  std::fprintf(stderr, "sparse-server: listening on %s:%d (%s) with %d workers\n",
               options.address.c_str(), server.port(),
               options.tls_cert_file.empty()        ? "plaintext"
               : options.tls_client_ca_file.empty() ? "TLS"
                                                    : "mutual TLS",
               server.workers());
  std::printf("%d\n", server.port());
  if (server.health_port() > 0) {
    std::fprintf(stderr, "sparse-server: health only, plaintext, on %s:%d\n",
                 options.address.c_str(), server.health_port());
    std::printf("%d\n", server.health_port());
  }
  if (server.metrics_port() > 0) {
    std::fprintf(stderr, "sparse-server: Prometheus metrics on http://%s:%d/metrics\n",
                 options.address.c_str(), server.metrics_port());
    std::printf("%d\n", server.metrics_port());
  }
  if (server.http_port() > 0) {
    std::fprintf(stderr, "sparse-server: KServe v2 REST on %s://%s:%d/v2\n",
                 options.tls_cert_file.empty() ? "http" : "https", options.address.c_str(),
                 server.http_port());
    std::printf("%d\n", server.http_port());
  }
  std::fflush(stdout);

}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> rest = sparse::ParseCommandLine(
      argc, argv,
      "serves a model repository over gRPC.\n\n"
      "  sparse-server --model_repository=models --port=8500\n"
      "  sparse-server --model_repository=models --tls_cert=server.pem --tls_key=server.key \\\n"
      "      [--tls_client_ca=clients-ca.pem] [--health_port=8501]\n\n"
      "Models: <repository>/<model>/<version>/ as sparse-train writes them, and an optional\n"
      "<repository>/<model>/config.pbtxt (version policy, dynamic batching; docs/configuration.md).\n\n"
      "Services: sparse.v1.SparseInference (Predict, PredictDense, ListModels, GetModel),\n"
      "inference.GRPCInferenceService (Open Inference Protocol v2, and over HTTP/REST with\n"
      "--http_port), sparse.v1.ModelControl (with --model_control), "
      "grpc.health.v1.Health (\"\" = live, a model name = ready) and server reflection.\n\n"
      "Models larger than one machine: run N shard servers (--shard=i/N) and fronts\n"
      "(--shard_targets=...) on one shared repository (docs/deploy.md); fronts reach shards\n"
      "that serve TLS with --shard_tls_ca (and --shard_tls_cert/--shard_tls_key for mutual TLS).",
      "server/main.", sparse::VersionText());
  if (!rest.empty()) {
    std::fprintf(stderr, "sparse-server: unexpected argument '%s' (see --help)\n", rest[0].c_str());
    return 1;
  }
  if (absl::GetFlag(FLAGS_model_repository).empty()) {
    std::fprintf(stderr, "sparse-server: --model_repository is required (see --help)\n");
    return 1;
  }
  // Block the stop signals in every thread; one thread waits for them.
  sparse::BlockStopSignals();

  sparse::ServerOptions options;
  if (!OptionsFromFlags(options)) return 1;
  // A flag set where it would be ignored (server/server_flag_rules.h).
  if (const absl::Status applies = sparse::CheckServerFlags(options); !applies.ok()) {
    std::fprintf(stderr, "sparse-server: error: %s\n", std::string(applies.message()).c_str());
    return 1;
  }
  // A shard index from the environment (--shard_index_env) and its offset.
  if (const absl::Status index = sparse::ResolveShardIndex(options, std::getenv); !index.ok()) {
    std::fprintf(stderr, "sparse-server: %s\n", std::string(index.message()).c_str());
    return 1;
  }
  // Every bad flag on its own line, naming the flag, what it takes and what it got.
  if (const absl::Status valid = options.Validate(); !valid.ok()) {
    for (absl::string_view line : absl::StrSplit(valid.message(), '\n')) {
      std::fprintf(stderr, "sparse-server: %.*s\n", static_cast<int>(line.size()), line.data());
    }
    std::fprintf(stderr, "sparse-server: see --help\n");
    return 1;
  }
  std::vector<std::string> load_errors;
  absl::StatusOr<std::unique_ptr<sparse::SparseServer>> server =
      sparse::SparseServer::Start(options, &load_errors);
  for (const std::string& e : load_errors) {
    std::fprintf(stderr, "sparse-server: skipped %s\n", e.c_str());
  }
  if (!server.ok()) {
    std::fprintf(stderr, "sparse-server: error: %s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  ReportStarted(**server, options);

  sparse::SparseServer* s = server->get();
  const auto grace = static_cast<int64_t>(options.drain_seconds * 1000);
  std::thread stopper([s, grace] {
    std::fprintf(stderr, "sparse-server: %s received, stopping\n", sparse::WaitForStopSignal());
    s->Shutdown(grace);
  });
  s->Wait();
  stopper.join();
  server->reset();
  std::fprintf(stderr, "sparse-server: stopped\n");
  return 0;
}
