// A bare gRPC echo server on the same gRPC and the same proto as
// sparse-server: SparseInference.Echo answered inline on the callback
// thread, nothing else. Benchmarks compare sparse-server against it to show
// what the serving layer (admission, worker queue, model) costs over the
// transport. Prints its port on stdout.
//
//   build/bench/echo_server [--port=0] [--address=127.0.0.1]
#include <cstdio>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/command_line.h"
#include "common/version.h"
#include "common/process_cpu.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "sparse/v1/inference.grpc.pb.h"

ABSL_FLAG(std::string, address, "127.0.0.1", "Address to listen on.");
ABSL_FLAG(int, port, 0, "Port (0 picks a free one; it is printed on stdout).");

namespace {

class EchoOnly final : public sparse::v1::SparseInference::CallbackService {
 public:
  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* context,
                                 const sparse::v1::EchoRequest* request,
                                 sparse::v1::EchoResponse* response) override {
    response->set_payload(request->payload());
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  // Process CPU, so the load generator reports CPU per request for the
  // floor too.
  grpc::ServerUnaryReactor* GetServerStats(grpc::CallbackServerContext* context,
                                           const sparse::v1::ServerStatsRequest*,
                                           sparse::v1::ServerStats* response) override {
    const sparse::ProcessCpu cpu = sparse::ReadProcessCpu();
    response->set_cpu_user_ns(cpu.user_ns);
    response->set_cpu_system_ns(cpu.system_ns);
    response->set_cores(sparse::UsableCores());
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

}  // namespace

int main(int argc, char** argv) {
  sparse::ParseCommandLine(argc, argv,
                           "a bare gRPC echo server (SparseInference.Echo only), the transport "
                           "floor for benchmarks.",
                           "bench/echo_server.", sparse::VersionText());
  sparse::BlockStopSignals();
  EchoOnly service;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat(absl::GetFlag(FLAGS_address), ":", absl::GetFlag(FLAGS_port)),
                           grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "echo_server: cannot listen\n");
    return 1;
  }
  std::printf("%d\n", port);
  std::fflush(stdout);
  std::thread stopper([&server] {
    sparse::WaitForStopSignal();
    server->Shutdown();
  });
  server->Wait();
  stopper.join();
  return 0;
}
