// SparseServer: the repository, the serving core and the frontends wired
// together: sparse.v1.SparseInference, the Open Inference Protocol,
// sparse.v1.ModelControl, grpc.health.v1.Health and reflection on gRPC, and
// Prometheus metrics over HTTP. Used by sparse-server's main and by
// in-process tests.
#ifndef SPARSE_SERVER_SERVER_H_
#define SPARSE_SERVER_SERVER_H_

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/client_tls.h"
#include "grpcpp/generic/async_generic_service.h"
#include "grpcpp/server.h"
#include "server/core/inference_core.h"
#include "server/grpc/sparse_inference_service.h"
#include "server/metrics/metrics.h"
#include "server/grpc/model_control_service.h"
#include "model_store/model_repository.h"
#include "server/http/http_server.h"
#include "server/grpc/oip_grpc_service.h"
#include "server/http/rest_frontend.h"
#include "server/grpc/shard_service.h"
#include "sharding/sharded_model.h"

namespace sparse {

// Everything sparse-server's flags set. How versions load (max_batch_rows,
// workers, max_model_bytes, cost_only_dense) is the LoaderOptions part,
// handed whole to the model repository and its loader
// (model_store/model_loader.h); here `workers` 0 means one per core.
struct ServerOptions : LoaderOptions {
  ServerOptions() { workers = 0; }

  std::string model_repository;
  // --model_name: model_repository is KServe's layout of this one model
  // (its version directories, or one version's files), served under this
  // name; empty = a repository of model directories.
  std::string model_name;
  std::string address = "0.0.0.0";
  int port = 8500;             // 0 picks a free port (see SparseServer::port)
  int64_t max_queue = 1024;    // requests waiting for a worker
  // Requests costing at most this many FLOPs run on the gRPC thread instead
  // of a worker (SparseInferenceService::Options); 0 queues every request.
  // -1: 262144, or on a shard server (`shard`) 4194304: a shard call runs
  // one expert slice per row, and handing it to a worker cost ~20 % of a
  // sharded request's latency (docs/benchmarks.md, "Sharded models").
  int64_t inline_max_flops = -1;
  // Largest gRPC message; 0 = just enough for max_batch_rows rows of the
  // widest loaded model (plus 1 MiB), so oversized junk is refused by gRPC
  // before it is buffered or queued.
  int64_t max_message_bytes = 0;
  // HTTP/2 streams (calls) one client connection may have open at once
  // (SETTINGS_MAX_CONCURRENT_STREAMS); further calls wait in the client.
  // Bounds what one connection can pin on the server (docs/security.md).
  int max_concurrent_streams = 1024;
  // TLS on the main port: PEM files of the server's certificate chain and
  // key (both or neither). With tls_client_ca_file too, clients must present
  // a certificate that CA signed (mutual TLS).
  std::string tls_cert_file, tls_key_file, tls_client_ca_file;
  // A second, plaintext port that serves only grpc.health.v1 (for
  // Kubernetes probes when the main port needs TLS); -1 = none, 0 = a free
  // port (see SparseServer::health_port).
  int health_port = -1;
  // Prometheus text endpoint (GET /metrics) on this port; -1 = none, 0 = a
  // free port (see SparseServer::metrics_port).
  int metrics_port = -1;
  // KServe v2 HTTP/REST (server/http/rest_frontend.h) on this port; -1 = none,
  // 0 = a free port (see SparseServer::http_port). TLS, the message limit
  // and the drain are the gRPC port's.
  int http_port = -1;
  int http_threads = 0;  // the HTTP port's I/O threads; 0 = one per core
  // Limits of both HTTP ports, REST and metrics (HttpServer::Options,
  // docs/configuration.md "HTTP limits"): the request line, header fields,
  // chunk extensions and trailers of one request; the time a keep-alive
  // connection may idle before a request, a request's header may take from
  // its first byte, and its body (and its reply's writing) may take; the
  // connections each port holds at once.
  int64_t http_header_bytes = 16 << 10;
  double http_idle_seconds = 60;
  double http_header_seconds = 10;
  double http_body_seconds = 60;
  int64_t http_max_connections = 1024;
  // Rescan the repository this often (new versions, removed ones, changed
  // config.pbtxt); 0 = load once at start.
  double poll_seconds = 0;
  // Serve sparse.v1.ModelControl (LoadModel / UnloadModel). With TLS on it
  // needs mutual TLS (tls_client_ca_file), so only clients holding a
  // certificate can change what serves.
  bool model_control = false;
  // How long a drain (SIGTERM) lets calls in flight or queued finish
  // (sparse-server's main passes it to Shutdown).
  double drain_seconds = 30;
  // Sharded models (docs/deploy.md, "Sharded models"). A shard server
  // (`shard` = "i/N") loads shard i of N of every model in the repository
  // and serves sparse.v1.ShardService; it keeps a version its fronts still
  // use for `shard_retain_seconds` after their last call. A front
  // (`shard_targets`, one gRPC target per shard index, in order) loads the
  // router of every model and sends each row to the shards that hold its
  // experts or tables; its load of a version waits up to
  // `shard_wait_seconds` for every shard to serve it. A server is one or
  // the other, or neither.
  std::string shard;
  // A shard whose index the platform gives in an environment variable
  // (LeaderWorkerSet's LWS_WORKER_INDEX, 1..N beside the leader's 0):
  // `shard` is then "/N", the count alone, and ResolveShardIndex reads the
  // index from `shard_index_env` at start-up. `shard_index_offset` is added
  // to the index, whichever gave it (-1 for LWS's workers).
  std::string shard_index_env;
  int shard_index_offset = 0;
  std::vector<std::string> shard_targets;
  double shard_wait_seconds = 120;
  double shard_retain_seconds = 60;
  double shard_max_reconnect_seconds = 2;
  // A front calls every shard with no rows this often for each version it
  // serves, so shards keep that version while the front serves it.
  double shard_keepalive_seconds = 10;
  // How a front reaches shards that serve TLS (--shard_tls*): plaintext
  // unless enabled; PEM files as sparse-cli's --tls_* flags take them.
  ClientTls shard_tls;

