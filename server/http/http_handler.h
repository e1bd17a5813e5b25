// What an HTTP port serves, apart from the transport (server/http/http_server.h):
// a request read whole and checked, the reply to write, and the handler
// that turns one into the other. The REST frontend (rest_frontend.h) and
// the metrics endpoint (metrics.h) are handlers.
#ifndef SPARSE_SERVER_HTTP_HTTP_HANDLER_H_
#define SPARSE_SERVER_HTTP_HTTP_HANDLER_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace sparse {

struct HttpRequest {
  std::string method;  // "GET", "POST", ... (a HEAD arrives as "GET")
  std::string path;    // decoded, valid UTF-8, without the query string
  absl::string_view body;
  // Triton's Inference-Header-Content-Length: the JSON is the body's first
  // bytes, binary tensors follow.
  std::optional<int64_t> header_length;
  std::chrono::steady_clock::time_point received;  // before the body was read
  // When the answer is no longer wanted (nothing sets one yet: an infinite
  // deadline), and whether the client has gone (it closed the connection,
  // or shut down its sending side, as nginx and Go's net/http read it).
  // Handlers hand both to the core (InferRequest::deadline, ::cancelled), as
  // gRPC's frontends do. `disconnected` may be empty (never) and is safe to
  // call from any thread until `done` has run.
  absl::Time deadline = absl::InfiniteFuture();
  std::function<bool()> disconnected;
};

struct HttpReply {
  int status = 200;
  std::string content_type = "application/json";
  std::optional<int64_t> header_length;  // set when binary outputs follow the JSON
  std::string body;
};

// Answers requests. Thread-safe: the transport calls Handle from its I/O
// threads.
class HttpHandler {
 public:
  virtual ~HttpHandler() = default;
  // Answers `request`; `done` runs once, on this thread or another. The
  // request (and the body it points to) lives until then.
  virtual void Handle(const HttpRequest& request, std::function<void(HttpReply)> done) = 0;
};

// The HTTP status for a gRPC-style code, as KServe's and grpc-gateway's
// mappings do: INVALID_ARGUMENT 400, NOT_FOUND 404, UNAVAILABLE 503, ...
int HttpStatusFor(absl::StatusCode code);

// {"error": message}, with the status for `status`'s code, or `http_status`.
HttpReply ErrorReply(const absl::Status& status);
HttpReply ErrorReply(int http_status, absl::string_view message);

}  // namespace sparse

#endif  // SPARSE_SERVER_HTTP_HTTP_HANDLER_H_
