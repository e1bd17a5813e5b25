// RestClient: an asynchronous HTTP/1.1 client for sparse-server's REST port
// (KServe v2), used by `sparse-cli bench --protocols=rest,rest_binary`. It
// keeps a pool of keep-alive connections, opening another whenever every
// open one is busy, so any number of requests can be in flight. Plaintext
// only. Thread-safe; the destructor waits for the calls in flight.
#ifndef SPARSE_CLIENT_REST_CLIENT_H_
#define SPARSE_CLIENT_REST_CLIENT_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace sparse {

struct RestReply {
  int status = 0;
  std::string body;
  std::optional<int64_t> header_length;  // Inference-Header-Content-Length
};

class RestClient {
 public:
  // `target` is host:port. Errors: a target that does not resolve.
  static absl::StatusOr<std::unique_ptr<RestClient>> Create(const std::string& target,
                                                            std::chrono::milliseconds timeout);
  ~RestClient();

  // POSTs `body` (which must live until `done`) to `path`; `done` runs on the
  // client's thread with the reply, or with UNAVAILABLE / DEADLINE_EXCEEDED
  // when the exchange failed. The HTTP status is the caller's to judge.
  void PostAsync(const std::string& path, const std::string* body,
                 std::optional<int64_t> header_length,
                 std::function<void(absl::Status, RestReply)> done);
  // The same, waiting for the reply.
  absl::StatusOr<RestReply> Post(const std::string& path, const std::string& body,
                                 std::optional<int64_t> header_length);

  struct Impl;

 private:
  explicit RestClient(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<Impl> impl_;
};

}  // namespace sparse

#endif  // SPARSE_CLIENT_REST_CLIENT_H_
