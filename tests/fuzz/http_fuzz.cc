// Fuzzes the REST port from the first byte: the input is what one client
// sends on one connection (any number of pipelined requests, or junk), fed
// through the HTTP transport's own session code (server/http/http_session.h:
// reading, the header budget, chunked bodies with extensions and trailers,
// Host / Transfer-Encoding / Expect checks, path decoding, HEAD, 100
// Continue, the body limit) over an in-memory stream, then the REST
// frontend (KServe v2 JSON and Triton's binary tensors), OipProtocol and
// the serving core, against small real models (a DSM "dsm" and an LSH table
// "lsh", d = 4, each with its dense twin). Everything runs inline on this
// thread, so each input is seen through: the session must end once the
// client's bytes are used up, with every request answered, and what the
// server wrote must be HTTP responses; never a crash, a leak or a hang.
#include <cstdint>
#include <memory>
#include <string>

#include "boost/beast/_experimental/test/stream.hpp"
#include "model_store/model_repository.h"
#include "server/core/inference_core.h"
#include "server/http/http_session.h"
#include "server/oip/oip_protocol.h"
#include "server/http/rest_frontend.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

namespace beast = boost::beast;

struct World {
  std::unique_ptr<sparse::ModelRepository> repository;
  std::unique_ptr<sparse::InferenceCore> core;
  std::unique_ptr<sparse::OipProtocol> api;
  std::unique_ptr<sparse::RestFrontend> frontend;
  std::shared_ptr<sparse::HttpServer::Impl> server;
  std::atomic<bool> draining{false};
};

World* MakeWorld() {
  const std::string root = sparse::fuzz::ScratchDir("http_repo");
  sparse::fuzz::WriteSmallModels(root);
  auto* world = new World;
  sparse::ModelRepository::Options options;
  options.max_batch_rows = 64;
  options.log = [](const std::string&) {};
  world->repository = *sparse::ModelRepository::Open(root, options, nullptr);
  // Every request runs inline, on this thread.
  world->core = std::make_unique<sparse::InferenceCore>(
      world->repository.get(), sparse::InferenceCore::Options{.workers = 1,
                                                               .max_queue = 16,
                                                               .max_batch_rows = 64,
                                                               .inline_max_flops = int64_t{1} << 40,
                                                               .observe = nullptr});
  world->api = std::make_unique<sparse::OipProtocol>(world->core.get(),
                                                       nullptr);
  world->frontend = std::make_unique<sparse::RestFrontend>(world->api.get(), 64);
  sparse::HttpServer::Options http;
  http.max_body_bytes = 32 << 10;  // small, so the fuzzer reaches the limits
  http.header_bytes = 4 << 10;
  world->server = std::make_shared<sparse::HttpServer::Impl>(1, http);
  world->server->handler = world->frontend.get();
  world->server->draining = &world->draining;
  return world;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World* world = MakeWorld();
  boost::asio::io_context& io = *world->server->ios[0];
  beast::test::stream client(io), server_end(io);
  client.connect(server_end);
  server_end.append(beast::string_view(reinterpret_cast<const char*>(data), size));
  server_end.close_remote();  // the server reads the bytes, then end of stream
  std::weak_ptr<sparse::http_internal::SessionBase> alive;
  {
    auto session = std::make_shared<sparse::http_internal::Session<beast::test::stream>>(
        world->server, std::move(server_end));
    alive = session;
    session->Start();
  }
  // Every handler runs here; the session must end once the bytes are used
  // up (the server closes after the end of stream).
  io.restart();
  for (int idle = 0; !alive.expired();) {
    if (io.poll() == 0 && ++idle > 1000) __builtin_trap();  // stuck: a hang
  }
  if (world->server->in_flight.load() != 0 || world->server->connections.load() != 0) {
    __builtin_trap();  // a request unanswered, or a session that outlived its connection
  }
  const beast::string_view out = client.str();
  if (!out.empty() && out.compare(0, 7, "HTTP/1.") != 0) __builtin_trap();
  return 0;
}
