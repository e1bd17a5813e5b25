// An in-process sparse-server on a free loopback port, exercised through the
// generated client: every RPC, both endpoints, routes, FLOPs and outputs
// against in-process engine predictions, and every error case.
#include <cmath>
#include <filesystem>
#include <fstream>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "model_store/checkpoint.h"
#include "server/server.h"
#include "sparse/v1/inference.grpc.pb.h"
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
using ::sparse::testing::RandomLshTable;

constexpr int64_t kD = 8;

PredictRequest Request(const std::string& model, const std::vector<float>& x,
                              int64_t rows, bool route = false, int64_t version = 0) {
  PredictRequest r;
  r.set_model(model);
  r.set_rows(rows);
  r.set_version(version);
  r.set_return_route(route);
  r.mutable_inputs()->Add(x.begin(), x.end());
  return r;
}

class ServerTest : public ::testing::Test {
 public:
  static SparseServer* server() { return server_; }

 protected:
  static void SetUpTestSuite() {
    root_ = new fs::path(fs::temp_directory_path() /
                         ("sparse_server_test_" + std::to_string(::getpid())));
    fs::remove_all(*root_);
    Checkpoint lsh;
    lsh.sparse = RandomLshTable({.d = kD, .o = 2, .s = 4, .m = 6}, 1);
    lsh.dense = RandomDense(kD, 32, 2, Activation::kRelu, 2);
    lsh.info["test_mse"] = "0.5";
    ASSERT_OK(WriteCheckpoint((*root_ / "lsh").string(), 1, lsh));
    for (int v : {1, 2}) {
      Checkpoint dsm;
      dsm.sparse = RandomDsm({.d = kD, .o = 1, .experts = 8, .active_units = 16}, 10 + v);
      dsm.dense = RandomDense(kD, 128, 1, Activation::kRelu, 20 + v);
      ASSERT_OK(WriteCheckpoint((*root_ / "dsm").string(), v, dsm));
    }
    Checkpoint no_twin;
    no_twin.sparse = RandomDsm({.d = kD, .router = RouterKind::kKmeans}, 5);
    ASSERT_OK(WriteCheckpoint((*root_ / "no_twin").string(), 1, no_twin));
    Checkpoint lsh_alone;
    lsh_alone.sparse = RandomLshTable({.d = kD}, 6);
    ASSERT_OK(WriteCheckpoint((*root_ / "lsh_alone").string(), 1, lsh_alone));
    // A broken version beside good ones: skipped, the rest serve.
    fs::create_directories(*root_ / "dsm" / "3");
    std::ofstream(*root_ / "dsm" / "3" / kModelFile) << "junk";
    std::ofstream(*root_ / "dsm" / "config.pbtxt") << "version_policy { all {} }\n";
    // A model folder whose only version folder is not an integer: listed with why.
    fs::create_directories(*root_ / "unversioned" / "v1");

    ServerOptions options;
    options.model_repository = root_->string();
    options.address = "127.0.0.1";
    options.port = 0;
    options.workers = 2;
    options.max_batch_rows = 64;
    errors_ = new std::vector<std::string>;
    absl::StatusOr<std::unique_ptr<SparseServer>> server = SparseServer::Start(options, errors_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
    channel_ = new std::shared_ptr<grpc::Channel>(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(server_->port()), grpc::InsecureChannelCredentials()));
    // The same repository with every request sent through the worker queue
    // (the default server answers these small models on the gRPC thread).
    options.inline_max_flops = 0;
    options.workers = 1;
    server = SparseServer::Start(options, nullptr);
    ASSERT_TRUE(server.ok()) << server.status();
    queued_server_ = server->release();
    queued_channel_ = new std::shared_ptr<grpc::Channel>(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(queued_server_->port()), grpc::InsecureChannelCredentials()));
  }
  static void TearDownTestSuite() {
    delete channel_;
    delete server_;
    delete queued_channel_;
    delete queued_server_;
    fs::remove_all(*root_);
    delete root_;
    delete errors_;
  }

  std::unique_ptr<sparse::v1::SparseInference::Stub> Stub() {
    return sparse::v1::SparseInference::NewStub(*channel_);
  }

  grpc::Status Call(const PredictRequest& request, PredictResponse* response, bool dense = false) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    auto stub = Stub();
    return dense ? stub->PredictDense(&context, request, response)
                 : stub->Predict(&context, request, response);
  }

  // What the engine computes in-process for the same version.
  static std::vector<float> EnginePredict(const Model& model, const std::vector<float>& x,
                                          int64_t rows, Route* route = nullptr) {
    std::vector<float> y(rows * model.info().output_dim);
    PredictStats stats;
    EXPECT_OK(model.Predict(x, rows, absl::MakeSpan(y), &stats, route));
    return y;
  }

  static fs::path* root_;
  static std::vector<std::string>* errors_;
  static SparseServer* server_;
  static std::shared_ptr<grpc::Channel>* channel_;
  static SparseServer* queued_server_;
  static std::shared_ptr<grpc::Channel>* queued_channel_;
};

