// SparseServer as sparse-server's main drives it: the options it refuses
// (each bad flag named on its own line) and the graceful drain of SIGTERM,
// over gRPC. The drain is made deterministic by holding the one worker
// (core().pool()) until every request is queued: no timing decides the
// outcome.
#include "server/server.h"

#include <cmath>
#include <filesystem>
#include <thread>

#include "absl/synchronization/blocking_counter.h"
#include "boost/asio.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "common/internal_error.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model_store/checkpoint.h"
#include "client/rest_client.h"
#include "server/grpc/sparse_v1_messages.h"
#include "sparse/v1/inference.grpc.pb.h"
#include "tests/testing/infer_and_wait.h"
#include "tests/testing/local_server.h"
#include "tests/testing/matchers.h"
#include "tests/testing/random_models.h"
#include "tests/testing/temp_dir.h"

namespace sparse {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr int64_t kD = 8;

TEST(ServerOptionsTest, EveryBadOptionIsNamedOnItsOwnLine) {
  ServerOptions options;
  options.model_repository = "models";
  EXPECT_OK(options.Validate());
  options.port = 70000;
  options.max_queue = 0;
  options.poll_seconds = -1;
  options.tls_key_file = "server.key";
  const absl::Status s = options.Validate();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              ::testing::StartsWith("--port takes 0..65535 (0 = a free port), got 70000\n"
                                    "--max_queue takes a count >= 1, got 0\n"
                                    "--poll_seconds takes seconds in 0..86400"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("--tls_cert and --tls_key go together"));
  // Start() refuses them before reading the repository.
  EXPECT_EQ(SparseServer::Start(options, nullptr).status(), s);

  ServerOptions control;
  control.model_repository = "models";
  control.model_control = true;
  control.poll_seconds = 5;
  EXPECT_THAT(std::string(control.Validate().message()), HasSubstr("exclude each other"));
  control.poll_seconds = 0;
  control.tls_cert_file = "server.pem";
  control.tls_key_file = "server.key";
  EXPECT_THAT(std::string(control.Validate().message()), HasSubstr("needs --tls_client_ca"));
}

TEST(ServerDrainTest, ShutdownFinishesEveryQueuedRequestAndRefusesNewOnes) {
  testing::TempDir root("server_drain_test");
  Checkpoint checkpoint;
  checkpoint.sparse = testing::RandomDsm({.d = kD, .o = 1, .experts = 8, .active_units = 16}, 1);
  checkpoint.dense = testing::RandomDense(kD, 64, 1, Activation::kRelu, 2);
  ASSERT_OK(WriteCheckpoint((root / "dsm").string(), 1, checkpoint));
  ServerOptions options;
  options.model_repository = root.string();
  options.workers = 1;
  options.inline_max_flops = 0;  // every request queues for the worker
  ASSERT_OK_AND_ASSIGN(testing::LocalServer local, testing::StartLocalServer(options));
  SparseServer& server = *local.server;
  auto stub = sparse::v1::SparseInference::NewStub(local.channel);

  // The worker is held: every request sent now stays queued.
  absl::Notification release, held;
  ASSERT_TRUE(server.core().pool().Submit([&] {
    held.Notify();
    release.WaitForNotification();
  }));
  held.WaitForNotification();

  constexpr int kCalls = 50;
  struct Call {
    grpc::ClientContext context;
    sparse::v1::PredictRequest request;
    sparse::v1::PredictResponse response;
    grpc::Status status;
  };
  std::vector<Call> calls(kCalls);
  absl::BlockingCounter answered(kCalls);
  for (int i = 0; i < kCalls; ++i) {
    Call& c = calls[i];
    c.request.set_model("dsm");
    c.request.set_rows(1);
    for (float v : testing::RandomInputs(1, kD, i)) c.request.add_inputs(v);
    c.context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    stub->async()->Predict(&c.context, &c.request, &c.response, [&c, &answered](grpc::Status s) {
      c.status = std::move(s);
      answered.DecrementCount();
    });
  }
  // Waits (not a timing assertion) until the server holds all of them.
  while (server.core().in_flight() < kCalls) absl::SleepFor(absl::Milliseconds(1));

  std::thread stopper([&server] { server.Shutdown(/*grace_ms=*/60'000); });
  while (!server.core().draining()) absl::SleepFor(absl::Milliseconds(1));
  // Draining: a new request is refused as retryable, saying why, while the
  // queued ones wait for the worker.
  {
    grpc::ClientContext context;
    sparse::v1::PredictResponse response;
    const grpc::Status refused = stub->Predict(&context, calls[0].request, &response);
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE) << refused.error_message();
    EXPECT_THAT(refused.error_message(), HasSubstr("shutting down"));
  }
  EXPECT_EQ(server.core().in_flight(), kCalls);
  release.Notify();
  stopper.join();
  server.Wait();
  answered.Wait();
  for (const Call& c : calls) {
    EXPECT_TRUE(c.status.ok()) << c.status.error_message();
    EXPECT_EQ(c.response.outputs_size(), 1);
  }
  local.server.reset();
}

// The REST port drains as the gRPC one: requests queued when SIGTERM comes
// are answered 200, a new one gets 503 "shutting down".
TEST(ServerDrainTest, TheRestPortFinishesQueuedRequestsAndRefusesNewOnes) {
  testing::TempDir root("server_rest_drain_test");
  Checkpoint checkpoint;
  checkpoint.sparse = testing::RandomDsm({.d = kD, .o = 1, .experts = 8, .active_units = 16}, 1);
  ASSERT_OK(WriteCheckpoint((root / "dsm").string(), 1, checkpoint));
  ServerOptions options;
  options.model_repository = root.string();
  options.workers = 1;
  options.inline_max_flops = 0;  // every request queues for the worker
  options.http_port = 0;
  ASSERT_OK_AND_ASSIGN(testing::LocalServer local, testing::StartLocalServer(options));
  SparseServer& server = *local.server;
  ASSERT_GT(server.http_port(), 0);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<RestClient> client,
                       RestClient::Create(absl::StrCat("127.0.0.1:", server.http_port()),
                                          std::chrono::seconds(60)));
  const std::string body =
      R"({"inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]})";

  absl::Notification release, held;
  ASSERT_TRUE(server.core().pool().Submit([&] {
    held.Notify();
    release.WaitForNotification();
  }));
  held.WaitForNotification();
  constexpr int kCalls = 10;
  std::vector<absl::StatusOr<RestReply>> replies(kCalls, absl::UnknownError("not answered"));
  absl::BlockingCounter answered(kCalls);
  for (int i = 0; i < kCalls; ++i) {
    client->PostAsync("/v2/models/dsm/infer", &body, std::nullopt,
                      [&replies, &answered, i](absl::Status s, RestReply r) {
                        replies[i] = s.ok() ? absl::StatusOr<RestReply>(std::move(r)) : s;
                        answered.DecrementCount();
                      });
  }
  while (server.core().in_flight() < kCalls) absl::SleepFor(absl::Milliseconds(1));

  std::thread stopper([&server] { server.Shutdown(/*grace_ms=*/60'000); });
  while (!server.core().draining()) absl::SleepFor(absl::Milliseconds(1));
  absl::StatusOr<RestReply> refused = client->Post("/v2/models/dsm/infer", body, std::nullopt);
  ASSERT_OK(refused.status());
  EXPECT_EQ(refused->status, 503);
  EXPECT_THAT(refused->body, HasSubstr("shutting down"));
  EXPECT_EQ(server.core().in_flight(), kCalls);
  release.Notify();
  answered.Wait();
  stopper.join();
  server.Wait();
  for (const absl::StatusOr<RestReply>& r : replies) {
    ASSERT_OK(r.status());
    EXPECT_EQ(r->status, 200) << r->body;
    EXPECT_THAT(r->body, HasSubstr("\"outputs\""));
  }
  client.reset();
  local.server.reset();
}

// The core is an in-process API: a caller that is not a gRPC frontend gets
// what the gRPC frontend answers, outputs, costs and errors alike (so a new
// frontend needs no change in the core).
TEST(InProcessCoreTest, AnswersAsTheGrpcFrontendDoes) {
  testing::TempDir root("server_in_process_test");
  Checkpoint checkpoint;
  checkpoint.sparse = testing::RandomDsm({.d = kD, .o = 2, .experts = 8, .active_units = 16}, 1);
  checkpoint.dense = testing::RandomDense(kD, 64, 2, Activation::kRelu, 2);
  ASSERT_OK(WriteCheckpoint((root / "dsm").string(), 1, checkpoint));
  ServerOptions options;
  options.model_repository = root.string();
  options.max_batch_rows = 16;
  ASSERT_OK_AND_ASSIGN(testing::LocalServer local, testing::StartLocalServer(options));
  auto stub = sparse::v1::SparseInference::NewStub(local.channel);

  std::vector<float> nan_row = testing::RandomInputs(2, kD, 5);
  nan_row[kD + 3] = std::nanf("");
  struct Case {
    std::string model;
    std::vector<float> x;
    int64_t rows;
    bool dense;
  };
  const std::vector<Case> cases = {
      {"dsm", testing::RandomInputs(3, kD, 1), 3, false},
      {"dsm", testing::RandomInputs(3, kD, 1), 3, true},
      {"dsm", nan_row, 2, false},
      {"dsm", testing::RandomInputs(1, kD, 2), 2, false},    // wrong size
      {"dsm", testing::RandomInputs(17, kD, 3), 17, true},  // over max_batch_rows
      {"nope", testing::RandomInputs(1, kD, 4), 1, false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.model + " rows " + std::to_string(c.rows) + (c.dense ? " dense" : " sparse"));
    sparse::v1::PredictRequest request;
    request.set_model(c.model);
    request.set_rows(c.rows);
    request.set_return_route(true);
    request.mutable_inputs()->Add(c.x.begin(), c.x.end());
    grpc::ClientContext context;
    sparse::v1::PredictResponse over_grpc;
    const grpc::Status grpc_status = c.dense ? stub->PredictDense(&context, request, &over_grpc)
                                             : stub->Predict(&context, request, &over_grpc);

    InferRequest in_process = ToInferRequest(request, c.dense);
    InferResponse answer;
    const absl::Status status = testing::InferAndWait(local.server->core(), in_process, &answer);

    EXPECT_EQ(static_cast<int>(status.code()), static_cast<int>(grpc_status.error_code()));
    EXPECT_EQ(std::string(status.message()), grpc_status.error_message());
    if (!status.ok()) continue;
    sparse::v1::PredictResponse from_core;
    ToPredictResponse(answer, &from_core);
    EXPECT_EQ(from_core.model(), over_grpc.model());
    EXPECT_EQ(from_core.version(), over_grpc.version());
    ASSERT_EQ(from_core.outputs_size(), over_grpc.outputs_size());
    for (int i = 0; i < from_core.outputs_size(); ++i) {
      EXPECT_EQ(from_core.outputs(i), over_grpc.outputs(i)) << i;
    }
    EXPECT_EQ(from_core.cost().flops(), over_grpc.cost().flops());
    EXPECT_EQ(from_core.cost().dense_flops(), over_grpc.cost().dense_flops());
    EXPECT_EQ(from_core.cost().batch_size(), over_grpc.cost().batch_size());
    EXPECT_EQ(from_core.route().expert_ids_size(), over_grpc.route().expert_ids_size());
    for (int i = 0; i < from_core.route().expert_ids_size(); ++i) {
      EXPECT_EQ(from_core.route().expert_ids(i), over_grpc.route().expert_ids(i));
    }
  }
  local.server.reset();
}

namespace faults {

// One HTTP/1.1 GET on a fresh connection: (status, body).
std::pair<int, std::string> HttpGet(int port, const std::string& path) {
  namespace beast = boost::beast;
  namespace http = beast::http;
  boost::asio::io_context io;
  beast::tcp_stream stream(io);
  stream.connect(boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"),
                                                static_cast<uint16_t>(port)));
  http::request<http::empty_body> request(http::verb::get, path, 11);
  request.set(http::field::host, "127.0.0.1");
  http::write(stream, request);
  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  http::read(stream, buffer, response);
  return {static_cast<int>(response.result_int()), response.body()};
}

grpc::Status Predict(sparse::v1::SparseInference::Stub& stub) {
  sparse::v1::PredictRequest request;
  request.set_model("dsm");
  request.set_rows(1);
  for (float v : testing::RandomInputs(1, kD, 1)) request.add_inputs(v);
  grpc::ClientContext context;
  sparse::v1::PredictResponse response;
  return stub.Predict(&context, request, &response);
}

// A load's error: the call's, or the first version that failed to load.
std::string LoadError(sparse::v1::ModelControl::Stub& control) {
  grpc::ClientContext context;
  sparse::v1::LoadModelRequest request;
  request.set_model("dsm");
  sparse::v1::ModelStatus response;
  const grpc::Status status = control.LoadModel(&context, request, &response);
  if (!status.ok()) return status.error_message();
  return response.failed_versions_size() > 0 ? response.failed_versions(0).error() : "";
}

// The line of sparse_internal_errors_total{where="<site>"} on /metrics.
std::string ErrorLine(int metrics_port, absl::string_view site) {
  const std::string text = HttpGet(metrics_port, "/metrics").second;
  const std::string key = absl::StrCat("sparse_internal_errors_total{where=\"", site, "\"} ");
  const size_t at = text.find(key);
  if (at == std::string::npos) return "(missing)";
  return text.substr(at, text.find('\n', at) - at);
}

// A step that throws on each entry point fails only its own request, call,
// load or connection, is counted on /metrics, and the process goes on
// answering on every port.
TEST(InternalErrorTest, AThrowOnAnyEntryPointFailsOnlyItsRequestAndIsCounted) {
  testing::TempDir root("server_fault_test");
  Checkpoint checkpoint;
  checkpoint.sparse = testing::RandomDsm({.d = kD, .o = 1, .experts = 8, .active_units = 16}, 1);
  ASSERT_OK(WriteCheckpoint((root / "dsm").string(), 1, checkpoint));
  ServerOptions options;
  options.model_repository = root.string();
  options.http_port = 0;
  options.metrics_port = 0;
  options.model_control = true;
  ASSERT_OK_AND_ASSIGN(testing::LocalServer local, testing::StartLocalServer(options));
  SparseServer& server = *local.server;
  auto stub = sparse::v1::SparseInference::NewStub(local.channel);
  auto control = sparse::v1::ModelControl::NewStub(local.channel);
  ASSERT_TRUE(Predict(*stub).ok());

  // The REST port's I/O thread: that request gets 500, the next 200.
  InjectFault(ErrorSite::kHttp, 1);
  auto [status, body] = HttpGet(server.http_port(), "/v2/health/ready");
  EXPECT_EQ(status, 500);
  EXPECT_THAT(body, HasSubstr("injected fault at http"));
  EXPECT_EQ(HttpGet(server.http_port(), "/v2/health/ready").first, 200);
  EXPECT_EQ(ErrorLine(server.metrics_port(), "http"), "sparse_internal_errors_total{where=\"http\"} 1");

  // The metrics port: one scrape fails, the next one counts it.
  InjectFault(ErrorSite::kMetrics, 1);
  EXPECT_EQ(HttpGet(server.metrics_port(), "/metrics").first, 500);
  EXPECT_EQ(ErrorLine(server.metrics_port(), "metrics"),
            "sparse_internal_errors_total{where=\"metrics\"} 1");

  // A gRPC handler, then the computation itself: INTERNAL, then OK.
  for (ErrorSite site : {ErrorSite::kGrpc, ErrorSite::kCompute}) {
    InjectFault(site, 1);
    const grpc::Status failed = Predict(*stub);
    EXPECT_EQ(failed.error_code(), grpc::StatusCode::INTERNAL) << ErrorSiteName(site);
    EXPECT_THAT(failed.error_message(), HasSubstr(absl::StrCat("injected fault at ", ErrorSiteName(site))));
    EXPECT_TRUE(Predict(*stub).ok()) << ErrorSiteName(site);
    EXPECT_EQ(ErrorLine(server.metrics_port(), ErrorSiteName(site)),
              absl::StrCat("sparse_internal_errors_total{where=\"", ErrorSiteName(site), "\"} 1"));
  }

  // A client's load, and the version load under it: the load fails, what
  // serves stays, and the next load works.
  for (ErrorSite site : {ErrorSite::kModelControl, ErrorSite::kLoader}) {
    // A new version, so the load has a version to read.
    const int64_t version = site == ErrorSite::kModelControl ? 2 : 3;
    ASSERT_OK(WriteCheckpoint((root / "dsm").string(), version, checkpoint));
    InjectFault(site, 1);
    EXPECT_THAT(LoadError(*control),
                HasSubstr(absl::StrCat("injected fault at ", ErrorSiteName(site))));
    EXPECT_TRUE(Predict(*stub).ok()) << ErrorSiteName(site);
    EXPECT_EQ(LoadError(*control), "") << ErrorSiteName(site);
    EXPECT_TRUE(Predict(*stub).ok()) << ErrorSiteName(site);
    EXPECT_EQ(ErrorLine(server.metrics_port(), ErrorSiteName(site)),
              absl::StrCat("sparse_internal_errors_total{where=\"", ErrorSiteName(site), "\"} 1"));
  }
  local.server->Shutdown(5000);
  local.server->Wait();
}

}  // namespace faults

}  // namespace
}  // namespace sparse
