// RestFrontend: the Open Inference Protocol over HTTP/REST, as KServe v2
// and Triton define it, carrying the same calls as the gRPC frontend
// (server/oip/oip_protocol.h), free of any HTTP library: the transport
// (server/http/http_server.h) hands it a parsed HttpRequest and sends back the
// HttpReply.
//
//   GET  /v2/health/live, /v2/health/ready        200, or 503 when not
//   GET  /v2                                      server metadata
//   GET  /v2/models/{m}[/versions/{v}]            model metadata
//   GET  /v2/models/{m}[/versions/{v}]/ready      200, or 503 when not
//   GET  /v2/models/{m}[/versions/{v}]/config     Triton's model config
//   GET  /v2/models[/{m}[/versions/{v}]]/stats    Triton's statistics
//   POST /v2/models/{m}[/versions/{v}]/infer      inference (m.dense: the twin)
//   POST /v2/repository/index                     the repository index
//   POST /v2/repository/models/{m}/load | unload  with --model_control
//
// Bodies are JSON. An infer request may carry its tensors after the JSON
// (Triton's binary tensor data extension: the Inference-Header-Content-Length
// header gives the JSON's length; an input's `binary_data_size` parameter
// its bytes), and asks for binary outputs with `binary_data_output` (request
// parameter) or `binary_data` (output parameter). Errors are
// {"error": "..."} with the HTTP status of the gRPC code (HttpStatusFor).
// docs/api.md has the reference.
//
// Thread-safe; `api` must outlive it.
#ifndef SPARSE_SERVER_HTTP_REST_FRONTEND_H_
#define SPARSE_SERVER_HTTP_REST_FRONTEND_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "server/http/http_handler.h"
#include "server/http/http_router.h"
#include "server/oip/oip_protocol.h"

namespace sparse {

class RestFrontend final : public HttpHandler {
 public:
  // `max_batch_rows` bounds the values a JSON infer body may hold (rows x
  // the model's inputs), so no body can make the parser hold more.
  RestFrontend(OipProtocol* api, int64_t max_batch_rows);

  // Answers `request`; `done` runs once, on this thread or a worker. The
  // request (and the body it points to) must live until then.
  void Handle(const HttpRequest& request, std::function<void(HttpReply)> done) override;

 private:
  using Reply = HttpRouter::Reply;
  // The routes of docs/api.md's REST table: server, repository, and one
  // model's (under `prefix`, with or without a version).
  void AddServerRoutes();
  void AddRepositoryRoutes();
  void AddModelRoutes(const std::string& prefix);
  void Infer(const HttpRequest& request, const std::string& model, const std::string& version,
             std::function<void(HttpReply)> done);

  OipProtocol* const api_;
  const int64_t max_batch_rows_;
  HttpRouter router_;
};

}  // namespace sparse

#endif  // SPARSE_SERVER_HTTP_REST_FRONTEND_H_
