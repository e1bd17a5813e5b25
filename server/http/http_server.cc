#include "server/http/http_server.h"

#include <sys/socket.h>
#include <sys/types.h>

#include <cerrno>
#include <cstdio>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "server/http/http_session.h"

namespace sparse {

namespace http_internal {

absl::StatusOr<std::string> DecodePath(beast::string_view target) {
  const auto end = target.find_first_of("?#");
  if (end != beast::string_view::npos) target = target.substr(0, end);
  // Absolute form: "http://host:port/path" -> "/path".
  for (beast::string_view scheme : {"http://", "https://"}) {
    if (target.size() >= scheme.size() && beast::iequals(target.substr(0, scheme.size()), scheme)) {
      const auto slash = target.find('/', scheme.size());
      target = slash == beast::string_view::npos ? beast::string_view("/") : target.substr(slash);
      break;
    }
  }
  std::string out;
  out.reserve(target.size());
  for (size_t i = 0; i < target.size(); ++i) {
    if (target[i] == '%' && i + 2 < target.size() && absl::ascii_isxdigit(target[i + 1]) &&
        absl::ascii_isxdigit(target[i + 2])) {
      int value = 0;
      (void)absl::SimpleHexAtoi(absl::string_view(target.data() + i + 1, 2), &value);  // two hex digits
      out.push_back(static_cast<char>(value));
      i += 2;
    } else {
      out.push_back(target[i]);
    }
  }
  if (!IsValidUtf8(out)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the request path is not valid UTF-8 once percent-decoded: '", ClientText(out), "'"));
  }
  for (const char c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the request path holds a control character once percent-decoded: '", ClientText(out),
          "'"));
    }
  }
  return out;
}

bool PeerWatch::Gone() const {
  absl::MutexLock lock(&mu_);
  if (fd_ < 0) return true;  // this server closed the connection
  char byte;
  const ssize_t n = ::recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) return false;  // bytes wait: the client is there
  if (n == 0) return true;  // the end of its stream
  return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

void PeerWatch::Closed() {
  absl::MutexLock lock(&mu_);
  fd_ = -1;
}

void RunIo(asio::io_context& io, ErrorSite site) {
  while (!CatchInternal(site, [&io] { io.run(); }).ok()) {
  }
}