  // OK, or INVALID_ARGUMENT with one line per bad option, each naming its
  // flag, the range it takes and the value it got, or two options that
  // exclude each other. Where a flag applies at all (a shard's flags on a
  // front, --tls_client_ca without TLS) is server/server_flag_rules.h's.
  absl::Status Validate() const;
};

// Makes `options.shard` "i/N" from "/N" and the environment variable
// `options.shard_index_env` (read with `getenv`), plus
// `options.shard_index_offset`; from "i/N" with an offset, adds it. A
// no-op without either. INVALID_ARGUMENT saying what was expected and what
// came: the variable unset or not an integer, an index outside [0, N).
absl::Status ResolveShardIndex(ServerOptions& options,
                               absl::FunctionRef<const char*(const char*)> getenv);

class SparseServer {
 public:
  // Loads the repository and starts serving. Versions that fail to load are
  // skipped and listed in *load_errors (may be null); later load and unload
  // lines go to stderr. Errors: the repository is missing, holds no
  // loadable model, or the port is taken.
  static absl::StatusOr<std::unique_ptr<SparseServer>> Start(const ServerOptions& options,
                                                             std::vector<std::string>* load_errors);
  ~SparseServer();

  int port() const { return port_; }
  int health_port() const { return health_port_; }  // 0 when there is none
  int metrics_port() const { return metrics_http_ != nullptr ? metrics_http_->port() : 0; }  // 0: none
  int http_port() const { return http_ != nullptr ? http_->port() : 0; }  // 0: none
  ModelRepository& repository() const { return *repository_; }
  // The serving core every frontend calls (an in-process caller may too).
  InferenceCore& core() const { return *core_; }
  int workers() const { return core_->workers(); }

  // Drains: health turns NOT_SERVING, new calls are refused, calls in
  // flight or queued for a worker finish (up to `grace_ms`; later ones are
  // cancelled), then returns. Safe to call from any thread, more than once.
  void Shutdown(int64_t grace_ms = 5000);
  // Blocks until Shutdown() has completed.
  void Wait();

 private:
  SparseServer() = default;
  // Start(), one component at a time.
  absl::Status OpenRepository(const ServerOptions& options, int workers,
                              std::vector<std::string>* load_errors);
  absl::Status ServeMetrics(const ServerOptions& options);
  void StartCore(const ServerOptions& options, int workers);
  absl::Status ServeGrpc(const ServerOptions& options);
  absl::Status ServeHealthPort(const ServerOptions& options);
  absl::Status ServeHttp(const ServerOptions& options);
  // An HTTP port's options from the flags (limits, address, threads).
  static HttpServer::Options HttpOptions(const ServerOptions& options);
  // Metrics and health follow each published snapshot.
  void PublishModels(const RepositorySnapshot& snapshot);
  // Health per model follows the snapshot: SERVING while a version serves.
  void SetModelHealth(const RepositorySnapshot& snapshot);
  void ApplyModelHealth(const RepositorySnapshot& snapshot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(health_mu_);

  // A front's shards; declared before the repository, whose front models
  // use it, so that it is destroyed after them.
  std::unique_ptr<ShardSet> shard_set_;
  ShardSpec shard_spec_;  // a shard server's part
  std::unique_ptr<ShardService> shard_service_;
  std::unique_ptr<ModelRepository> repository_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::shared_ptr<RoutingCollector> routing_collector_;
  std::unique_ptr<MetricsEndpoint> metrics_endpoint_;
  std::unique_ptr<HttpServer> metrics_http_;  // --metrics_port
  std::unique_ptr<InferenceCore> core_;
  std::unique_ptr<ModelControl> control_;  // with --model_control only
  std::unique_ptr<SparseInferenceService> service_;
  std::unique_ptr<OipProtocol> open_inference_;  // OIP's calls, for gRPC and REST
  std::unique_ptr<OipGrpcService> oip_service_;
  std::unique_ptr<RestFrontend> rest_;
  std::unique_ptr<HttpServer> http_;
  int64_t message_bytes_ = 0;  // the largest request, on gRPC and HTTP
  HttpServer::Options tls_;    // the PEM text of --tls_*, read once for both ports
  std::unique_ptr<ModelControlService> control_service_;
  // Answers every other method on the health port UNIMPLEMENTED (and gives
  // that server the callback queue gRPC requires).
  // Declared before the server that uses it, so it is destroyed after.
  std::unique_ptr<grpc::CallbackGenericService> refuse_others_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<grpc::Server> health_server_;  // plaintext, health only
  absl::Mutex health_mu_;
  bool health_ready_ ABSL_GUARDED_BY(health_mu_) = false;
  std::set<std::string> health_models_ ABSL_GUARDED_BY(health_mu_);  // every name ever set
  int port_ = 0;
  int health_port_ = 0;
};

}  // namespace sparse

#endif  // SPARSE_SERVER_SERVER_H_