// The loaded version `version` (0 = newest) of `model`; kept alive by the
// server's snapshot for as long as the suite runs.
const ::sparse::Servable& Servable(const std::string& model, int64_t version) {
  absl::StatusOr<std::shared_ptr<const ::sparse::Servable>> found =
      ServerTest::server()->repository().Find(model, version);
  EXPECT_TRUE(found.ok()) << found.status();
  return **found;
}

fs::path* ServerTest::root_ = nullptr;
std::vector<std::string>* ServerTest::errors_ = nullptr;
SparseServer* ServerTest::server_ = nullptr;
std::shared_ptr<grpc::Channel>* ServerTest::channel_ = nullptr;
SparseServer* ServerTest::queued_server_ = nullptr;
std::shared_ptr<grpc::Channel>* ServerTest::queued_channel_ = nullptr;

TEST_F(ServerTest, SkipsTheBrokenVersionAndServesTheRest) {
  ASSERT_EQ(errors_->size(), 2u);
  EXPECT_NE(errors_->front().find("dsm version 3"), std::string::npos) << errors_->front();
  EXPECT_NE(errors_->back().find("unversioned: no version directory to serve: v1/ is not a "
                                 "version"),
            std::string::npos)
      << errors_->back();
  EXPECT_EQ(server_->repository().snapshot()->size(), 4u);
  grpc::ClientContext context;
  sparse::v1::GetModelRequest get;
  get.set_model("dsm");
  sparse::v1::ModelStatus status;
  ASSERT_TRUE(Stub()->GetModel(&context, get, &status).ok());
  EXPECT_EQ(status.versions_size(), 2);
  ASSERT_EQ(status.failed_versions_size(), 1);
  EXPECT_EQ(status.failed_versions(0).version(), 3);
  EXPECT_NE(status.failed_versions(0).error().find(kManifestFile), std::string::npos)
      << status.failed_versions(0).error();
  // No file system path in what a client sees.
  EXPECT_EQ(status.failed_versions(0).error().find(root_->string()), std::string::npos);
}

TEST_F(ServerTest, ListModelsAndGetModelDescribeEveryVersion) {
  grpc::ClientContext context;
  sparse::v1::ListModelsResponse list;
  ASSERT_TRUE(Stub()->ListModels(&context, {}, &list).ok());
  ASSERT_EQ(list.models_size(), 5);
  EXPECT_EQ(list.models(0).name(), "dsm");
  EXPECT_EQ(list.models(0).serving_version(), 2);
  ASSERT_EQ(list.models(0).versions_size(), 2);
  EXPECT_EQ(list.models(0).max_batch_rows(), 64);
  EXPECT_TRUE(list.models(0).not_served().empty());
  // The folder that serves nothing comes last, with why (issue 31, trap 4).
  EXPECT_EQ(list.models(4).name(), "unversioned");
  EXPECT_EQ(list.models(4).versions_size(), 0);
  EXPECT_NE(list.models(4).not_served().find("no version directory to serve: v1/ is not a version"),
            std::string::npos)
      << list.models(4).not_served();

  grpc::ClientContext context2;
  sparse::v1::GetModelRequest get;
  get.set_model("lsh");
  sparse::v1::ModelStatus status;
  ASSERT_TRUE(Stub()->GetModel(&context2, get, &status).ok());
  const sparse::v1::VersionStatus& v = status.versions(0);
  const LoadedModel& loaded = Servable("lsh", 1).loaded;
  EXPECT_EQ(v.kind(), "lsh_table");
  EXPECT_EQ(v.input_dim(), kD);
  EXPECT_EQ(v.output_dim(), 2);
  EXPECT_EQ(v.flops_per_row(), 2 * 4 * 6 * kD + 4 * 2);  // 2smd + so
  EXPECT_EQ(v.dense_flops_per_row(), 2 * 32 * kD + 2 * 32 * 2);
  EXPECT_EQ(v.flops_per_row(), loaded.sparse->info().flops_per_row);
  EXPECT_TRUE(v.has_dense());
  EXPECT_EQ(v.info().at("test_mse"), "0.5");
  // The row limit a client splits its input by (issue 31, trap 2).
  EXPECT_EQ(status.max_batch_rows(), 64);

  grpc::ClientContext context3;
  get.set_model("nope");
  grpc::Status missing = Stub()->GetModel(&context3, get, &status);
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(missing.error_message().find("loaded: dsm, lsh, lsh_alone, no_twin"), std::string::npos)
      << missing.error_message();
}

