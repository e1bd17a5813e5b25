#include "server/http_server.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "boost/asio.hpp"
#include "boost/asio/ssl.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "boost/beast/ssl.hpp"

namespace sparse {

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

struct HttpServer::Impl {
  // One I/O context per thread, each run by its thread alone: a connection
  // lives on one of them, so its handlers need no strand and no lock, and
  // an answer computed inline is written without waking another thread.
  explicit Impl(int threads) {
    for (int i = 0; i < threads; ++i) {
      ios.push_back(std::make_unique<asio::io_context>(1));
      work.emplace_back(ios.back()->get_executor());
    }
  }
  asio::io_context& NextIo() { return *ios[next++ % ios.size()]; }

  // Registers a new connection; false once Stop() has begun (then the
  // caller drops it).
  bool Track(std::weak_ptr<SessionBase> session) {
    absl::MutexLock lock(&mu);
    if (stopped.load()) return false;
    sessions.erase(std::remove_if(sessions.begin(), sessions.end(),
                                  [](const std::weak_ptr<SessionBase>& s) { return s.expired(); }),
                   sessions.end());
    sessions.push_back(std::move(session));
    return true;
  }

  // A request started (read whole, handed to the frontend) and its end
  // (reply written or connection gone). Atomics, not a lock: every request
  // passes here twice.
  void Began() { in_flight.fetch_add(1, std::memory_order_relaxed); }
  void Ended() { in_flight.fetch_sub(1, std::memory_order_release); }

  std::vector<std::unique_ptr<asio::io_context>> ios;
  // Keeps each thread running while it has no connection yet.
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::atomic<size_t> next{0};
  std::optional<asio::ssl::context> tls;
  std::optional<tcp::acceptor> acceptor;
  RestFrontend* frontend = nullptr;
  int64_t max_body_bytes = 0;
  const std::atomic<bool>* draining = nullptr;
  std::atomic<int64_t> in_flight{0};
  // Set by Stop() once the requests in flight are answered (or its deadline
  // passed): a reply that comes later is dropped, not handed to an I/O
  // context nobody runs any more.
  std::atomic<bool> stopped{false};
  absl::Mutex mu;  // the connections, for Stop()
  std::vector<std::weak_ptr<SessionBase>> sessions ABSL_GUARDED_BY(mu);
};

namespace {

constexpr auto kIdleTimeout = std::chrono::seconds(120);
constexpr size_t kReadBuffer = 16384;  // one recv per small request

// "%2E" -> "." (paths only: model names are plain directory names).
std::string DecodePath(beast::string_view target) {
  const auto query = target.find('?');
  if (query != beast::string_view::npos) target = target.substr(0, query);
  std::string out;
  out.reserve(target.size());
  for (size_t i = 0; i < target.size(); ++i) {
    int value = 0;
    if (target[i] == '%' && i + 2 < target.size() &&
        absl::SimpleHexAtoi(absl::string_view(target.data() + i + 1, 2), &value)) {
      out.push_back(static_cast<char>(value));
      i += 2;
    } else {
      out.push_back(target[i]);
    }
  }
  return out;
}

HttpReply StatusReply(int status, const absl::Status& error) {
  HttpReply reply = ErrorReply(error);
  reply.status = status;
  return reply;
}

// One connection: reads a request, hands it to the frontend, writes its
// reply, and reads the next (keep-alive), all on the connection's thread.
template <typename Stream>
class Session final : public SessionBase, public std::enable_shared_from_this<Session<Stream>> {
 public:
  void CloseSoon() override {
    asio::post(stream_.get_executor(), [self = this->shared_from_this()] { self->Close(); });
  }

  Session(std::shared_ptr<HttpServer::Impl> server, Stream stream)
      : server_(std::move(server)), stream_(std::move(stream)) {
    buffer_.reserve(kReadBuffer);
  }

  void Start() {
    if constexpr (std::is_same_v<Stream, beast::ssl_stream<beast::tcp_stream>>) {
      beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(30));
      stream_.async_handshake(asio::ssl::stream_base::server,
                              [self = this->shared_from_this()](beast::error_code ec) {
                                if (ec) return self->Close();
                                self->Read();
                              });
    } else {
      Read();
    }
  }

