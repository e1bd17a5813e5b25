// SparseClient: a small client for sparse-server's native API and health
// service, used by sparse-cli: synchronous calls, plus asynchronous Predict
// and Echo for the load generator. Errors come back as absl::Status
// with the server's code and message. Thread-safe (gRPC stubs are).
#ifndef SPARSE_CLIENT_CLIENT_H_
#define SPARSE_CLIENT_CLIENT_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "absl/synchronization/mutex.h"
#include "common/client_tls.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "inference/grpc_service.grpc.pb.h"
#include "sparse/v1/inference.grpc.pb.h"

namespace sparse {

// The channel credentials for `tls` (plaintext unless tls.on()), with the
// PEM files read now, and the channel arguments the server name override
// needs set on `args`. `flag_prefix` names the flags in errors: "--" gives
// --tls_ca, "--shard_" gives --shard_tls_ca. Errors: a half-given client
// certificate, an unreadable or non-PEM file (common/pem.h).
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsFor(
    const ClientTls& tls, absl::string_view flag_prefix, grpc::ChannelArguments* args);

class SparseClient {
 public:
  // `target` is host:port. Nothing connects until the first call. Errors:
  // unreadable or half-given TLS files.
  static absl::StatusOr<std::unique_ptr<SparseClient>> Create(
      const std::string& target, std::chrono::milliseconds timeout, const ClientTls& tls);

  // A plaintext client.
  explicit SparseClient(const std::string& target,
                        std::chrono::milliseconds timeout = std::chrono::seconds(30));

  struct Call {
    sparse::v1::PredictResponse response;
    int64_t round_trip_ns = 0;  // measured by the client
  };
  // Predict (or PredictDense when `dense`) on `rows` rows of `inputs`.
  // At most the server's row limit (GetModel's max_batch_rows) in one call;
  // client/batched_predict.h splits larger inputs.
  absl::StatusOr<Call> Predict(const std::string& model, int64_t version, int64_t rows,
                               absl::Span<const float> inputs, bool dense, bool route);
  // Echo: the serving path without a model (see the proto); returns the
  // client-measured round trip in nanoseconds.
  absl::StatusOr<int64_t> Echo(const std::string& payload);
  // Waits until every asynchronous call's callback has finished.
  ~SparseClient();

  // Asynchronous Predict (or PredictDense) and Echo on gRPC's callback API:
  // `done` runs on a gRPC thread when the call ends, with the call's status
  // and the response (empty on error). `request` must stay alive until then.
  // The client must outlive the calls; its destructor waits for them.
  void PredictAsync(const sparse::v1::PredictRequest* request, bool dense,
                    std::function<void(absl::Status, const sparse::v1::PredictResponse&)> done);
  void EchoAsync(const sparse::v1::EchoRequest* request, std::function<void(absl::Status)> done);
  // Asynchronous ModelInfer on the Open Inference Protocol, as PredictAsync.
  void ModelInferAsync(const inference::ModelInferRequest* request,
                       std::function<void(absl::Status, const inference::ModelInferResponse&)> done);
  // The server process's CPU time (UNIMPLEMENTED from a server without it).
  absl::StatusOr<sparse::v1::ServerStats> GetServerStats();
  absl::StatusOr<sparse::v1::ListModelsResponse> ListModels();
  absl::StatusOr<sparse::v1::ModelStatus> GetModel(const std::string& model);
  // Health of `service` ("" = the server itself, a model name = that model).
  absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> Health(
      const std::string& service);

 private:
  SparseClient(const std::string& target, std::chrono::milliseconds timeout,
               std::shared_ptr<grpc::Channel> channel);

  // Counts an asynchronous call from its start until its callback has
  // freed everything it owns, as the callback's last step.
  void AsyncStarted();
  void AsyncFinished();

  std::string target_;
  std::chrono::milliseconds timeout_;
  absl::Mutex async_mu_;
  int64_t async_in_flight_ ABSL_GUARDED_BY(async_mu_) = 0;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<sparse::v1::SparseInference::Stub> stub_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> oip_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

}  // namespace sparse

#endif  // SPARSE_CLIENT_CLIENT_H_
