#include "client/rest_client.h"

#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "boost/asio.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"

namespace sparse {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

// One keep-alive connection and the exchange it carries.
struct Connection {
  explicit Connection(asio::io_context& io) : stream(asio::make_strand(io)) {}
  beast::tcp_stream stream;
  bool connected = false;
  beast::flat_buffer buffer;
  http::request<http::string_body> request;
  http::response<http::string_body> response;
};

struct RestClient::Impl {
  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
  std::thread thread;
  tcp::resolver::results_type endpoints;
  std::string host;
  std::chrono::milliseconds timeout{30000};
  absl::Mutex mu;
  std::vector<std::unique_ptr<Connection>> idle ABSL_GUARDED_BY(mu);
  int64_t in_flight ABSL_GUARDED_BY(mu) = 0;

  bool Idle() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return in_flight == 0; }

  std::unique_ptr<Connection> Take() {
    absl::MutexLock lock(&mu);
    ++in_flight;
    if (idle.empty()) return std::make_unique<Connection>(io);
    std::unique_ptr<Connection> c = std::move(idle.back());
    idle.pop_back();
    return c;
  }
  // Back to the pool if it may carry another request; ends the call.
  void Give(std::unique_ptr<Connection> c, bool reusable) {
    absl::MutexLock lock(&mu);
    if (reusable) idle.push_back(std::move(c));
    --in_flight;
  }
};

absl::StatusOr<std::unique_ptr<RestClient>> RestClient::Create(const std::string& target,
                                                              std::chrono::milliseconds timeout) {
  auto impl = std::make_shared<Impl>();
  const size_t colon = target.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("expected host:port, got '", target, "'"));
  }
  impl->host = target.substr(0, colon);
  if (!impl->host.empty() && impl->host.front() == '[') impl->host = impl->host.substr(1, impl->host.size() - 2);
  beast::error_code ec;
  tcp::resolver resolver(impl->io);
  impl->endpoints = resolver.resolve(impl->host, target.substr(colon + 1), ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("cannot resolve ", target, ": ", ec.message()));
  }
  impl->timeout = timeout;
  impl->thread = std::thread([i = impl.get()] { i->io.run(); });
  return std::unique_ptr<RestClient>(new RestClient(std::move(impl)));
}

RestClient::~RestClient() {
  {
    absl::MutexLock lock(&impl_->mu);
    impl_->mu.Await(absl::Condition(impl_.get(), &Impl::Idle));
    impl_->idle.clear();
  }
  impl_->work.reset();
  impl_->io.stop();
  impl_->thread.join();
}

void RestClient::PostAsync(const std::string& path, const std::string* body,
                           std::optional<int64_t> header_length,
                           std::function<void(absl::Status, RestReply)> done) {
  std::shared_ptr<Impl> impl = impl_;
  // Shared by the handlers of one exchange.
  struct Exchange {
    std::unique_ptr<Connection> c;
    std::function<void(absl::Status, RestReply)> done;
  };
  auto x = std::make_shared<Exchange>();
  x->c = impl->Take();
  x->done = std::move(done);
  Connection& c = *x->c;
  c.request = {};
  c.request.method(http::verb::post);
  c.request.target(path);
  c.request.version(11);
  c.request.set(http::field::host, impl->host);
  c.request.set(http::field::content_type,
                header_length.has_value() ? "application/octet-stream" : "application/json");
  if (header_length.has_value()) {
    c.request.set("Inference-Header-Content-Length", std::to_string(*header_length));
  }
  c.request.keep_alive(true);
  c.request.body() = *body;
  c.request.prepare_payload();

  auto fail = [impl, x](beast::error_code ec, const char* step) {
    const absl::Status s = ec == beast::error::timeout
                               ? absl::DeadlineExceededError(absl::StrCat("HTTP ", step, " timed out"))
                               : absl::UnavailableError(absl::StrCat("HTTP ", step, ": ", ec.message()));
    auto done = std::move(x->done);
    impl->Give(std::move(x->c), false);
    done(s, RestReply());
  };
  auto read = [impl, x, fail] {
    x->c->response = {};
    http::async_read(x->c->stream, x->c->buffer, x->c->response,
                     [impl, x, fail](beast::error_code ec, size_t) {
                       if (ec) return fail(ec, "read");
                       RestReply reply;
                       reply.status = static_cast<int>(x->c->response.result_int());
                       auto h = x->c->response.find("Inference-Header-Content-Length");
                       int64_t length = 0;
                       if (h != x->c->response.end() &&
                           absl::SimpleAtoi(absl::string_view(h->value().data(), h->value().size()),
                                            &length)) {
                         reply.header_length = length;
                       }
                       reply.body = std::move(x->c->response.body());
                       const bool keep = x->c->response.keep_alive();
                       auto done = std::move(x->done);
                       impl->Give(std::move(x->c), keep);
                       done(absl::OkStatus(), std::move(reply));
                     });
  };
  auto write = [impl, x, fail, read] {
    x->c->stream.expires_after(impl->timeout);
    http::async_write(x->c->stream, x->c->request, [x, fail, read](beast::error_code ec, size_t) {
      if (ec) return fail(ec, "write");
      read();
    });
  };
  asio::post(c.stream.get_executor(), [impl, x, fail, write] {
    if (x->c->connected) return write();
    x->c->stream.expires_after(impl->timeout);
    x->c->stream.async_connect(impl->endpoints,
                               [x, fail, write](beast::error_code ec, const tcp::endpoint&) {
                                 if (ec) return fail(ec, "connect");
                                 x->c->connected = true;
                                 x->c->stream.socket().set_option(tcp::no_delay(true), ec);
                                 write();
                               });
  });
}

absl::StatusOr<RestReply> RestClient::Post(const std::string& path, const std::string& body,
                                           std::optional<int64_t> header_length) {
  absl::Notification finished;
  absl::Status status;
  RestReply reply;
  PostAsync(path, &body, header_length, [&](absl::Status s, RestReply r) {
    status = std::move(s);
    reply = std::move(r);
    finished.Notify();
  });
  finished.WaitForNotification();
  if (!status.ok()) return status;
  return reply;
}

}  // namespace sparse
