// HttpServer: the HTTP transport of the REST frontend and the metrics port,
// on Boost.Beast (Asio, HTTP/1.1 keep-alive, TLS through Asio's OpenSSL
// stream). Chosen by measurement against civetweb and libevent's evhttp
// (bench/http_choice, docs/benchmarks.md "HTTP library"): the most requests
// per second and the least server CPU per request of the three here, and
// Debian 12's civetweb crashes on its first TLS connection.
//
// `threads` threads run every connection's I/O asynchronously: an idle or
// slow connection holds no thread. A request is read whole and checked,
// handed to the handler, and its reply written once the handler answers
// (from the I/O thread for a request answered inline, else from a worker).
// With a certificate the port speaks TLS 1.2+ only, and with a client CA it
// requires a client certificate, as the gRPC port.
//
// Every byte a client sends is bounded (docs/configuration.md, "HTTP
// limits"):
//   - the request line, header fields, chunk extensions and trailers share
//     one budget, `header_bytes` (431 beyond it), and the read buffer holds
//     at most that plus one read;
//   - a body over `max_body_bytes` gets 413 before it is buffered;
//   - time: `idle_timeout` for a request's first byte, `header_timeout`
//     from there to the header's end, `body_timeout` for the body and again
//     for writing the reply; past any of them the connection closes;
//   - at most `max_connections` connections: a new one beyond gets 503 and
//     "Connection: close" (or, when even that cannot be afforded, is
//     closed at once); the accept loop backs off when the process is out of
//     file descriptors.
// A request that cannot be parsed gets 400 and its connection closes;
// HTTP/1.1 needs exactly one Host; a transfer coding other than "chunked"
// gets 501; HEAD is answered as GET without the body. What a handler
// throws fails only its request (500) and is counted
// (sparse_internal_errors_total{where}).
// Drain(): new requests get 503 and "Connection: close". Stop() waits (up to
// its deadline) for the replies in flight, then closes everything.
#ifndef SPARSE_SERVER_HTTP_HTTP_SERVER_H_
#define SPARSE_SERVER_HTTP_HTTP_SERVER_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/internal_error.h"
#include "server/http/http_handler.h"

namespace sparse {

class HttpServer {
 public:
  struct Options {
    std::string address = "0.0.0.0";
    int port = 0;     // 0: a free port (port())
    int threads = 0;  // I/O threads; 0 = one per core
    int64_t max_body_bytes = int64_t{64} << 20;
    // Request line + header fields + chunk extensions + trailers.
    int64_t header_bytes = 16 << 10;
    std::chrono::milliseconds idle_timeout{60'000};
    std::chrono::milliseconds header_timeout{10'000};
    std::chrono::milliseconds body_timeout{60'000};
    int64_t max_connections = 1024;
    // The flag that sets the port, and where its internal errors count.
    std::string port_flag = "--http_port";
    ErrorSite site = ErrorSite::kHttp;
    // PEM text, as sparse-server read it for the gRPC port (one read of each
    // file for both ports); an empty certificate chain means plaintext.
    std::string tls_cert_chain, tls_private_key, tls_client_ca;
  };

  // Listens and serves `handler` (which must outlive the server).
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const Options& options,
                                                           HttpHandler* handler);
  ~HttpServer();  // Stop()

  int port() const { return port_; }
  // From now on every request is answered 503 (and its connection closed).
  void Drain() { draining_ = true; }
  // Stops accepting, waits until `deadline` for the requests in flight to
  // be answered, then closes every connection and joins the threads.
  // Idempotent.
  void Stop(std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::now() +
                                                              std::chrono::seconds(5));

  // Bookkeeping for the sessions (server/http/http_session.h).
  struct Impl;

 private:
  explicit HttpServer(const Options& options) : options_(options) {}

  const Options options_;
  // Shared with every connection: the I/O context lives as long as the
  // last of them (a request still in the core after Stop's deadline).
  std::shared_ptr<Impl> shared_;
  std::vector<std::thread> threads_;
  int port_ = 0;
  std::atomic<bool> draining_{false};
};

}  // namespace sparse

#endif  // SPARSE_SERVER_HTTP_HTTP_SERVER_H_
