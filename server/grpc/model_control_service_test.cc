// sparse.v1.ModelControl (model_control_service.cc) through a real
// in-process server with dynamic batching on: UnloadModel / LoadModel change
// what serves and what health says; the service needs its flag (and mutual
// TLS when TLS is on). On the same server, concurrent requests that ride in
// one batch each get exactly the engine's answer, route and FLOPs for their
// own rows, through the gRPC frontend (server/core/inference_core_test
// checks the same in process).
#include <filesystem>
#include <fstream>
#include <memory>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/notification.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "model_store/checkpoint.h"
#include "server/server.h"
#include "sparse/v1/inference.grpc.pb.h"
#include "tests/testing/local_server.h"
#include "tests/testing/matchers.h"
#include "tests/testing/random_models.h"
#include "tests/testing/temp_dir.h"

namespace sparse {
namespace {

namespace fs = std::filesystem;
using sparse::v1::PredictRequest;
using sparse::v1::PredictResponse;
using ::sparse::testing::RandomDense;
using ::sparse::testing::RandomDsm;
using ::sparse::testing::RandomInputs;

constexpr int64_t kD = 16;

class ModelControlServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("sparse_model_control_test_" + std::to_string(::getpid()));
    fs::remove_all(root_);
    Checkpoint c;
    c.sparse = RandomDsm({.d = kD, .o = 2, .experts = 8, .active_units = 16}, 3);
    c.dense = RandomDense(kD, 128, 2, Activation::kRelu, 4);
    ASSERT_OK(WriteCheckpoint((root_ / "dsm").string(), 1, c));
    // A long delay so that concurrent requests surely share a batch; a full
    // batch of 64 rows leaves at once.
    std::ofstream(root_ / "dsm" / "config.pbtxt")
        << "dynamic_batching { max_batch_rows: 64 max_queue_delay_us: 20000 }\n";
    ServerOptions options;
    options.model_repository = root_.string();
    options.workers = 2;
    options.inline_max_flops = 0;  // every request goes to the batcher
    options.model_control = true;
    absl::StatusOr<testing::LocalServer> local = testing::StartLocalServer(options);
    ASSERT_TRUE(local.ok()) << local.status();
    server_ = std::move(local->server);
    channel_ = std::move(local->channel);
  }
  void TearDown() override {
    server_.reset();
    fs::remove_all(root_);
  }

  grpc::health::v1::HealthCheckResponse::ServingStatus Health(const std::string& service) {
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    EXPECT_TRUE(grpc::health::v1::Health::NewStub(channel_)->Check(&context, request, &response).ok());
    return response.status();
  }

  fs::path root_;
  std::unique_ptr<SparseServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(ModelControlServiceTest, RequestsThatShareABatchEachGetTheirOwnExactAnswer) {
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Servable> servable,
                       server_->repository().Find("dsm", 0));
  auto stub = sparse::v1::SparseInference::NewStub(channel_);
  for (bool dense : {false, true}) {
    constexpr int kCalls = 24;
    struct Call {
      grpc::ClientContext context;
      PredictRequest request;
      PredictResponse response;
      grpc::Status status;
    };
    std::vector<Call> calls(kCalls);
    // Shared with the callbacks: one may still be leaving DecrementCount when
    // Wait returns.
    auto finished = std::make_shared<absl::BlockingCounter>(kCalls);
    // Both workers are held until every request is queued, so they share
    // batches whatever the machine's speed (not a timing assumption). The
    // tasks own what they wait on: a worker that counted itself held may
    // reach WaitForNotification only after the other worker has answered
    // every request and this iteration has ended.
    auto release = std::make_shared<absl::Notification>();
    auto held = std::make_shared<absl::BlockingCounter>(2);
    for (int w = 0; w < 2; ++w) {
      ASSERT_TRUE(server_->core().pool().Submit([release, held] {
        held->DecrementCount();
        release->WaitForNotification();
      }));
    }
    held->Wait();
    for (int i = 0; i < kCalls; ++i) {
      Call& c = calls[i];
      const int64_t rows = 1 + i % 3;
      const std::vector<float> x = RandomInputs(rows, kD, 50 + i);
      c.request.set_model("dsm");
      c.request.set_rows(rows);
      c.request.set_return_route(true);
      c.request.mutable_inputs()->Add(x.begin(), x.end());
      c.context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
      auto done = [&c, finished](grpc::Status s) {
        c.status = std::move(s);
        finished->DecrementCount();
      };
      if (dense) {
        stub->async()->PredictDense(&c.context, &c.request, &c.response, done);
      } else {
        stub->async()->Predict(&c.context, &c.request, &c.response, done);
      }
    }
    while (server_->core().in_flight() < kCalls) absl::SleepFor(absl::Milliseconds(1));
    release->Notify();
    finished->Wait();
    const Model& model = dense ? static_cast<const Model&>(*servable->loaded.dense)
                               : *servable->loaded.sparse;
    int64_t largest_batch = 0;
    for (const Call& c : calls) {
      ASSERT_TRUE(c.status.ok()) << c.status.error_message();
      const int64_t rows = c.request.rows();
      std::vector<float> expected(rows * 2);
      PredictStats stats;
      Route route;
      const std::vector<float> x(c.request.inputs().begin(), c.request.inputs().end());
      ASSERT_OK(model.Predict(x, rows, absl::MakeSpan(expected), &stats, dense ? nullptr : &route));
      // A batch runs through the kernels of its own row count, so the last
      // bits may differ from a lone request's.
      EXPECT_TRUE(::sparse::testing::AllNear(
          std::vector<float>(c.response.outputs().begin(), c.response.outputs().end()), expected,
          1e-5, 1e-5));
      EXPECT_EQ(c.response.rows(), rows);
      EXPECT_EQ(c.response.cost().flops(), stats.flops);
      EXPECT_GE(c.response.cost().batch_size(), rows);
      if (!dense) {
        EXPECT_EQ(std::vector<int32_t>(c.response.route().expert_ids().begin(),
                                       c.response.route().expert_ids().end()),
                  route.expert_ids);
      }
      largest_batch = std::max(largest_batch, c.response.cost().batch_size());
    }
    EXPECT_GT(largest_batch, 3) << "no two requests shared a batch";
  }
}

