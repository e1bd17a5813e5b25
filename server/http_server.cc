#include "server/http_server.h"

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "civetweb.h"
#include "openssl/ssl.h"

namespace sparse {
namespace {

// 413 Payload Too Large, with what the limit is.
HttpReply TooLarge(const std::string& what, int64_t limit) {
  HttpReply reply = ErrorReply(absl::ResourceExhaustedError(absl::StrCat(
      "the request body is ", what, " bytes; this server takes at most ", limit,
      " (--max_message_bytes)")));
  reply.status = 413;
  return reply;
}

// Writes `reply` as the response to the request on `connection`.
void Send(mg_connection* connection, const HttpReply& reply, bool close) {
  mg_response_header_start(connection, reply.status);
  mg_response_header_add(connection, "Content-Type", reply.content_type.c_str(), -1);
  const std::string length = absl::StrCat(reply.body.size());
  mg_response_header_add(connection, "Content-Length", length.c_str(), -1);
  if (reply.header_length.has_value()) {
    const std::string header = absl::StrCat(*reply.header_length);
    mg_response_header_add(connection, "Inference-Header-Content-Length", header.c_str(), -1);
  }
  if (close) mg_response_header_add(connection, "Connection", "close", -1);
  mg_response_header_send(connection);
  if (!reply.body.empty()) mg_write(connection, reply.body.data(), reply.body.size());
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const Options& options,
                                                              RestFrontend* frontend) {
  const bool tls = !options.tls_cert_file.empty();
  if (tls && mg_check_feature(MG_FEATURES_TLS) == 0) {
    return absl::FailedPreconditionError("this civetweb was built without TLS");
  }
  mg_init_library(tls ? MG_FEATURES_TLS : 0);
  std::unique_ptr<HttpServer> server(new HttpServer(options, frontend));
  const std::string ports = absl::StrCat(options.address, ":", options.port, tls ? "s" : "");
  const std::string threads = absl::StrCat(options.threads);
  std::vector<const char*> settings = {"listening_ports", ports.c_str(),
                                       "num_threads", threads.c_str(),
                                       "enable_keep_alive", "yes",
                                       "request_timeout_ms", "60000"};
  if (tls) {
    // The certificate is set up by InitTls (from the key's own file, as the
    // gRPC port reads it); civetweb only needs to know TLS is on.
    settings.insert(settings.end(), {"ssl_protocol_version", "4"});  // TLS 1.2 and newer
  }
  settings.push_back(nullptr);
  mg_callbacks callbacks;
  std::memset(&callbacks, 0, sizeof(callbacks));
  callbacks.init_ssl = &HttpServer::InitTls;
  callbacks.log_message = [](const mg_connection*, const char* message) {
    std::fprintf(stderr, "sparse-server: http: %s\n", message);
    return 1;
  };
  mg_init_data init;
  std::memset(&init, 0, sizeof(init));
  init.callbacks = &callbacks;
  init.user_data = server.get();
  init.configuration_options = settings.data();
  mg_error_data error;
  char error_text[256] = {0};
  std::memset(&error, 0, sizeof(error));
  error.text = error_text;
  error.text_buffer_size = sizeof(error_text);
  server->context_ = mg_start2(&init, &error);
  if (server->context_ == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot serve HTTP on ", ports, ": ", error_text));
  }
  mg_set_request_handler(server->context_, "/", &HttpServer::Handle, server.get());
  mg_server_port bound[4];
  const int n = mg_get_server_ports(server->context_, 4, bound);
  if (n < 1) return absl::InternalError("civetweb reports no listening port");
  server->port_ = bound[0].port;
  return server;
}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Stop() {
  if (context_ == nullptr) return;
  mg_stop(context_);  // waits for the handlers in flight
  context_ = nullptr;
}

int HttpServer::InitTls(void* ssl_context, void* self) {
  const Options& o = static_cast<HttpServer*>(self)->options_;
  SSL_CTX* ctx = static_cast<SSL_CTX*>(ssl_context);
  if (SSL_CTX_use_certificate_chain_file(ctx, o.tls_cert_file.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, o.tls_key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1) {
    return -1;
  }
  if (!o.tls_client_ca_file.empty()) {
    if (SSL_CTX_load_verify_locations(ctx, o.tls_client_ca_file.c_str(), nullptr) != 1) return -1;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  }
  return 1;  // set up here
}

int HttpServer::Handle(mg_connection* connection, void* self) {
  return static_cast<HttpServer*>(self)->Serve(connection);
}

int HttpServer::Serve(mg_connection* connection) {
  const auto received = std::chrono::steady_clock::now();
  const mg_request_info* info = mg_get_request_info(connection);
  if (draining_) {
    Send(connection,
         ErrorReply(absl::UnavailableError(
             "sparse-server is shutting down; send the request to another replica")),
         /*close=*/true);
    return 503;
  }
  const long long declared = info->content_length;  // -1: not given (chunked)
  if (declared > options_.max_body_bytes) {
    Send(connection, TooLarge(absl::StrCat(declared), options_.max_body_bytes), /*close=*/true);
    return 413;
  }
  std::string body;
  if (declared > 0) body.reserve(static_cast<size_t>(declared));
  char chunk[16384];
  for (;;) {
    const int n = mg_read(connection, chunk, sizeof(chunk));
    if (n <= 0) break;
    if (static_cast<int64_t>(body.size()) + n > options_.max_body_bytes) {
      Send(connection, TooLarge(absl::StrCat("over ", options_.max_body_bytes), options_.max_body_bytes),
           /*close=*/true);
      return 413;
    }
    body.append(chunk, n);
  }
  HttpRequest request;
  request.method = info->request_method;
  request.path = info->local_uri != nullptr ? info->local_uri : "";
  request.body = body;
  request.received = received;
  if (const char* header = mg_get_header(connection, "Inference-Header-Content-Length")) {
    int64_t length = 0;
    if (!absl::SimpleAtoi(header, &length)) {
      Send(connection,
           ErrorReply(absl::InvalidArgumentError(
               "Inference-Header-Content-Length must be a byte count")),
           /*close=*/false);
      return 400;
    }
    request.header_length = length;
  }
  // The frontend may answer on a worker: this thread waits for it, then
  // writes (civetweb's connection belongs to this thread).
  HttpReply reply;
  absl::Notification answered;
  frontend_->Handle(request, [&reply, &answered](HttpReply r) {
    reply = std::move(r);
    answered.Notify();
  });
  answered.WaitForNotification();
  Send(connection, reply, /*close=*/false);
  return reply.status;
}

}  // namespace sparse
