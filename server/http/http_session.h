// The inside of HttpServer (server/http/http_server.h): the state its
// connections share, and one connection's reading, checking and writing.
// A template over the stream, so the libFuzzer target (tests/fuzz/
// http_fuzz.cc) runs the very same code over an in-memory stream. Nothing
// else includes this header.
#ifndef SPARSE_SERVER_HTTP_HTTP_SESSION_H_
#define SPARSE_SERVER_HTTP_HTTP_SESSION_H_

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "boost/asio.hpp"
#include "boost/asio/ssl.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "boost/beast/ssl.hpp"
#include "common/client_text.h"
#include "common/internal_error.h"
#include "common/status_macros.h"
#include "server/http/http_server.h"

namespace sparse {

namespace http_internal {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

// What a connection offers the server: to be closed at Stop().
class SessionBase {
 public:
  virtual ~SessionBase() = default;
  virtual void CloseSoon() = 0;  // on the connection's thread
};

constexpr size_t kReadBuffer = 16384;  // one recv per small request

// Whether a connection's client has gone while its request is handled
// (HttpRequest::disconnected), read from any thread: a peek at the socket
// finds the end of its stream (the client closed it, or shut down its
// sending side, as nginx and Go's net/http read it) or an error. Bytes
// waiting (a pipelined request) are not an end. After Closed() the
// descriptor may belong to another connection: it is never read again.
class PeerWatch {
 public:
  explicit PeerWatch(int fd) : fd_(fd) {}
  bool Gone() const;
  void Closed();  // before the socket is closed

 private:
  mutable absl::Mutex mu_;
  int fd_ ABSL_GUARDED_BY(mu_);
};

// The request target's path, percent-decoded ("%2E" -> "."), without the
// query; the scheme and authority of an absolute-form target
// ("http://host:port/v2") are dropped, as RFC 9112 asks of servers. An
// error when the result is not valid UTF-8 or holds a control character:
// no model, tensor or endpoint has such a name.
absl::StatusOr<std::string> DecodePath(beast::string_view target);

// Runs `io` until it runs out of work; what a handler throws is counted
// under `site` and the loop goes on (asio allows run() again after a throw).
void RunIo(asio::io_context& io, ErrorSite site);

}  // namespace http_internal

struct HttpServer::Impl {
  // One I/O context per thread, each run by its thread alone: a connection
  // lives on one of them, so its handlers need no strand and no lock, and
  // an answer computed inline is written without waking another thread.
  Impl(int threads, const HttpServer::Options& o) : options(o) {
    for (int i = 0; i < threads; ++i) {
      ios.push_back(std::make_unique<http_internal::asio::io_context>(1));
      work.emplace_back(ios.back()->get_executor());
    }
  }
  http_internal::asio::io_context& NextIo() { return *ios[next++ % ios.size()]; }

  // Registers a new connection; false once Stop() has begun (then the
  // caller drops it).
  bool Track(std::weak_ptr<http_internal::SessionBase> session) {
    absl::MutexLock lock(&mu);
    if (stopped.load()) return false;
    sessions.erase(std::remove_if(sessions.begin(), sessions.end(),
                                  [](const auto& s) { return s.expired(); }),
                   sessions.end());
    sessions.push_back(std::move(session));
    return true;
  }

  // A request started (read whole, or refused) and its end (reply written
  // or connection gone). Atomics, not a lock: every request passes here
  // twice.
  void Began() { in_flight.fetch_add(1, std::memory_order_relaxed); }
  void Ended() { in_flight.fetch_sub(1, std::memory_order_release); }

