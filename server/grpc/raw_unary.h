// Unary gRPC methods that take the request body as bytes and parse it
// themselves.
//
// gRPC 1.51's callback API answers a body that does not parse as the
// method's request message with its own "unimplemented" reactor: the client
// sees UNIMPLEMENTED with an empty message, for a method that exists. Our
// services therefore register every method raw (the generated
// WithRawCallbackMethod_* bases), and ServeUnary() parses the body here, so
// such a body gets INVALID_ARGUMENT saying the request did not parse, and a
// well-formed one reaches the typed handler as before. The library's own
// services (health, reflection) stay as they are.
#ifndef SPARSE_SERVER_GRPC_RAW_UNARY_H_
#define SPARSE_SERVER_GRPC_RAW_UNARY_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <type_traits>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "grpcpp/support/proto_buffer_writer.h"
#include "grpcpp/server_context.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "absl/time/time.h"
#include "common/internal_error.h"
#include "server/core/infer.h"
#include "server/grpc/grpc_status.h"

namespace sparse {

// Parses a request body into *message. An absent or empty body is the
// message with every field at its default, as protobuf defines it.
// INVALID_ARGUMENT (naming the message type and the body's size) when the
// bytes are not that message.
template <typename Message>
absl::Status ParseRequestBody(const grpc::ByteBuffer& body, Message* message) {
  if (!body.Valid() || body.Length() == 0) return absl::OkStatus();
  grpc::ByteBuffer copy(body);  // shares the slices; Deserialize consumes its buffer
  if (!grpc::SerializationTraits<Message>::Deserialize(&copy, message).ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the request did not parse: its ", body.Length(), " bytes are not a valid ",
        Message::descriptor()->full_name(),
        " message (truncated or corrupt, or a client built from another .proto)"));
  }
  return absl::OkStatus();
}

// Finishes one call: `done(status)` serializes the response (when OK) into
// the call's reply buffer and finishes the reactor with the status turned
// into gRPC's (ToGrpcStatus: the one place our gRPC frontends do it). Call
// it exactly once, from any thread.
using UnaryDone = std::function<void(absl::Status)>;

// Serves one raw unary call with a typed handler:
//   handler(const Request&, Response*, UnaryDone done)
// or, for a handler that times the request's decoding (BindToCall),
//   handler(const Request&, Response*, UnaryDone done,
//           std::chrono::steady_clock::time_point received)
// where `received` is when the body arrived, before it was parsed.
// The request and response live until `done` has run.
template <typename Request, typename Response, typename Handler>
grpc::ServerUnaryReactor* ServeUnary(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* body, grpc::ByteBuffer* reply,
                                     Handler&& handler) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  struct Call {
    Request request;
    Response response;
  };
  const auto received = std::chrono::steady_clock::now();
  auto call = std::make_shared<Call>();
  const absl::Status parsed = ParseRequestBody(*body, &call->request);
  if (!parsed.ok()) {
    reactor->Finish(ToGrpcStatus(parsed));
    return reactor;
  }
  // Once only: a handler that throws after it answered (or handed the call
  // to the core, which answers later) is not answered twice.
  auto answered = std::make_shared<std::atomic<bool>>(false);
  UnaryDone done = [call, reply, reactor, answered](const absl::Status& status) {
    if (answered->exchange(true)) return;
    if (!status.ok()) {
      reactor->Finish(ToGrpcStatus(status));
      return;
    }
    bool own_buffer = false;
    reactor->Finish(grpc::SerializationTraits<Response>::Serialize(call->response, reply, &own_buffer));
  };
  // What the handler throws fails this call alone, INTERNAL, and is counted.
  const absl::Status handled = CatchInternal(ErrorSite::kGrpc, [&] {
    FaultPoint(ErrorSite::kGrpc);
    if constexpr (std::is_invocable_v<Handler, const Request&, Response*, UnaryDone,
                                      std::chrono::steady_clock::time_point>) {
      handler(call->request, &call->response, done, received);
    } else {
      handler(call->request, &call->response, done);
    }
  });
  if (!handled.ok()) done(handled);
  return reactor;
}

// For handlers that answer at once: handler(const Request&, Response*)
// returns the call's status.
template <typename Request, typename Response, typename Handler>
grpc::ServerUnaryReactor* ServeUnaryNow(grpc::CallbackServerContext* context,
                                        const grpc::ByteBuffer* body, grpc::ByteBuffer* reply,
                                        Handler&& handler) {
  return ServeUnary<Request, Response>(
      context, body, reply, [&handler](const Request& request, Response* response, UnaryDone done) {
        done(handler(request, response));
      });
}

// Ties the core's request to the gRPC call it came in on: the call's
// deadline, and whether its client has gone (a request still queued then is
// answered before any compute).
inline void BindToCall(grpc::CallbackServerContext* context,
                       std::chrono::steady_clock::time_point received, InferRequest* request) {
  request->deadline = absl::FromChrono(context->deadline());
  request->cancelled = [context] { return context->IsCancelled(); };
  request->decode_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                           std::chrono::steady_clock::now() - received)
                           .count();
}

}  // namespace sparse

#endif  // SPARSE_SERVER_GRPC_RAW_UNARY_H_
