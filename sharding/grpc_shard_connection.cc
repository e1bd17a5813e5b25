#include "sharding/grpc_shard_connection.h"

#include <algorithm>
#include <utility>

namespace sparse {
namespace {

// Round-robin over the addresses a target resolves to, each health-checked
// (grpc.health.v1, the server's overall status): a replica that is down or
// draining gets no calls while another serves. A call that fails
// UNAVAILABLE (a replica that died or began draining before its health
// said so) or CANCELLED (it reached a replica as that one closed its port;
// the front itself never cancels a call) is tried again, which round-robin
// sends to the next replica; with one replica the retries cost ~30 ms
// before the request fails.
constexpr char kServiceConfig[] = R"({
  "loadBalancingConfig": [{"round_robin": {}}],
  "healthCheckConfig": {"serviceName": ""},
  "methodConfig": [{
    "name": [{"service": "sparse.v1.ShardService"}],
    "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.01s", "maxBackoff": "0.05s",
                    "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"]}
  }]
})";

std::shared_ptr<grpc::Channel> ShardChannel(
    const std::string& target, const std::shared_ptr<grpc::ChannelCredentials>& credentials,
    grpc::ChannelArguments args, absl::Duration max_reconnect_backoff) {
  const int max_backoff_ms =
      static_cast<int>(std::max<int64_t>(100, absl::ToInt64Milliseconds(max_reconnect_backoff)));
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, std::min(100, max_backoff_ms));
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, std::min(100, max_backoff_ms));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, max_backoff_ms);
  // A shard that came back at another address (a pod recreated) is found
  // by resolving its name again, at most once a second here instead of
  // gRPC's default 30 s.
  args.SetInt(GRPC_ARG_DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS, std::min(1000, max_backoff_ms));
  // Internal calls carry a front's whole batch: no 4 MiB cap on answers.
  args.SetMaxReceiveMessageSize(-1);
  args.SetServiceConfigJSON(kServiceConfig);
  return grpc::CreateCustomChannel(target, credentials, args);
}

// gRPC's codes are absl::StatusCode's numbers.
absl::Status FromGrpc(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

}  // namespace

GrpcShardConnection::GrpcShardConnection(
    const std::string& target, const std::shared_ptr<grpc::ChannelCredentials>& credentials,
    grpc::ChannelArguments args, absl::Duration max_reconnect_backoff) {
  const std::shared_ptr<grpc::Channel> channel =
      ShardChannel(target, credentials, std::move(args), max_reconnect_backoff);
  shard_ = sparse::v1::ShardService::NewStub(channel);
  inference_ = sparse::v1::SparseInference::NewStub(channel);
}

void GrpcShardConnection::StartComputePartial(const sparse::v1::PartialRequest* request,
                                              absl::Time deadline,
                                              sparse::v1::PartialResponse* response,
                                              std::function<void(absl::Status)> done) {
  // The context lives in the callback, which gRPC destroys once it has run.
  auto context = std::make_shared<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(deadline));
  grpc::ClientContext* raw = context.get();
  shard_->async()->ComputePartial(
      raw, request, response,
      [context = std::move(context), done = std::move(done)](grpc::Status status) {
        done(FromGrpc(status));
      });
}

absl::Status GrpcShardConnection::ComputePartial(const sparse::v1::PartialRequest& request,
                                                 absl::Time deadline,
                                                 sparse::v1::PartialResponse* response) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(deadline));
  return FromGrpc(shard_->ComputePartial(&context, request, response));
}

absl::Status GrpcShardConnection::GetModel(const sparse::v1::GetModelRequest& request,
                                           absl::Time deadline, sparse::v1::ModelStatus* status) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(deadline));
  return FromGrpc(inference_->GetModel(&context, request, status));
}

}  // namespace sparse