TEST_F(ModelControlServiceTest, UnloadAndLoadChangeWhatServesAndWhatHealthSays) {
  auto control = sparse::v1::ModelControl::NewStub(channel_);
  auto stub = sparse::v1::SparseInference::NewStub(channel_);
  EXPECT_EQ(Health("dsm"), grpc::health::v1::HealthCheckResponse::SERVING);
  {
    grpc::ClientContext context;
    sparse::v1::UnloadModelRequest request;
    request.set_model("dsm");
    sparse::v1::UnloadModelResponse response;
    ASSERT_TRUE(control->UnloadModel(&context, request, &response).ok());
  }
  EXPECT_EQ(Health("dsm"), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  PredictRequest predict;
  predict.set_model("dsm");
  predict.set_rows(1);
  const std::vector<float> x = RandomInputs(1, kD, 1);
  predict.mutable_inputs()->Add(x.begin(), x.end());
  {
    grpc::ClientContext context;
    PredictResponse response;
    EXPECT_EQ(stub->Predict(&context, predict, &response).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext context;
    sparse::v1::LoadModelRequest request;
    request.set_model("dsm");
    sparse::v1::ModelStatus status;
    ASSERT_TRUE(control->LoadModel(&context, request, &status).ok());
    EXPECT_EQ(status.serving_version(), 1);
  }
  EXPECT_EQ(Health("dsm"), grpc::health::v1::HealthCheckResponse::SERVING);
  {
    grpc::ClientContext context;
    PredictResponse response;
    EXPECT_TRUE(stub->Predict(&context, predict, &response).ok());
  }
  {
    grpc::ClientContext context;
    sparse::v1::LoadModelRequest request;
    request.set_model("../dsm");
    sparse::v1::ModelStatus status;
    const grpc::Status s = control->LoadModel(&context, request, &status);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(s.error_message().find(root_.string()), std::string::npos);
  }
}

TEST(ModelControlFlagTest, OffByDefaultAndNeedsMutualTlsWhenTlsIsOn) {
  const testing::TempDir root("model_control_flag_test");
  Checkpoint c;
  c.sparse = RandomDsm({.d = kD}, 3);
  ASSERT_OK(WriteCheckpoint((root / "m").string(), 1, c));
  ServerOptions options;
  options.model_repository = root.string();
  options.address = "127.0.0.1";
  options.port = 0;
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<SparseServer> server, SparseServer::Start(options, nullptr));
    auto control = sparse::v1::ModelControl::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(server->port()), grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    sparse::v1::UnloadModelRequest request;
    request.set_model("m");
    sparse::v1::UnloadModelResponse response;
    EXPECT_EQ(control->UnloadModel(&context, request, &response).error_code(),
              grpc::StatusCode::UNIMPLEMENTED);
    EXPECT_OK(server->repository().Find("m", 0).status());
  }
  options.model_control = true;
  options.tls_cert_file = "server.pem";  // checked before any file is read
  options.tls_key_file = "server.key";
  absl::Status s = SparseServer::Start(options, nullptr).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("--tls_client_ca"), std::string::npos) << s;
  options.tls_cert_file.clear();
  options.tls_key_file.clear();
  options.poll_seconds = 1;
  EXPECT_EQ(SparseServer::Start(options, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sparse
