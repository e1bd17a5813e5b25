// Minimal KServe-v2-like REST endpoint on civetweb (worker thread pool).
// POST /v2/models/m/infer -> read whole body, sum its bytes, reply 200 JSON.
// Anything else -> 404 JSON.  Usage: civetweb_server <port> [num_threads]
#include <civetweb.h>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <unistd.h>

static volatile std::sig_atomic_t g_stop = 0;
static void on_signal(int) { g_stop = 1; }

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

// Status line, headers and body go out in ONE mg_write (as prometheus-cpp's
// civetweb handler does with mg_printf + mg_write). civetweb 1.15's
// mg_response_header_* API was tried first: strace showed ~7 send() calls per
// response (one per header line), so it is not used here.
static void send_json(mg_connection* conn, int status, const std::string& body) {
  char head[192];
  int n = std::snprintf(head, sizeof head,
      "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
      "Content-Length: %zu\r\nConnection: keep-alive\r\n\r\n",
      status, status == 200 ? "OK" : "Not Found", body.size());
  std::string out;
  out.reserve((size_t)n + body.size());
  out.append(head, (size_t)n).append(body);
  mg_write(conn, out.data(), out.size());
}

// Catch-all handler registered on "/" (civetweb matches by prefix).
static int handler(mg_connection* conn, void*) {
  const mg_request_info* ri = mg_get_request_info(conn);
  // Always drain the request body so the keep-alive connection stays in sync.
  char buf[16384];
  uint64_t sum = 0, nbytes = 0;
  int r;
  while ((r = mg_read(conn, buf, sizeof buf)) > 0) {
    nbytes += (uint64_t)r;
    for (int i = 0; i < r; ++i) sum += (unsigned char)buf[i];
  }
  if (std::strcmp(ri->request_method, "POST") == 0 &&
      std::strcmp(ri->local_uri, "/v2/models/m/infer") == 0) {
    send_json(conn, 200, infer_json(nbytes, sum));
  } else {
    send_json(conn, 404, "{\"error\":\"not found\"}");
  }
  return 200;  // non-zero: request handled
}

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s <port> [num_threads]\n", argv[0]);
    return 2;
  }
  std::string ports = std::string("127.0.0.1:") + argv[1];
  std::string threads = argc > 2 ? argv[2] : "32";
  const char* options[] = {
      "listening_ports", ports.c_str(),
      "num_threads", threads.c_str(),
      "enable_keep_alive", "yes",
      "tcp_nodelay", "1",
      "keep_alive_timeout_ms", "30000",
      "request_timeout_ms", "30000",
      nullptr};
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  mg_init_library(0);
  mg_callbacks cb;
  std::memset(&cb, 0, sizeof cb);
  mg_context* ctx = mg_start(&cb, nullptr, options);
  if (!ctx) {
    std::fprintf(stderr, "mg_start failed\n");
    return 1;
  }
  mg_set_request_handler(ctx, "/", handler, nullptr);
  std::fprintf(stderr, "civetweb %s listening on %s, num_threads=%s\n",
               mg_version(), ports.c_str(), threads.c_str());
  while (!g_stop) pause();
  mg_stop(ctx);
  mg_exit_library();
  return 0;
}