  const HttpServer::Options options;
  std::vector<std::unique_ptr<http_internal::asio::io_context>> ios;
  // Keeps each thread running while it has no connection yet.
  std::vector<http_internal::asio::executor_work_guard<
      http_internal::asio::io_context::executor_type>>
      work;
  std::atomic<size_t> next{0};
  std::optional<http_internal::asio::ssl::context> tls;
  std::optional<http_internal::tcp::acceptor> acceptor;
  // The accept loop's back-off when the process is out of descriptors;
  // acceptor and timer live on ios[0], as the accept handler does.
  std::optional<http_internal::asio::steady_timer> accept_backoff;
  HttpHandler* handler = nullptr;
  const std::atomic<bool>* draining = nullptr;
  std::atomic<int64_t> in_flight{0};
  std::atomic<int64_t> connections{0};  // sessions alive
  std::atomic<int64_t> refusing{0};     // 503s being written to connections over the cap
  // Set by Stop() once the requests in flight are answered (or its deadline
  // passed): a reply that comes later is dropped, not handed to an I/O
  // context nobody runs any more.
  std::atomic<bool> stopped{false};
  absl::Mutex mu;  // the connections, for Stop()
  std::vector<std::weak_ptr<http_internal::SessionBase>> sessions ABSL_GUARDED_BY(mu);
};

namespace http_internal {

// One connection: waits for a request, reads and checks it, hands it to the
// handler, writes its reply, and waits for the next (keep-alive), all on
// the connection's thread.
template <typename Stream>
class Session final : public SessionBase, public std::enable_shared_from_this<Session<Stream>> {
 public:
  Session(std::shared_ptr<HttpServer::Impl> server, Stream stream)
      : server_(std::move(server)),
        stream_(std::move(stream)),
        buffer_(static_cast<size_t>(server_->options.header_bytes) + kReadBuffer) {
    server_->connections.fetch_add(1, std::memory_order_relaxed);
    // Extensions count against the header budget; plain chunks do not (a
    // large upload in small chunks is a body, bounded by the body limit).
    on_chunk_ = [this](uint64_t, beast::string_view extensions, beast::error_code& ec) {
      budget_used_ += static_cast<int64_t>(extensions.size());
      if (budget_used_ > server_->options.header_bytes) ec = http::error::header_limit;
    };
  }
  ~Session() override { server_->connections.fetch_sub(1, std::memory_order_relaxed); }

  void CloseSoon() override {
    asio::post(stream_.get_executor(), [self = this->shared_from_this()] { self->Close(); });
  }

  void Start() {
    if constexpr (kSocket) {
      watch_ = std::make_shared<PeerWatch>(
          beast::get_lowest_layer(stream_).socket().native_handle());
    }
    if constexpr (std::is_same_v<Stream, beast::ssl_stream<beast::tcp_stream>>) {
      Expire(server_->options.header_timeout);
      stream_.async_handshake(asio::ssl::stream_base::server,
                              [self = this->shared_from_this()](beast::error_code ec) {
                                if (ec) return self->Close();
                                self->WaitForRequest();
                              });
    } else {
      WaitForRequest();
    }
  }

 private:
  using Self = std::shared_ptr<Session>;
  static constexpr bool kSocket = std::is_same_v<Stream, beast::tcp_stream> ||
                                  std::is_same_v<Stream, beast::ssl_stream<beast::tcp_stream>>;

  void Expire(std::chrono::milliseconds after) {
    if constexpr (std::is_same_v<Stream, beast::tcp_stream> ||
                  std::is_same_v<Stream, beast::ssl_stream<beast::tcp_stream>>) {
      beast::get_lowest_layer(stream_).expires_after(after);
    }
  }

  // Idle until the next request's first byte (`idle_timeout`; a new
  // connection gets `header_timeout` to begin, as nginx's
  // client_header_timeout, so connections that never send cost little); a
  // request already in the buffer (pipelined) is read at once.
  void WaitForRequest() {
    request_ = {};
    head_ = false;
    if (buffer_.size() > 0) return ReadHeader();
    Expire(served_ > 0 ? server_->options.idle_timeout
                       : std::min(server_->options.idle_timeout, server_->options.header_timeout));
    stream_.async_read_some(buffer_.prepare(kReadBuffer),
                            [self = this->shared_from_this()](beast::error_code ec, size_t n) {
                              // Gone, or idle too long: closed without a word.
                              if (ec) return self->Close();
                              self->buffer_.commit(n);
                              self->ReadHeader();
                            });
  }

