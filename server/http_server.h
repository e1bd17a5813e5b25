// HttpServer: the HTTP transport of the REST frontend, on civetweb (the
// library prometheus-cpp already brings; chosen by measurement against
// Boost.Beast and libevent's evhttp: docs/benchmarks.md, "HTTP library").
//
// Each request is read on one of civetweb's worker threads (keep-alive
// connections, one thread per open connection), handed to the
// RestFrontend, and its reply written back on that thread once the
// frontend answers. Bodies over `max_body_bytes` are refused with 413
// before they are read. With a certificate the port speaks TLS only (and
// with a client CA it requires a client certificate), as the gRPC port.
// Drain(): new requests get 503 and "Connection: close"; Stop() waits for
// the requests in flight and closes the port.
#ifndef SPARSE_SERVER_HTTP_SERVER_H_
#define SPARSE_SERVER_HTTP_SERVER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/rest_frontend.h"

struct mg_context;
struct mg_connection;

namespace sparse {

class HttpServer {
 public:
  struct Options {
    std::string address = "0.0.0.0";
    int port = 0;  // 0: a free port (port())
    int threads = 64;  // civetweb workers: the connections served at once
    int64_t max_body_bytes = int64_t{64} << 20;
    std::string tls_cert_file, tls_key_file, tls_client_ca_file;  // empty: plaintext
  };

  // Listens and serves `frontend` (which must outlive the server).
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const Options& options,
                                                           RestFrontend* frontend);
  ~HttpServer();  // Stop()

  int port() const { return port_; }
  // From now on every request is answered 503 (and its connection closed).
  void Drain() { draining_ = true; }
  // Waits for the requests in flight, then closes the port. Idempotent.
  void Stop();

 private:
  HttpServer(const Options& options, RestFrontend* frontend)
      : options_(options), frontend_(frontend) {}
  static int Handle(mg_connection* connection, void* self);
  static int InitTls(void* ssl_context, void* self);
  int Serve(mg_connection* connection);

  const Options options_;
  RestFrontend* const frontend_;
  mg_context* context_ = nullptr;
  int port_ = 0;
  std::atomic<bool> draining_{false};
};

}  // namespace sparse

#endif  // SPARSE_SERVER_HTTP_SERVER_H_
