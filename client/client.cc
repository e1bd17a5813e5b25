#include "client/client.h"

#include <tuple>

#include "absl/strings/str_cat.h"
#include "common/pem.h"
#include "common/status_macros.h"  // header-only macros
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace sparse {
namespace {

absl::Status FromGrpc(const grpc::Status& s, const std::string& target) {
  if (s.ok()) return absl::OkStatus();
  std::string message = s.error_message();
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE && message.find("connect") != std::string::npos) {
    message = absl::StrCat("cannot reach sparse-server at ", target, " (", message, ")");
  }
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), message);
}

}  // namespace

namespace {

// A command-line client talks to one server, often one just started: its
// channel keeps its own connections (not gRPC's process-wide pool, where a
// new channel would inherit a refused connection's backoff) and after a
// refused connection tries again within 0.1-1 s, not gRPC's default 1 s
// growing to 120 s. GRPC_ARG_MIN_RECONNECT_BACKOFF_MS is left at its
// default: in gRPC it is the least time a connection attempt is given
// (MIN_CONNECT_TIMEOUT, 20 s), and at 100 ms a busy server that took over
// a second to send its HTTP/2 SETTINGS was never reached (a bench under
// ASan with other benches running: "connection attempt timed out before
// receiving SETTINGS frame").
grpc::ChannelArguments ClientChannelArguments() {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  return args;
}

}  // namespace

SparseClient::SparseClient(const std::string& target, std::chrono::milliseconds timeout)
    : SparseClient(target, timeout,
                   grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(),
                                             ClientChannelArguments())) {}

SparseClient::SparseClient(const std::string& target, std::chrono::milliseconds timeout,
                           std::shared_ptr<grpc::Channel> channel)
    : target_(target),
      timeout_(timeout),
      channel_(std::move(channel)),
      stub_(sparse::v1::SparseInference::NewStub(channel_)),
      oip_(inference::GRPCInferenceService::NewStub(channel_)),
      health_(grpc::health::v1::Health::NewStub(channel_)) {}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsFor(
    const ClientTls& tls, absl::string_view flag_prefix, grpc::ChannelArguments* args) {
  if (!tls.on()) return grpc::InsecureChannelCredentials();
  const std::string ca_flag = absl::StrCat(flag_prefix, "tls_ca");
  const std::string cert_flag = absl::StrCat(flag_prefix, "tls_cert");
  const std::string key_flag = absl::StrCat(flag_prefix, "tls_key");
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("a client certificate needs both ", cert_flag, " and ", key_flag, ", got ",
                     tls.cert_file.empty() ? key_flag : cert_flag, " alone"));
  }
  grpc::SslCredentialsOptions ssl;
  for (auto [path, out, flag] : {std::tuple{&tls.ca_file, &ssl.pem_root_certs, &ca_flag},
                                 std::tuple{&tls.cert_file, &ssl.pem_cert_chain, &cert_flag},
                                 std::tuple{&tls.key_file, &ssl.pem_private_key, &key_flag}}) {
    if (path->empty()) continue;
    ASSIGN_OR_RETURN(*out, ReadPemFile(*path, *flag));
  }
  if (!tls.server_name.empty()) args->SetSslTargetNameOverride(tls.server_name);
  return grpc::SslCredentials(ssl);
}

absl::StatusOr<std::unique_ptr<SparseClient>> SparseClient::Create(
    const std::string& target, std::chrono::milliseconds timeout, const ClientTls& tls) {
  if (!tls.on()) return std::make_unique<SparseClient>(target, timeout);
  grpc::ChannelArguments args = ClientChannelArguments();
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> credentials,
                   ChannelCredentialsFor(tls, "--", &args));
  return std::unique_ptr<SparseClient>(
      new SparseClient(target, timeout, grpc::CreateCustomChannel(target, credentials, args)));
}

absl::StatusOr<SparseClient::Call> SparseClient::Predict(const std::string& model, int64_t version,
                                                          int64_t rows,
                                                          absl::Span<const float> inputs,
                                                          bool dense, bool route) {
  sparse::v1::PredictRequest request;
  request.set_model(model);
  request.set_version(version);
  request.set_rows(rows);
  request.set_return_route(route);
  request.mutable_inputs()->Add(inputs.begin(), inputs.end());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout_);
  Call call;
  const auto start = std::chrono::steady_clock::now();
  const grpc::Status s = dense ? stub_->PredictDense(&context, request, &call.response)
                               : stub_->Predict(&context, request, &call.response);
  call.round_trip_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                           std::chrono::steady_clock::now() - start).count();
  if (!s.ok()) return FromGrpc(s, target_);
  return call;
}