 private:
  // The header first: a client that sent "Expect: 100-continue" (curl does
  // for large bodies) waits for "100 Continue" before it sends the body.
  void Read() {
    parser_.emplace();
    parser_->body_limit(static_cast<uint64_t>(server_->max_body_bytes));
    beast::get_lowest_layer(stream_).expires_after(kIdleTimeout);
    http::async_read_header(
        stream_, buffer_, *parser_, [self = this->shared_from_this()](beast::error_code ec, size_t) {
          if (ec) return self->OnRead(ec);
          const auto& header = self->parser_->get();
          auto expect = header.find(http::field::expect);
          const bool fits = !self->parser_->content_length().has_value() ||
                            *self->parser_->content_length() <=
                                static_cast<uint64_t>(self->server_->max_body_bytes);
          if (expect != header.end() && beast::iequals(expect->value(), "100-continue") && fits) {
            self->continue_ = std::make_unique<http::response<http::empty_body>>(
                http::status::continue_, header.version());
            return http::async_write(stream_of(self), *self->continue_,
                                     [self](beast::error_code ec, size_t) {
                                       if (ec) return self->OnRead(ec);
                                       self->ReadBody();
                                     });
          }
          self->ReadBody();
        });
  }

  static Stream& stream_of(const std::shared_ptr<Session>& self) { return self->stream_; }

  void ReadBody() {
    http::async_read(stream_, buffer_, *parser_,
                     [self = this->shared_from_this()](beast::error_code ec, size_t) {
                       self->OnRead(ec);
                     });
  }

  void OnRead(beast::error_code ec) {
    if (ec == http::error::body_limit) {
      close_after_write_ = true;
      server_->Began();
      return Write(StatusReply(
          413, absl::ResourceExhaustedError(absl::StrCat(
                   "the request body is over ", server_->max_body_bytes,
                   " bytes, the most this server takes (--max_message_bytes)"))));
    }
    if (ec) return Close();  // the client left, timed out or sent junk
    request_ = parser_->release();
    server_->Began();
    if (server_->draining->load()) {
      close_after_write_ = true;
      return Write(ErrorReply(absl::UnavailableError(
          "sparse-server is shutting down; send the request to another replica")));
    }
    current_ = HttpRequest();
    current_.received = std::chrono::steady_clock::now();
    current_.method = std::string(request_.method_string());
    current_.path = DecodePath(request_.target());
    current_.body = request_.body();
    auto header = request_.find("Inference-Header-Content-Length");
    if (header != request_.end()) {
      int64_t length = 0;
      if (!absl::SimpleAtoi(absl::string_view(header->value().data(), header->value().size()),
                            &length)) {
        return Write(ErrorReply(
            absl::InvalidArgumentError("Inference-Header-Content-Length must be a byte count")));
      }
      current_.header_length = length;
    }
    // The frontend may answer on a worker: the reply goes back to this
    // connection's thread (at once when it answered here, inline).
    server_->frontend->Handle(current_, [self = this->shared_from_this()](HttpReply reply) {
      if (self->server_->stopped.load(std::memory_order_acquire)) return;
      asio::dispatch(self->stream_.get_executor(), [self, reply = std::move(reply)]() mutable {
        self->Write(std::move(reply));
      });
    });
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
    http::async_write(stream_, response_,
                      [self = this->shared_from_this()](beast::error_code ec, size_t) {
                        self->server_->Ended();
                        if (ec || !self->response_.keep_alive()) return self->Close();
                        self->Read();
                      });
  }

  void Close() {
    beast::error_code ignored;
    beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_both, ignored);
    beast::get_lowest_layer(stream_).close();
  }

  // Declared first: the server's I/O context outlives the stream.
  const std::shared_ptr<HttpServer::Impl> server_;
  Stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::request<http::string_body> request_;
  HttpRequest current_;  // points into request_'s body
  http::response<http::string_body> response_;
  bool close_after_write_ = false;
  std::unique_ptr<http::response<http::empty_body>> continue_;  // "100 Continue"
};