TEST_F(ServerTest, BothEndpointsMatchTheEngineAndReportItsFlops) {
  for (const std::string& model : {std::string("lsh"), std::string("dsm")}) {
    const LoadedModel& loaded = Servable(model, 0).loaded;
    for (int64_t rows : {1, 5, 64}) {
      const std::vector<float> x = RandomInputs(rows, kD, rows);
      PredictResponse sparse_response, dense_response;
      ASSERT_TRUE(Call(Request(model, x, rows, /*route=*/true), &sparse_response).ok());
      ASSERT_TRUE(Call(Request(model, x, rows), &dense_response, /*dense=*/true).ok());
      Route route;
      const std::vector<float> expected = EnginePredict(*loaded.sparse, x, rows, &route);
      EXPECT_EQ(std::vector<float>(sparse_response.outputs().begin(), sparse_response.outputs().end()),
                expected);
      EXPECT_EQ(std::vector<float>(dense_response.outputs().begin(), dense_response.outputs().end()),
                EnginePredict(*loaded.dense, x, rows));
      const sparse::v1::Cost& cost = sparse_response.cost();
      EXPECT_EQ(cost.flops(), rows * loaded.sparse->info().flops_per_row);
      EXPECT_EQ(cost.dense_flops(), rows * loaded.dense->info().flops_per_row);
      EXPECT_EQ(dense_response.cost().flops(), rows * loaded.dense->info().flops_per_row);
      EXPECT_EQ(cost.batch_size(), rows);
      EXPECT_GT(cost.compute_ns(), 0);
      EXPECT_GE(cost.total_ns(), cost.queue_ns() + cost.route_ns() + cost.compute_ns());
      EXPECT_EQ(sparse_response.output_dim(), loaded.sparse->info().output_dim);
      // The route is the engine's.
      const sparse::v1::Route& r = sparse_response.route();
      EXPECT_EQ(std::vector<uint64_t>(r.bucket_keys().begin(), r.bucket_keys().end()), route.bucket_keys);
      EXPECT_EQ(std::vector<int32_t>(r.expert_ids().begin(), r.expert_ids().end()), route.expert_ids);
      EXPECT_EQ(r.bucket_missed_size(), static_cast<int>(route.bucket_missed.size()));
      EXPECT_FALSE(dense_response.has_route());
    }
  }
}

TEST_F(ServerTest, ARequestMayNameAVersion) {
  const std::vector<float> x = RandomInputs(3, kD, 7);
  for (int64_t v : {1, 2}) {
    PredictResponse response;
    ASSERT_TRUE(Call(Request("dsm", x, 3, false, v), &response).ok());
    EXPECT_EQ(response.version(), v);
    EXPECT_EQ(std::vector<float>(response.outputs().begin(), response.outputs().end()),
              EnginePredict(*Servable("dsm", v).loaded.sparse, x, 3));
  }
  PredictResponse newest;
  ASSERT_TRUE(Call(Request("dsm", x, 3), &newest).ok());
  EXPECT_EQ(newest.version(), 2);
}

