// HttpServer: the HTTP transport of the REST frontend, on Boost.Beast
// (Asio, HTTP/1.1 keep-alive, TLS through Asio's OpenSSL stream). Chosen by
// measurement against civetweb and libevent's evhttp (bench/http_choice,
// docs/benchmarks.md "HTTP library"): the most requests per second and the
// least server CPU per request of the three here, and Debian 12's civetweb
// crashes on its first TLS connection.
//
// `threads` threads run every connection's I/O asynchronously; a request is
// read whole (a body over `max_body_bytes` gets 413 before it is buffered),
// handed to the RestFrontend, and its reply written once the frontend
// answers (from the I/O thread for a request the core runs inline, else
// from a worker). With a certificate the port speaks TLS 1.2+ only, and with
// a client CA it requires a client certificate, as the gRPC port.
// Drain(): new requests get 503 and "Connection: close". Stop() waits (up to
// its deadline) for the replies in flight, then closes everything.
#ifndef SPARSE_SERVER_HTTP_SERVER_H_
#define SPARSE_SERVER_HTTP_SERVER_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/rest_frontend.h"

namespace sparse {

class HttpServer {
 public:
  struct Options {
    std::string address = "0.0.0.0";
    int port = 0;     // 0: a free port (port())
    int threads = 0;  // I/O threads; 0 = one per core
    int64_t max_body_bytes = int64_t{64} << 20;
    // PEM text, as sparse-server read it for the gRPC port (one read of each
    // file for both ports); an empty certificate chain means plaintext.
    std::string tls_cert_chain, tls_private_key, tls_client_ca;
  };

  // Listens and serves `frontend` (which must outlive the server).
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const Options& options,
                                                           RestFrontend* frontend);
  ~HttpServer();  // Stop()

  int port() const { return port_; }
  // From now on every request is answered 503 (and its connection closed).
  void Drain() { draining_ = true; }
  // Stops accepting, waits until `deadline` for the requests in flight to
  // be answered, then closes every connection and joins the threads.
  // Idempotent.
  void Stop(std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::now() +
                                                              std::chrono::seconds(5));

  // Bookkeeping for the sessions (server/http_server.cc).
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

#endif  // SPARSE_SERVER_HTTP_SERVER_H_