void Accept(std::shared_ptr<HttpServer::Impl> server) {
  HttpServer::Impl* s = server.get();
  s->acceptor->async_accept(
      s->NextIo(), [server = std::move(server)](beast::error_code ec, tcp::socket socket) {
        if (ec == asio::error::operation_aborted) return;  // Stop()
        if (!ec) {
          socket.set_option(tcp::no_delay(true), ec);
          if (server->tls.has_value()) {
            auto session = std::make_shared<Session<beast::ssl_stream<beast::tcp_stream>>>(
                server, beast::ssl_stream<beast::tcp_stream>(std::move(socket), *server->tls));
            if (server->Track(session)) session->Start();
          } else {
            auto session = std::make_shared<Session<beast::tcp_stream>>(
                server, beast::tcp_stream(std::move(socket)));
            if (server->Track(session)) session->Start();
          }
        }
        Accept(std::move(server));
      });
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const Options& options,
                                                              RestFrontend* frontend) {
  const int threads = options.threads > 0
                          ? options.threads
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::unique_ptr<HttpServer> server(new HttpServer(options));
  auto impl = std::make_shared<Impl>(threads);
  impl->frontend = frontend;
  impl->max_body_bytes = options.max_body_bytes;
  impl->draining = &server->draining_;
  if (!options.tls_cert_chain.empty()) {
    impl->tls.emplace(asio::ssl::context::tls_server);
    asio::ssl::context& tls = *impl->tls;
    beast::error_code ec;
    tls.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                        asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                        asio::ssl::context::no_tlsv1_1,
                    ec);
    if (!ec) tls.use_certificate_chain(asio::buffer(options.tls_cert_chain), ec);
    if (!ec) tls.use_private_key(asio::buffer(options.tls_private_key), asio::ssl::context::pem, ec);
    if (!ec && !options.tls_client_ca.empty()) {
      tls.add_certificate_authority(asio::buffer(options.tls_client_ca), ec);
      if (!ec) {
        tls.set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert, ec);
      }
    }
    if (ec) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot set up TLS on the HTTP port from --tls_cert, --tls_key",
          options.tls_client_ca.empty() ? "" : " and --tls_client_ca", ": ", ec.message()));
    }
  }
  beast::error_code ec;
  const asio::ip::address address = asio::ip::make_address(options.address, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("--address=", options.address, " is not an IP address: ", ec.message()));
  }
  tcp::acceptor& acceptor = impl->acceptor.emplace(*impl->ios[0]);
  const tcp::endpoint endpoint(address, static_cast<uint16_t>(options.port));
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("cannot serve HTTP on ", options.address, ":",
                                               options.port, ": ", ec.message()));
  }
  server->port_ = acceptor.local_endpoint().port();
  Accept(impl);
  for (int i = 0; i < threads; ++i) {
    server->threads_.emplace_back([impl, i] { impl->ios[i]->run(); });
  }
  server->shared_ = std::move(impl);
  return server;
}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Stop(std::chrono::steady_clock::time_point deadline) {
  if (shared_ == nullptr) return;
  std::shared_ptr<Impl> impl = std::move(shared_);
  // The core has drained by now (SparseServer::Shutdown): what is left are
  // replies being written. Polled: this runs once, at shutdown.
  while (impl->in_flight.load(std::memory_order_acquire) > 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::vector<std::weak_ptr<SessionBase>> sessions;
  {
    absl::MutexLock lock(&impl->mu);
    impl->stopped = true;
    sessions.swap(impl->sessions);
  }
  // Closing the port and every connection ends all pending I/O, so the
  // threads run out of work and return.
  asio::post(*impl->ios[0], [impl, sessions = std::move(sessions)] {
    beast::error_code ignored;
    impl->acceptor->close(ignored);
    for (const std::weak_ptr<SessionBase>& s : sessions) {
      if (std::shared_ptr<SessionBase> session = s.lock()) session->CloseSoon();
    }
  });
  for (auto& guard : impl->work) guard.reset();
  for (std::thread& t : threads_) t.join();
  threads_.clear();
}

}  // namespace sparse