// Issue 31, trap 3: a version that failed to load says why, not only what loaded.
TEST_F(ServerTest, ARequestForAFailedVersionSaysWhyItFailed) {
  PredictResponse response;
  const grpc::Status failed = Call(Request("dsm", RandomInputs(1, kD, 7), 1, false, 3), &response);
  EXPECT_EQ(failed.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(failed.error_message().find("has no version 3: it failed to load: "), std::string::npos)
      << failed.error_message();
  EXPECT_NE(failed.error_message().find(kManifestFile), std::string::npos) << failed.error_message();
  EXPECT_NE(failed.error_message().find("(loaded: 1, 2)"), std::string::npos)
      << failed.error_message();
}

TEST_F(ServerTest, DenseEndpointOfADsmWithoutTwinIsCostOnly) {
  PredictResponse response;
  ASSERT_TRUE(Call(Request("no_twin", RandomInputs(2, kD, 1), 2), &response, true).ok());
  EXPECT_TRUE(response.dense_cost_only());
  PredictResponse sparse_response;
  ASSERT_TRUE(Call(Request("no_twin", RandomInputs(2, kD, 1), 2), &sparse_response).ok());
  EXPECT_FALSE(sparse_response.dense_cost_only());
  EXPECT_LT(sparse_response.cost().flops(), response.cost().flops());
}

struct BadCase {
  std::string name;
  PredictRequest request;
  bool dense;
  grpc::StatusCode code;
  std::string message;
};

std::vector<BadCase> BadCases() {
  std::vector<float> nan = RandomInputs(2, kD, 1), inf = nan;
  nan[3] = NAN;
  inf[9] = -INFINITY;
  return {
      {"unknown model", Request("nope", RandomInputs(1, kD, 1), 1), false,
       grpc::StatusCode::NOT_FOUND, "model 'nope' is not loaded"},
      {"unknown version", Request("dsm", RandomInputs(1, kD, 1), 1, false, 7), false,
       grpc::StatusCode::NOT_FOUND, "has no version 7 (loaded: 1, 2)"},
      {"wrong width", Request("dsm", RandomInputs(1, kD + 1, 1), 1), false,
       grpc::StatusCode::INVALID_ARGUMENT, "expected rows x d = 1 x 8 = 8 values, got 9"},
      {"rows disagree", Request("lsh", RandomInputs(3, kD, 1), 2), true,
       grpc::StatusCode::INVALID_ARGUMENT, "got 24"},
      {"NaN input", Request("dsm", nan, 2), false, grpc::StatusCode::INVALID_ARGUMENT,
       "row 0 column 3 is not finite"},
      {"Inf input", Request("lsh", inf, 2), true, grpc::StatusCode::INVALID_ARGUMENT,
       "row 1 column 1 is not finite"},
      {"empty batch", Request("dsm", {}, 0), false, grpc::StatusCode::INVALID_ARGUMENT,
       "empty batch"},
      {"negative rows", Request("dsm", {}, -3), true, grpc::StatusCode::INVALID_ARGUMENT,
       "empty batch"},
      {"oversized batch", Request("dsm", RandomInputs(65, kD, 1), 65), false,
       grpc::StatusCode::INVALID_ARGUMENT, "batch of 65 rows exceeds the limit of 64 rows per request (sparse-server --max_batch_rows)"},
      {"no dense twin", Request("lsh_alone", RandomInputs(1, kD, 1), 1), true,
       grpc::StatusCode::FAILED_PRECONDITION, "has no dense twin"},
  };
}

TEST_F(ServerTest, EveryBadRequestGetsItsCodeAndAMessageSayingWhatWasExpected) {
  for (const BadCase& c : BadCases()) {
    PredictResponse response;
    grpc::Status status = Call(c.request, &response, c.dense);
    EXPECT_EQ(status.error_code(), c.code) << c.name << ": " << status.error_message();
    EXPECT_NE(status.error_message().find(c.message), std::string::npos)
        << c.name << ": " << status.error_message();
    EXPECT_EQ(status.error_message().find(root_->string()), std::string::npos)
        << "leaks a path: " << status.error_message();
  }
}

TEST_F(ServerTest, TwoHundredMalformedRequestsThenAValidOneIsAnsweredCorrectly) {
  const std::vector<BadCase> cases = BadCases();
  for (int i = 0; i < 200; ++i) {
    const BadCase& c = cases[i % cases.size()];
    PredictResponse response;
    ASSERT_EQ(Call(c.request, &response, c.dense).error_code(), c.code) << c.name;
  }
  const std::vector<float> x = RandomInputs(4, kD, 99);
  PredictResponse response;
  ASSERT_TRUE(Call(Request("dsm", x, 4), &response).ok());
  EXPECT_EQ(std::vector<float>(response.outputs().begin(), response.outputs().end()),
            EnginePredict(*Servable("dsm", 2).loaded.sparse, x, 4));
}

TEST_F(ServerTest, InlineAndQueuedRequestsGetTheSameAnswerAndCost) {
  auto queued = sparse::v1::SparseInference::NewStub(*queued_channel_);
  const std::vector<float> x = RandomInputs(5, kD, 77);
  for (const std::string model : {"lsh", "dsm"}) {
    for (bool dense : {false, true}) {
      SCOPED_TRACE(model + (dense ? " dense" : " sparse"));
      PredictResponse inline_response, queued_response;
      ASSERT_TRUE(Call(Request(model, x, 5), &inline_response, dense).ok());
      grpc::ClientContext context;
      const PredictRequest request = Request(model, x, 5);
      const grpc::Status status = dense ? queued->PredictDense(&context, request, &queued_response)
                                        : queued->Predict(&context, request, &queued_response);
      ASSERT_TRUE(status.ok()) << status.error_message();
      EXPECT_EQ(std::vector<float>(queued_response.outputs().begin(), queued_response.outputs().end()),
                std::vector<float>(inline_response.outputs().begin(), inline_response.outputs().end()));
      EXPECT_EQ(queued_response.cost().flops(), inline_response.cost().flops());
      EXPECT_EQ(queued_response.cost().dense_flops(), inline_response.cost().dense_flops());
      EXPECT_GE(queued_response.cost().total_ns(), queued_response.cost().queue_ns());
    }
  }
}

TEST_F(ServerTest, ServerStatsReportTheProcessCpuGrowingWithWork) {
  auto stats = [&] {
    grpc::ClientContext context;
    sparse::v1::ServerStats out;
    EXPECT_TRUE(Stub()->GetServerStats(&context, sparse::v1::ServerStatsRequest(), &out).ok());
    return out;
  };
  const sparse::v1::ServerStats before = stats();
  PredictResponse response;
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(Call(Request("dsm", RandomInputs(1, kD, i), 1), &response).ok());
  const sparse::v1::ServerStats after = stats();
  EXPECT_GE(after.cores(), 1);
  EXPECT_GT(after.uptime_ns(), before.uptime_ns());
  // The test and the server share the process: 200 round trips cost CPU.
  EXPECT_GT(after.cpu_user_ns() + after.cpu_system_ns(), before.cpu_user_ns() + before.cpu_system_ns());
}

TEST_F(ServerTest, EchoReturnsThePayload) {
  grpc::ClientContext context;
  sparse::v1::EchoRequest request;
  request.set_payload(std::string(1000, 'z'));
  sparse::v1::EchoResponse response;
  ASSERT_TRUE(Stub()->Echo(&context, request, &response).ok());
  EXPECT_EQ(response.payload(), request.payload());
  EXPECT_GE(response.queue_ns(), 0);
}

TEST_F(ServerTest, AnExpiredDeadlineIsReported) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() - std::chrono::milliseconds(1));
  PredictResponse response;
  grpc::Status status = Stub()->Predict(&context, Request("dsm", RandomInputs(1, kD, 1), 1), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
}

