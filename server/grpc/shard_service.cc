#include "server/grpc/shard_service.h"

#include <memory>

#include "server/grpc/raw_unary.h"
#include "server/grpc/sparse_v1_messages.h"

namespace sparse {

using sparse::v1::PartialRequest;
using sparse::v1::PartialResponse;

ShardService::ShardService(InferenceCore* core) : core_(core) {}

grpc::ServerUnaryReactor* ShardService::ComputePartial(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request,
                                                       grpc::ByteBuffer* response) {
  return ServeUnary<PartialRequest, PartialResponse>(
      context, request, response,
      [this, context](const PartialRequest& r, PartialResponse* out, UnaryDone done,
                      std::chrono::steady_clock::time_point received) {
        // The core's request, its route and its answer live until the call is done.
        struct Call {
          Route given;
          InferRequest request;
          InferResponse answer;
        };
        auto call = std::make_shared<Call>();
        call->request = ToInferRequest(r, &call->given);
        BindToCall(context, received, &call->request);
        core_->Infer(call->request, &call->answer,
                     [call, out, done = std::move(done)](absl::Status status) {
                       if (status.ok()) ToPartialResponse(call->answer, out);
                       done(status);
                     });
      });
}

}  // namespace sparse