namespace {

// Connections over the cap that are being told so at once; beyond this
// many, a new one is closed without a word.
constexpr int64_t kMaxRefusing = 64;
// How long the accept loop waits after the process ran out of file
// descriptors (or memory) before it tries again.
constexpr auto kAcceptBackoff = std::chrono::milliseconds(100);

// A connection beyond --http_max_connections: "503, Connection: close",
// with a second to take it, then closed. Over TLS, where the answer would
// cost a handshake, and when too many such answers are pending already, the
// connection is closed at once.
void RefuseConnection(const std::shared_ptr<HttpServer::Impl>& server, tcp::socket socket) {
  if (server->tls.has_value() || server->refusing.load() >= kMaxRefusing) {
    beast::error_code ignored;
    socket.close(ignored);
    return;
  }
  server->refusing.fetch_add(1);
  static const std::string* const kAnswer = [] {
    const std::string body =
        ErrorReply(503, "the server has as many connections open as it takes; retry shortly")
            .body;
    return new std::string(absl::StrCat(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: "
        "close\r\nRetry-After: 1\r\nContent-Length: ",
        body.size(), "\r\n\r\n", body));
  }();
  auto stream = std::make_shared<beast::tcp_stream>(std::move(socket));
  stream->expires_after(std::chrono::seconds(1));
  asio::async_write(*stream, asio::buffer(*kAnswer),
                    [server, stream](beast::error_code, size_t) {
                      beast::error_code ignored;
                      stream->socket().shutdown(tcp::socket::shutdown_both, ignored);
                      stream->close();
                      server->refusing.fetch_sub(1);
                    });
}

void Accept(std::shared_ptr<HttpServer::Impl> server) {
  HttpServer::Impl* s = server.get();
  s->acceptor->async_accept(s->NextIo(), [server = std::move(server)](beast::error_code ec,
                                                                      tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !server->acceptor->is_open()) return;  // Stop()
    if (ec) {
      // Out of file descriptors (EMFILE, ENFILE) or memory: the pending
      // connection stays in the backlog, and trying again at once would spin.
      // Wait, then try again; serving resumes once connections close.
      static std::atomic<int64_t> logged{0};
      if (logged.fetch_add(1) % 100 == 0) {
        std::fprintf(stderr, "sparse-server: %s cannot accept a connection: %s; retrying every %lld ms\n",
                     server->options.port_flag.c_str(), ec.message().c_str(),
                     static_cast<long long>(kAcceptBackoff.count()));
      }
      // One accept is pending at a time, so one timer serves (Impl).
      server->accept_backoff->expires_after(kAcceptBackoff);
      server->accept_backoff->async_wait([server](beast::error_code wait_ec) {
        if (!wait_ec && !server->stopped.load()) Accept(server);
      });
      return;
    }
    // What setting up one connection throws (SSL_new, an allocation) loses
    // that connection only: the loop accepts the next one regardless.
    (void)CatchInternal(server->options.site, [&] {
      socket.set_option(tcp::no_delay(true), ec);
      if (server->connections.load(std::memory_order_relaxed) >= server->options.max_connections) {
        RefuseConnection(server, std::move(socket));
      } else if (server->tls.has_value()) {
        auto session = std::make_shared<Session<beast::ssl_stream<beast::tcp_stream>>>(
            server, beast::ssl_stream<beast::tcp_stream>(std::move(socket), *server->tls));
        if (server->Track(session)) session->Start();
      } else {
        auto session = std::make_shared<Session<beast::tcp_stream>>(
            server, beast::tcp_stream(std::move(socket)));
        if (server->Track(session)) session->Start();
      }
    });
    Accept(std::move(server));
  });
}

}  // namespace
}  // namespace http_internal

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const Options& options,
                                                              HttpHandler* handler) {
  namespace asio = http_internal::asio;
  namespace beast = http_internal::beast;
  using http_internal::tcp;
  const int threads = options.threads > 0
                          ? options.threads
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::unique_ptr<HttpServer> server(new HttpServer(options));
  auto impl = std::make_shared<Impl>(threads, options);
  impl->handler = handler;
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
          "cannot set up TLS on ", options.port_flag, " from --tls_cert, --tls_key",
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
  impl->accept_backoff.emplace(*impl->ios[0]);
  const tcp::endpoint endpoint(address, static_cast<uint16_t>(options.port));
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("cannot serve HTTP on ", options.address, ":",
                                               options.port, " (", options.port_flag,
                                               "): ", ec.message()));
  }
  server->port_ = acceptor.local_endpoint().port();
  http_internal::Accept(impl);
  for (int i = 0; i < threads; ++i) {
    server->threads_.emplace_back(
        [impl, i] { http_internal::RunIo(*impl->ios[i], impl->options.site); });
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
  std::vector<std::weak_ptr<http_internal::SessionBase>> sessions;
  {
    absl::MutexLock lock(&impl->mu);
    impl->stopped = true;
    sessions.swap(impl->sessions);
  }
  // Closing the port and every connection ends all pending I/O, so the
  // threads run out of work and return.
  http_internal::asio::post(*impl->ios[0], [impl, sessions = std::move(sessions)] {
    http_internal::beast::error_code ignored;
    impl->acceptor->close(ignored);
    impl->accept_backoff->cancel();
    for (const auto& s : sessions) {
      if (std::shared_ptr<http_internal::SessionBase> session = s.lock()) session->CloseSoon();
    }
  });
  for (auto& guard : impl->work) guard.reset();
  for (std::thread& t : threads_) t.join();
  threads_.clear();
}

}  // namespace sparse