TEST_F(ServerTest, HealthSaysLiveAndReadyPerModel) {
  auto health = grpc::health::v1::Health::NewStub(*channel_);
  for (const std::string& service : {std::string(""), std::string("dsm"), std::string("lsh")}) {
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    ASSERT_TRUE(health->Check(&context, request, &response).ok()) << service;
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING) << service;
  }
  grpc::ClientContext context;
  grpc::health::v1::HealthCheckRequest request;
  request.set_service("nope");
  grpc::health::v1::HealthCheckResponse response;
  EXPECT_EQ(health->Check(&context, request, &response).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST(ServerStartTest, RefusesAMissingOrEmptyRepository) {
  ServerOptions options;
  options.port = 0;
  options.model_repository = "/nonexistent/repo";
  EXPECT_EQ(SparseServer::Start(options, nullptr).status().code(), absl::StatusCode::kNotFound);
  const testing::TempDir empty("empty_repository");
  options.model_repository = empty.string();
  absl::Status s = SparseServer::Start(options, nullptr).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(s.message().find("no loadable model"), std::string::npos);
  // Version directories that all fail: the message points at the logged
  // reasons, not at a missing layout.
  Checkpoint dsm;
  dsm.sparse = RandomDsm({.d = kD}, 7);
  ASSERT_OK(WriteCheckpoint((empty.path() / "dsm").string(), 1, dsm));
  std::ofstream((empty.path() / "dsm" / "1" / "model.safetensors").string(), std::ios::trunc)
      << "not a checkpoint";
  std::vector<std::string> errors;
  s = SparseServer::Start(options, &errors).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(s.message().find("1 version failed to load"), std::string::npos) << s.message();
  EXPECT_FALSE(errors.empty());
}

}  // namespace
}  // namespace sparse
