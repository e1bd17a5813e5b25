// Minimal KServe-v2-like REST endpoint on Boost.Beast (Boost 1.74).
// One io_context run by N threads (N = hardware_concurrency), async accept,
// one async session per connection on its own strand.
// POST /v2/models/m/infer -> read whole body, sum its bytes, reply 200 JSON.
// Anything else -> 404 JSON.  Usage: beast_server <port> [threads]
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

static std::string infer_json(uint64_t nbytes, uint64_t sum) {
  char buf[256];
  int n = std::snprintf(buf, sizeof buf,
      "{\"model_name\":\"m\",\"model_version\":\"1\",\"id\":\"bench\","
      "\"parameters\":{\"body_bytes\":%llu},\"outputs\":[{\"name\":\"output\","
      "\"shape\":[1,1],\"datatype\":\"UINT64\",\"parameters\":{\"sum\":\"bytes\"},"
      "\"data\":[%llu]}]}",
      (unsigned long long)nbytes, (unsigned long long)sum);
  return std::string(buf, n);
}

// Initial read-buffer capacity per connection (argv[3], default 16 KiB; 0 =
// Beast's default). Beast's parser consumes body bytes from the flat_buffer as
// it goes, so without a reserve the buffer stays ~512 B and a 4 KiB body is
// read 512 B per recvmsg (strace: ~9 recvmsg per request).
static std::size_t g_reserve = 16384;

class Session : public std::enable_shared_from_this<Session> {
 public:
  explicit Session(tcp::socket s) : stream_(std::move(s)) {
    if (g_reserve) buf_.reserve(g_reserve);
  }
  void start() { do_read(); }

 private:
  void do_read() {
    req_ = {};
    http::async_read(stream_, buf_, req_,
        beast::bind_front_handler(&Session::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, std::size_t) {
    if (ec) return close();  // includes end_of_stream (client closed)
    res_ = {};
    res_.version(req_.version());
    res_.keep_alive(req_.keep_alive());
    res_.set(http::field::content_type, "application/json");
    if (req_.method() == http::verb::post && req_.target() == "/v2/models/m/infer") {
      const std::string& body = req_.body();
      uint64_t sum = 0;
      for (unsigned char c : body) sum += c;
      res_.result(http::status::ok);
      res_.body() = infer_json(body.size(), sum);
    } else {
      res_.result(http::status::not_found);
      res_.body() = "{\"error\":\"not found\"}";
    }
    res_.prepare_payload();  // sets Content-Length
    http::async_write(stream_, res_,
        beast::bind_front_handler(&Session::on_write, shared_from_this()));
  }

  void on_write(beast::error_code ec, std::size_t) {
    if (ec) return close();
    if (!res_.keep_alive()) return close();
    do_read();
  }

  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buf_;
  http::request<http::string_body> req_;
  http::response<http::string_body> res_;
};

class Listener : public std::enable_shared_from_this<Listener> {
 public:
  Listener(asio::io_context& ioc, tcp::endpoint ep)
      : ioc_(ioc), acceptor_(asio::make_strand(ioc)) {
    acceptor_.open(ep.protocol());
    acceptor_.set_option(asio::socket_base::reuse_address(true));
    acceptor_.bind(ep);
    acceptor_.listen(asio::socket_base::max_listen_connections);
  }
  void start() { do_accept(); }

 private:
  void do_accept() {
    // Each accepted socket gets its own strand on the shared io_context.
    acceptor_.async_accept(asio::make_strand(ioc_),
        beast::bind_front_handler(&Listener::on_accept, shared_from_this()));
  }
  void on_accept(beast::error_code ec, tcp::socket s) {
    if (!ec) {
      s.set_option(tcp::no_delay(true));
      std::make_shared<Session>(std::move(s))->start();
    }
    do_accept();
  }
  asio::io_context& ioc_;
  tcp::acceptor acceptor_;
};

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s <port> [threads] [read_reserve_bytes]\n", argv[0]);
    return 2;
  }
  unsigned short port = (unsigned short)std::atoi(argv[1]);
  int n = argc > 2 ? std::atoi(argv[2]) : 0;  // 0 = hardware_concurrency
  if (n < 1) n = (int)std::thread::hardware_concurrency();
  if (n < 1) n = 1;
  if (argc > 3) g_reserve = (std::size_t)std::atol(argv[3]);
  asio::io_context ioc(n);
  std::make_shared<Listener>(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), port))
      ->start();
  asio::signal_set sigs(ioc, SIGINT, SIGTERM);
  sigs.async_wait([&](beast::error_code, int) { ioc.stop(); });
  std::fprintf(stderr, "beast (Boost %d) listening on 127.0.0.1:%u, io_context threads=%d, read reserve=%zu\n",
               BOOST_VERSION, port, n, g_reserve);
  std::vector<std::thread> pool;
  for (int i = 1; i < n; ++i) pool.emplace_back([&] { ioc.run(); });
  ioc.run();
  for (auto& t : pool) t.join();
  return 0;
}