absl::StatusOr<int64_t> SparseClient::Echo(const std::string& payload) {
  sparse::v1::EchoRequest request;
  request.set_payload(payload);
  sparse::v1::EchoResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout_);
  const auto start = std::chrono::steady_clock::now();
  const grpc::Status s = stub_->Echo(&context, request, &response);
  const int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                         std::chrono::steady_clock::now() - start).count();
  if (!s.ok()) return FromGrpc(s, target_);
  return ns;
}

SparseClient::~SparseClient() {
  // A caller that waited for every `done` may still race the end of a
  // callback (freeing its context) with tearing down the channel and, at
  // exit, gRPC itself: sparse-cli bench crashed in a gRPC thread that way.
  absl::MutexLock lock(&async_mu_);
  async_mu_.Await(absl::Condition(
      +[](int64_t* n) { return *n == 0; }, &async_in_flight_));
}

void SparseClient::AsyncStarted() {
  absl::MutexLock lock(&async_mu_);
  ++async_in_flight_;
}

void SparseClient::AsyncFinished() {
  absl::MutexLock lock(&async_mu_);
  --async_in_flight_;
}

void SparseClient::PredictAsync(
    const sparse::v1::PredictRequest* request, bool dense,
    std::function<void(absl::Status, const sparse::v1::PredictResponse&)> done) {
  struct State {
    grpc::ClientContext context;
    sparse::v1::PredictResponse response;
    std::function<void(absl::Status, const sparse::v1::PredictResponse&)> done;
  };
  auto* state = new State;
  state->done = std::move(done);
  state->context.set_deadline(std::chrono::system_clock::now() + timeout_);
  AsyncStarted();
  auto finish = [this, state](grpc::Status s) {
    state->done(FromGrpc(s, target_), state->response);
    delete state;
    AsyncFinished();
  };
  if (dense) {
    stub_->async()->PredictDense(&state->context, request, &state->response, std::move(finish));
  } else {
    stub_->async()->Predict(&state->context, request, &state->response, std::move(finish));
  }
}

void SparseClient::ModelInferAsync(
    const inference::ModelInferRequest* request,
    std::function<void(absl::Status, const inference::ModelInferResponse&)> done) {
  struct State {
    grpc::ClientContext context;
    inference::ModelInferResponse response;
    std::function<void(absl::Status, const inference::ModelInferResponse&)> done;
  };
  auto* state = new State;
  state->done = std::move(done);
  state->context.set_deadline(std::chrono::system_clock::now() + timeout_);
  AsyncStarted();
  oip_->async()->ModelInfer(&state->context, request, &state->response,
                            [this, state](grpc::Status s) {
                              state->done(FromGrpc(s, target_), state->response);
                              delete state;
                              AsyncFinished();
                            });
}

void SparseClient::EchoAsync(const sparse::v1::EchoRequest* request,
                             std::function<void(absl::Status)> done) {
  struct State {
    grpc::ClientContext context;
    sparse::v1::EchoResponse response;
    std::function<void(absl::Status)> done;
  };
  auto* state = new State;
  state->done = std::move(done);
  state->context.set_deadline(std::chrono::system_clock::now() + timeout_);
  AsyncStarted();
  stub_->async()->Echo(&state->context, request, &state->response, [this, state](grpc::Status s) {
    state->done(FromGrpc(s, target_));
    delete state;
    AsyncFinished();
  });
}

absl::StatusOr<sparse::v1::ServerStats> SparseClient::GetServerStats() {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout_);
  sparse::v1::ServerStats response;
  const grpc::Status s = stub_->GetServerStats(&context, {}, &response);
  if (!s.ok()) return FromGrpc(s, target_);
  return response;
}

absl::StatusOr<sparse::v1::ListModelsResponse> SparseClient::ListModels() {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout_);
  sparse::v1::ListModelsResponse response;
  const grpc::Status s = stub_->ListModels(&context, {}, &response);
  if (!s.ok()) return FromGrpc(s, target_);
  return response;
}

absl::StatusOr<sparse::v1::ModelStatus> SparseClient::GetModel(const std::string& model) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout_);
  sparse::v1::GetModelRequest request;
  request.set_model(model);
  sparse::v1::ModelStatus response;
  const grpc::Status s = stub_->GetModel(&context, request, &response);
  if (!s.ok()) return FromGrpc(s, target_);
  return response;
}

absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> SparseClient::Health(
    const std::string& service) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout_);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status s = health_->Check(&context, request, &response);
  if (!s.ok()) return FromGrpc(s, target_);
  return response.status();
}

}  // namespace sparse
