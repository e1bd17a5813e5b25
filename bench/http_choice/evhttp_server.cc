// Minimal KServe-v2-like REST endpoint on libevent's evhttp.
// N threads (N = hardware_concurrency), each with its own event_base + evhttp,
// all accepting on ONE shared non-blocking listening socket via
// evhttp_accept_socket() (whichever loop wins accept() owns the connection).
// POST /v2/models/m/infer -> whole body (evhttp buffers it per Content-Length),
// sum its bytes, reply 200 JSON. Anything else -> 404 JSON.
// Usage: evhttp_server <port> [threads]
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <event2/util.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

static int infer_json(char* buf, size_t cap, uint64_t nbytes, uint64_t sum) {
  return std::snprintf(buf, cap,
      "{\"model_name\":\"m\",\"model_version\":\"1\",\"id\":\"bench\","
      "\"parameters\":{\"body_bytes\":%llu},\"outputs\":[{\"name\":\"output\","
      "\"shape\":[1,1],\"datatype\":\"UINT64\",\"parameters\":{\"sum\":\"bytes\"},"
      "\"data\":[%llu]}]}",
      (unsigned long long)nbytes, (unsigned long long)sum);
}

static void reply(evhttp_request* req, int code, const char* reason, const char* body,
                  size_t len) {
  evkeyvalq* h = evhttp_request_get_output_headers(req);
  evhttp_add_header(h, "Content-Type", "application/json");
  evbuffer* out = evbuffer_new();
  evbuffer_add(out, body, len);
  evhttp_send_reply(req, code, reason, out);  // adds Content-Length; keep-alive per HTTP/1.1
  evbuffer_free(out);
}

static void handler(evhttp_request* req, void*) {
  const char* path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
  if (evhttp_request_get_command(req) == EVHTTP_REQ_POST && path &&
      std::strcmp(path, "/v2/models/m/infer") == 0) {
    evbuffer* in = evhttp_request_get_input_buffer(req);
    uint64_t sum = 0, nbytes = evbuffer_get_length(in);
    // Walk the body's chunks in place (no copy).
    int nvec = evbuffer_peek(in, -1, nullptr, nullptr, 0);
    std::vector<evbuffer_iovec> v(nvec > 0 ? nvec : 1);
    nvec = evbuffer_peek(in, -1, nullptr, v.data(), nvec);
    for (int i = 0; i < nvec; ++i) {
      const unsigned char* p = (const unsigned char*)v[i].iov_base;
      for (size_t j = 0; j < v[i].iov_len; ++j) sum += p[j];
    }
    char buf[256];
    int n = infer_json(buf, sizeof buf, nbytes, sum);
    reply(req, 200, "OK", buf, (size_t)n);
  } else {
    static const char kErr[] = "{\"error\":\"not found\"}";
    reply(req, 404, "Not Found", kErr, sizeof kErr - 1);
  }
}

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s <port> [threads]\n", argv[0]);
    return 2;
  }
  int port = std::atoi(argv[1]);
  int n = argc > 2 ? std::atoi(argv[2]) : 0;  // 0 = hardware_concurrency
  if (n < 1) n = (int)std::thread::hardware_concurrency();
  if (n < 1) n = 1;
  std::signal(SIGPIPE, SIG_IGN);
  evthread_use_pthreads();

  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (sockaddr*)&sa, sizeof sa) != 0 || listen(fd, 1024) != 0) {
    std::perror("bind/listen");
    return 1;
  }
  evutil_make_socket_nonblocking(fd);

  std::vector<event_base*> bases(n);
  std::vector<evhttp*> https(n);
  for (int i = 0; i < n; ++i) {
    bases[i] = event_base_new();
    https[i] = evhttp_new(bases[i]);
    evhttp_set_gencb(https[i], handler, nullptr);
    evhttp_set_timeout(https[i], 30);
    // Each evhttp gets its own dup() of the shared listening socket because its
    // listener closes the fd on free.
    if (!evhttp_accept_socket_with_handle(https[i], i == 0 ? fd : dup(fd))) {
      std::fprintf(stderr, "evhttp_accept_socket failed\n");
      return 1;
    }
  }
  // Termination: SIGINT/SIGTERM on base 0 breaks every loop (bases are thread-safe).
  event* sig_int = evsignal_new(bases[0], SIGINT, [](evutil_socket_t, short, void* a) {
    auto* bs = (std::vector<event_base*>*)a;
    for (auto* b : *bs) event_base_loopbreak(b);
  }, &bases);
  event* sig_term = evsignal_new(bases[0], SIGTERM, [](evutil_socket_t, short, void* a) {
    auto* bs = (std::vector<event_base*>*)a;
    for (auto* b : *bs) event_base_loopbreak(b);
  }, &bases);
  event_add(sig_int, nullptr);
  event_add(sig_term, nullptr);

  std::fprintf(stderr, "evhttp (libevent %s) listening on 127.0.0.1:%d, event loops=%d\n",
               event_get_version(), port, n);
  std::vector<std::thread> pool;
  for (int i = 1; i < n; ++i) pool.emplace_back([b = bases[i]] { event_base_dispatch(b); });
  event_base_dispatch(bases[0]);
  for (auto& t : pool) t.join();
  event_free(sig_int);
  event_free(sig_term);
  for (int i = 0; i < n; ++i) evhttp_free(https[i]);
  for (int i = 0; i < n; ++i) event_base_free(bases[i]);
  return 0;
}