  // The header, within `header_timeout` and the header budget. A client
  // that sent "Expect: 100-continue" (curl does for large bodies) waits for
  // "100 Continue" before it sends the body.
  void ReadHeader() {
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(server_->options.header_bytes));
    parser_->body_limit(static_cast<uint64_t>(server_->options.max_body_bytes));
    parser_->on_chunk_header(on_chunk_);
    budget_used_ = 0;
    Expire(server_->options.header_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = this->shared_from_this()](beast::error_code ec, size_t n) {
                              if (ec) return self->OnReadError(ec);
                              self->budget_used_ = static_cast<int64_t>(n);
                              self->OnHeader();
                            });
  }

  void OnHeader() {
    const auto& header = parser_->get();
    header_field_bytes_ = FieldBytes(header);
    if (absl::Status bad = CheckHeader(header); !bad.ok()) {
      return Refuse(bad.code() == absl::StatusCode::kUnimplemented ? 501
                    : bad.code() == absl::StatusCode::kFailedPrecondition ? 417
                                                                           : 400,
                    bad.message());
    }
    // A Content-Length over the body limit never gets here: the parser
    // fails the header with body_limit (413) before a "100 Continue".
    Expire(server_->options.body_timeout);
    if (header.count(http::field::expect) > 0) {  // CheckHeader: "100-continue"
      continue_ = std::make_unique<http::response<http::empty_body>>(http::status::continue_,
                                                                      header.version());
      return http::async_write(stream_, *continue_,
                               [self = this->shared_from_this()](beast::error_code ec, size_t) {
                                 if (ec) return self->Close();
                                 self->ReadBody();
                               });
    }
    ReadBody();
  }

