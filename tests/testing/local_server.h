// An in-process sparse-server on a free loopback port, and a channel to it,
// for tests that talk to the server through gRPC. Header-only: a test that
// includes it links sparse_server_lib itself.
#ifndef SPARSE_TESTS_TESTING_LOCAL_SERVER_H_
#define SPARSE_TESTS_TESTING_LOCAL_SERVER_H_

#include <memory>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "server/server.h"

namespace sparse::testing {

struct LocalServer {
  std::unique_ptr<SparseServer> server;
  std::shared_ptr<grpc::Channel> channel;
};

// Starts a server with `options` on 127.0.0.1 and a port the system picks
// (options.address and options.port are overridden).
inline absl::StatusOr<LocalServer> StartLocalServer(ServerOptions options) {
  options.address = "127.0.0.1";
  options.port = 0;
  absl::StatusOr<std::unique_ptr<SparseServer>> server = SparseServer::Start(options, nullptr);
  if (!server.ok()) return server.status();
  LocalServer local;
  local.channel = grpc::CreateChannel("127.0.0.1:" + std::to_string((*server)->port()),
                                      grpc::InsecureChannelCredentials());
  local.server = *std::move(server);
  return local;
}

}  // namespace sparse::testing

#endif  // SPARSE_TESTS_TESTING_LOCAL_SERVER_H_
