// The REST port's transport and frontend over the core, with no gRPC in the
// process (so ThreadSanitizer sees every lock: make test-tsan runs it):
// many clients on many keep-alive connections at once, inline and queued
// requests, get their own answers; Stop() with connections still open
// returns and leaves nothing running; a client that leaves while its
// request waits for a worker gets it cancelled before any compute.
#include "server/http/http_server.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/notification.h"
#include "boost/asio.hpp"
#include "client/rest_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model_store/checkpoint.h"
#include "model_store/model_repository.h"
#include "server/oip/oip_protocol.h"
#include "server/http/rest_frontend.h"
#include "tests/testing/matchers.h"
#include "tests/testing/random_models.h"
#include "tests/testing/temp_dir.h"

namespace sparse {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kD = 8;

// A repository under `root` holding one DSM, "dsm" (d = kD, o = 1).
absl::StatusOr<std::unique_ptr<ModelRepository>> OpenDsmRepository(const testing::TempDir& root) {
  Checkpoint dsm;
  dsm.sparse = testing::RandomDsm({.d = kD, .o = 1, .experts = 8, .active_units = 16}, 1);
  if (absl::Status s = WriteCheckpoint((root / "dsm").string(), 1, dsm); !s.ok()) return s;
  ModelRepository::Options options;
  options.log = [](const std::string&) {};
  return ModelRepository::Open(root.string(), options, nullptr);
}

TEST(HttpServerTest, ManyConnectionsAtOnceEachGetTheirOwnAnswer) {
  testing::TempDir root("http_server_test");
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ModelRepository> repository, OpenDsmRepository(root));
  // Requests of one row run inline on the I/O thread, larger ones queue
  // for a worker: both ways back to the connection are exercised.
  const int64_t row_flops = (*repository->Find("dsm", 0))->loaded.sparse->info().flops_per_row;
  InferenceCore core(repository.get(), InferenceCore::Options{.workers = 2,
                                                              .max_queue = 1024,
                                                              .max_batch_rows = 64,
                                                              .inline_max_flops = row_flops,
                                                              .observe = nullptr});
  OipProtocol api(&core, nullptr);
  RestFrontend frontend(&api, 64);
  HttpServer::Options http;
  http.address = "127.0.0.1";
  http.threads = 2;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<HttpServer> server, HttpServer::Start(http, &frontend));

  constexpr int kClients = 4, kPerClient = 100;
  std::vector<std::unique_ptr<RestClient>> clients;
  for (int c = 0; c < kClients; ++c) {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<RestClient> client,
                         RestClient::Create(absl::StrCat("127.0.0.1:", server->port()),
                                            std::chrono::seconds(60)));
    clients.push_back(std::move(client));
  }
  // Request i asks for 1 + i % 3 rows, all equal to i: its outputs say
  // whose answer it got.
  std::vector<std::string> bodies(kClients * kPerClient);
  std::vector<RestReply> replies(bodies.size());
  std::vector<absl::Status> statuses(bodies.size());
  for (size_t i = 0; i < bodies.size(); ++i) {
    const int rows = 1 + static_cast<int>(i % 3);
    std::string data;
    for (int j = 0; j < rows * kD; ++j) absl::StrAppend(&data, j ? "," : "", (i % 17) * 0.05);
    bodies[i] = absl::StrCat(R"({"id":")", i, R"(","inputs":[{"name":"input","shape":[)", rows, ",", kD,
                             R"(],"datatype":"FP32","data":[)", data, "]}]}");
  }
  absl::BlockingCounter answered(static_cast<int>(bodies.size()));
  for (size_t i = 0; i < bodies.size(); ++i) {
    clients[i % kClients]->PostAsync("/v2/models/dsm/infer", &bodies[i], std::nullopt,
                                     [&, i](absl::Status s, RestReply r) {
                                       statuses[i] = std::move(s);
                                       replies[i] = std::move(r);
                                       answered.DecrementCount();
                                     });
  }
  answered.Wait();
  for (size_t i = 0; i < bodies.size(); ++i) {
    ASSERT_OK(statuses[i]);
    ASSERT_EQ(replies[i].status, 200) << replies[i].body;
    EXPECT_THAT(replies[i].body, HasSubstr(absl::StrCat(R"("id":")", i, R"(")")));
    EXPECT_THAT(replies[i].body, HasSubstr(absl::StrCat(R"("shape":[)", 1 + i % 3, ",1]")));
  }
  // The connections stay open (keep-alive); Stop closes them and returns.
  server->Drain();
  server->Stop();
  absl::StatusOr<RestReply> after = clients[0]->Post("/v2/models/dsm/infer", bodies[0], std::nullopt);
  EXPECT_FALSE(after.ok() && after->status == 200) << "the port is closed after Stop()";
  clients.clear();
}

TEST(HttpServerTest, AClientThatLeavesWhileItsRequestQueuesIsCancelledBeforeCompute) {
  testing::TempDir root("http_disconnect_test");
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ModelRepository> repository, OpenDsmRepository(root));
  absl::Mutex mu;
  std::vector<absl::StatusCode> answered;  // guarded by mu
  InferenceCore core(repository.get(),
                     InferenceCore::Options{.workers = 1,
                                            .max_queue = 16,
                                            .max_batch_rows = 64,
                                            .inline_max_flops = 0,  // every request queues
                                            .observe = [&](const InferRequest&,
                                                           const absl::Status& status,
                                                           const InferResponse&) {
                                              absl::MutexLock lock(&mu);
                                              answered.push_back(status.code());
                                            }});
  OipProtocol api(&core, nullptr);
  RestFrontend frontend(&api, 64);
  HttpServer::Options http;
  http.address = "127.0.0.1";
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<HttpServer> server, HttpServer::Start(http, &frontend));

  // The one worker is held: the request waits in the queue.
  absl::Notification held, release;
  ASSERT_TRUE(core.pool().Submit([&] {
    held.Notify();
    release.WaitForNotification();
  }));
  held.WaitForNotification();
  std::string data;
  for (int j = 0; j < kD; ++j) absl::StrAppend(&data, j ? "," : "", "0.5");
  const std::string body = absl::StrCat(
      R"({"inputs":[{"name":"input","shape":[1,)", kD, R"(],"datatype":"FP32","data":[)", data,
      "]}]}");
  {
    boost::asio::io_context io;
    boost::asio::ip::tcp::socket socket(io);
    socket.connect({boost::asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(server->port())});
    const std::string request =
        absl::StrCat("POST /v2/models/dsm/infer HTTP/1.1\r\nHost: x\r\nContent-Length: ",
                     body.size(), "\r\n\r\n", body);
    boost::asio::write(socket, boost::asio::buffer(request));
    // Wait until the request is in the core, then leave.
    for (int i = 0; i < 500 && core.in_flight() == 0; ++i) absl::SleepFor(absl::Milliseconds(10));
    ASSERT_EQ(core.in_flight(), 1) << "the request never reached the core";
  }  // closed
  release.Notify();
  for (int i = 0; i < 500 && core.in_flight() > 0; ++i) absl::SleepFor(absl::Milliseconds(10));
  {
    absl::MutexLock lock(&mu);
    ASSERT_EQ(answered.size(), 1u);
    EXPECT_EQ(answered[0], absl::StatusCode::kCancelled) << "computed for a client that had gone";
  }
  ASSERT_OK_AND_ASSIGN(const ModelHandle handle, core.Resolve("dsm", 0));
  EXPECT_EQ(core.Statistics(handle).execution_count, 0u) << "the model ran";
  server->Stop();
}

}  // namespace
}  // namespace sparse