  // What RFC 9112 asks of a request's header before its body is read.
  static absl::Status CheckHeader(const http::request_parser<http::string_body>::value_type& h) {
    const size_t hosts = h.count(http::field::host);
    if (hosts > 1 || (hosts == 0 && h.version() >= 11)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "an HTTP/1.1 request needs exactly one Host header field; this one has ", hosts));
    }
    if (h.count(http::field::transfer_encoding) > 0) {
      if (h.version() < 11) {
        return absl::InvalidArgumentError("Transfer-Encoding is not allowed in HTTP/1.0");
      }
      std::string codings;
      const auto range = h.equal_range(http::field::transfer_encoding);
      for (auto field = range.first; field != range.second; ++field) {
        absl::StrAppend(&codings, codings.empty() ? "" : ",", View(field->value()));
      }
      codings.erase(std::remove_if(codings.begin(), codings.end(),
                                   [](char c) { return c == ' ' || c == '\t'; }),
                    codings.end());
      if (!absl::EqualsIgnoreCase(codings, "chunked")) {
        return absl::UnimplementedError(absl::StrCat(
            "Transfer-Encoding '", ClientText(codings),
            "' is not supported: send the body as is (Content-Length) or chunked"));
      }
      if (h.count(http::field::content_length) > 0) {
        return absl::InvalidArgumentError(
            "a request may not carry both Transfer-Encoding and Content-Length");
      }
    }
    auto expect = h.find(http::field::expect);
    if (expect != h.end() && !beast::iequals(expect->value(), "100-continue")) {
      return absl::FailedPreconditionError(absl::StrCat(
          "Expect: '", ClientText(View(expect->value())), "' is not an expectation this server meets "
          "(only 100-continue)"));
    }
    return absl::OkStatus();
  }

  static absl::string_view View(beast::string_view s) { return {s.data(), s.size()}; }

  static int64_t FieldBytes(const http::request_parser<http::string_body>::value_type& h) {
    int64_t bytes = 0;
    for (const auto& field : h) bytes += field.name_string().size() + field.value().size() + 4;
    return bytes;
  }

  void ReadBody() {
    http::async_read(stream_, buffer_, *parser_,
                     [self = this->shared_from_this()](beast::error_code ec, size_t) {
                       if (ec) return self->OnReadError(ec);
                       self->OnRequest();
                     });
  }

  // A read that failed: the client gone or too slow (closed), too large
  // (413, 431) or not HTTP (400).
  void OnReadError(beast::error_code ec) {
    const HttpServer::Options& o = server_->options;
    if (ec == http::error::body_limit) {
      return Refuse(413, absl::StrCat("the request body is over ", o.max_body_bytes,
                                      " bytes, the most this server takes (--max_message_bytes)"));
    }
    if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
      return Refuse(431, absl::StrCat("the request line, header fields, chunk extensions and "
                                      "trailers hold more than ",
                                      o.header_bytes, " bytes, the most this server takes "
                                      "(--http_header_bytes)"));
    }
    // beast::error::timeout: the stream has closed the socket already, as
    // nginx does for a header or body that does not arrive in time.
    if (ec.category() == http::make_error_code(http::error::bad_method).category() &&
        ec != http::error::end_of_stream && ec != http::error::partial_message) {
      return Refuse(400, absl::StrCat("the request is not valid HTTP/1.1: ", ec.message()));
    }
    Close();  // the client left, or the connection broke
  }

  // A request read whole: checked, then handed to the handler. What the
  // handler throws fails this request alone (500).
  void OnRequest() {
    if (budget_used_ + FieldBytes(parser_->get()) - header_field_bytes_ >
        server_->options.header_bytes) {
      return Refuse(431, absl::StrCat("the request line, header fields, chunk extensions and "
                                      "trailers hold more than ",
                                      server_->options.header_bytes,
                                      " bytes, the most this server takes (--http_header_bytes)"));
    }
    request_ = parser_->release();
    parser_.reset();
    ++served_;
    server_->Began();
    if (server_->draining->load()) {
      close_after_write_ = true;
      return Write(ErrorReply(absl::UnavailableError(
          "sparse-server is shutting down; send the request to another replica")));
    }
    head_ = request_.method() == http::verb::head;
    auto answered = std::make_shared<std::atomic<bool>>(false);
    auto done = [self = this->shared_from_this(), answered](HttpReply reply) {
      if (answered->exchange(true)) return;  // a handler that threw after answering
      if (self->server_->stopped.load(std::memory_order_acquire)) return;
      asio::dispatch(self->stream_.get_executor(), [self, reply = std::move(reply)]() mutable {
        // A reply that cannot even be written ends the connection.
        if (!CatchInternal(self->server_->options.site, [&] { self->Write(std::move(reply)); })
                 .ok()) {
          self->server_->Ended();
          self->Close();
        }
      });
    };
    const absl::Status handled = CatchInternal(server_->options.site, [&]() -> absl::Status {
      FaultPoint(server_->options.site);
      current_ = HttpRequest();
      current_.received = std::chrono::steady_clock::now();
      current_.method = head_ ? "GET" : std::string(request_.method_string());
      ASSIGN_OR_RETURN(current_.path, DecodePath(request_.target()));
      current_.body = request_.body();
      // A plain pointer (no allocation per request): the session, and so its
      // watch, lives until `done` has run, after which it is not called.
      if (watch_ != nullptr) current_.disconnected = [watch = watch_.get()] { return watch->Gone(); };
      auto header = request_.find("Inference-Header-Content-Length");
      if (header != request_.end()) {
        int64_t length = 0;
        if (!absl::SimpleAtoi(absl::string_view(header->value().data(), header->value().size()),
                              &length)) {
          return absl::InvalidArgumentError(
              "Inference-Header-Content-Length must be a byte count");
        }
        current_.header_length = length;
      }
      // The handler may answer on a worker: the reply goes back to this
      // connection's thread (at once when it answered here, inline).
      server_->handler->Handle(current_, done);
      return absl::OkStatus();
    });
    if (!handled.ok()) done(ErrorReply(handled));
  }

  // Answers `status` and closes: for a request that cannot be served as
  // sent, or a connection that broke the limits.
  void Refuse(int status, absl::string_view message) {
    close_after_write_ = true;
    buffer_.clear();
    server_->Began();
    Write(ErrorReply(status, message));
  }

  void Write(HttpReply reply) {
    response_ = {};
    response_.version(request_.version() != 0 ? request_.version() : 11);
    response_.result(static_cast<unsigned>(reply.status));
    response_.keep_alive(!close_after_write_ && request_.keep_alive());
    response_.set(http::field::content_type, reply.content_type);
    if (reply.header_length.has_value()) {
      response_.set("Inference-Header-Content-Length", std::to_string(*reply.header_length));
    }
    response_.body() = std::move(reply.body);
    response_.prepare_payload();
    Expire(server_->options.body_timeout);
    auto written = [self = this->shared_from_this()](beast::error_code ec, size_t) {
      self->serializer_.reset();
      self->server_->Ended();
      if (ec) return self->Close();
      if (!self->response_.keep_alive()) return self->LingeringClose();
      self->WaitForRequest();
    };
    if (head_) {  // the header GET would send, Content-Length included: no body
      serializer_.emplace(response_);
      return http::async_write_header(stream_, *serializer_, std::move(written));
    }
    http::async_write(stream_, response_, std::move(written));
  }

  // After a reply that ends the connection: no more writes, and what the
  // client still sends (the rest of a refused body) is read and dropped for
  // up to a second or 1 MiB, so the kernel does not answer it with a reset
  // that could destroy the reply before the client reads it (as nginx's
  // lingering close).
  void LingeringClose() {
    if constexpr (std::is_same_v<Stream, beast::tcp_stream>) {
      beast::error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
      Expire(std::chrono::seconds(1));
      buffer_.clear();
      Drain(0);
    } else {
      Close();
    }
  }

  void Drain(size_t drained) {
    stream_.async_read_some(
        buffer_.prepare(kReadBuffer),
        [self = this->shared_from_this(), drained](beast::error_code ec, size_t n) {
          if (ec || drained + n > (size_t{1} << 20)) return self->Close();
          self->Drain(drained + n);  // nothing is committed: the bytes are dropped
        });
  }

  void Close() {
    if (watch_ != nullptr) watch_->Closed();
    beast::error_code ignored;
    if constexpr (std::is_same_v<Stream, beast::tcp_stream> ||
                  std::is_same_v<Stream, beast::ssl_stream<beast::tcp_stream>>) {
      beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_both, ignored);
    }
    beast::get_lowest_layer(stream_).close();
  }

  // Declared first: the server's I/O context outlives the stream.
  const std::shared_ptr<HttpServer::Impl> server_;
  Stream stream_;
  beast::flat_buffer buffer_;  // at most the header budget and one read
  std::optional<http::request_parser<http::string_body>> parser_;
  std::function<void(uint64_t, beast::string_view, beast::error_code&)> on_chunk_;
  int64_t budget_used_ = 0;         // header section + chunk extensions so far
  int64_t header_field_bytes_ = 0;  // the header's fields, to tell trailers from them
  http::request<http::string_body> request_;
  bool head_ = false;
  HttpRequest current_;  // points into request_'s body
  http::response<http::string_body> response_;
  std::optional<http::response_serializer<http::string_body>> serializer_;  // HEAD
  bool close_after_write_ = false;
  int64_t served_ = 0;  // requests read whole on this connection
  std::unique_ptr<http::response<http::empty_body>> continue_;  // "100 Continue"
  std::shared_ptr<PeerWatch> watch_;  // a socket's: shared with its requests' handlers
};

}  // namespace http_internal
}  // namespace sparse

#endif  // SPARSE_SERVER_HTTP_HTTP_SESSION_H_
