// A bad request fails alone (issue 15): a sparse-server with dynamic
// batching on and every request queued (inline_max_flops = 0), fed by many
// clients at once with a mix of good requests and bad ones (a NaN, or
// values so large that the model's output overflows), through the native
// API and the Open Inference Protocol, on both paths. Good requests must
// all be answered, with the engine's outputs; each bad one must get
// INVALID_ARGUMENT naming its own row. At every serving precision (FP32,
// BF16, INT8: each row is converted on its own, so a bad row cannot change
// its batch-mates' answers). Also: bodies that do not parse, and client
// strings too long to quote.
#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "inference/grpc_service.grpc.pb.h"
#include "model_store/checkpoint.h"
#include "model_store/model_loader.h"
#include "server/server.h"
#include "sparse/v1/inference.grpc.pb.h"
#include "tests/testing/local_server.h"
#include "tests/testing/matchers.h"
#include "tests/testing/random_models.h"

namespace sparse {
namespace {

namespace fs = std::filesystem;
using sparse::v1::PredictRequest;
using sparse::v1::PredictResponse;
using ::sparse::testing::OverflowingRow;

// d = 64 and 64 units: wide enough for BF16 and INT8 matrices (a matrix
// with K = 8 or N < 52 stays FP32, docs/configuration.md).
constexpr int64_t kD = 64;
constexpr int kGoodThreads = 16;
constexpr int kBadThreads = 2;
constexpr int kRequestsPerThread = 120;

class BatchIsolationTest : public ::testing::TestWithParam<Precision> {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("sparse_batch_isolation_" + std::to_string(::getpid()));
    fs::remove_all(root_);
    Checkpoint dsm;
    dsm.sparse = testing::RandomDsm({.d = kD, .o = 2, .experts = 8, .active_units = 64}, 7);
    dsm.dense = testing::RandomDense(kD, 128, 2, Activation::kRelu, 8);
    ASSERT_OK(WriteCheckpoint((root_ / "dsm").string(), 1, dsm));
    Checkpoint lsh;
    lsh.sparse = testing::RandomLshTable({.d = kD, .o = 2, .s = 4, .m = 6, .degree = 1}, 9);
    lsh.dense = testing::RandomDense(kD, 64, 2, Activation::kRelu, 10);
    ASSERT_OK(WriteCheckpoint((root_ / "lsh").string(), 1, lsh));
    for (const char* model : {"dsm", "lsh"}) {
      std::ofstream(root_ / model / "config.pbtxt")
          << "dynamic_batching { max_batch_rows: 32 max_queue_delay_us: 2000 }\n"
          << "precision: " << PrecisionName(GetParam()) << "\n";
    }
    ServerOptions options;
    options.model_repository = root_.string();
    options.workers = 2;
    options.max_batch_rows = 64;
    options.inline_max_flops = 0;  // every request queues
    absl::StatusOr<testing::LocalServer> local = testing::StartLocalServer(options);
    ASSERT_TRUE(local.ok()) << local.status();
    server_ = std::move(local->server);
    channel_ = std::move(local->channel);
  }
  void TearDown() override {
    server_.reset();
    fs::remove_all(root_);
  }

  const LoadedModel& Loaded(const std::string& model) {
    absl::StatusOr<std::shared_ptr<const Servable>> found = server_->repository().Find(model, 0);
    EXPECT_TRUE(found.ok()) << found.status();
    servables_.push_back(*found);
    if (GetParam() != Precision::kFp32) {
      // The reduced matrices are in use: fewer bytes per row than at FP32.
      absl::StatusOr<std::unique_ptr<Servable>> fp32 =
          LoadServable(model, 1, (root_ / model / "1").string(), LoaderOptions{});
      EXPECT_TRUE(fp32.ok()) << fp32.status();
      if (fp32.ok()) {
        EXPECT_LT((*found)->loaded.sparse->info().weight_bytes_per_row,
                  (*fp32)->loaded.sparse->info().weight_bytes_per_row) << model;
        EXPECT_LT((*found)->loaded.dense->info().weight_bytes_per_row,
                  (*fp32)->loaded.dense->info().weight_bytes_per_row) << model;
      }
    }
    return (*found)->loaded;
  }

  fs::path root_;
  std::unique_ptr<SparseServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::vector<std::shared_ptr<const Servable>> servables_;
};

// What does not depend on the precision runs at FP32 alone.
using RequestParsingTest = BatchIsolationTest;

struct Counts {
  std::atomic<int> good_ok{0}, good_failed{0}, good_wrong{0}, good_batched{0};
  std::atomic<int> bad_rejected{0}, bad_misnamed{0}, bad_answered{0};
};

// The first place two answers differ by more than rounding (batches of
// different sizes may run different kernels); -1 if none.
int Mismatch(const float* got, const std::vector<float>& want) {
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::fabs(got[i] - want[i]) > 1e-4f * (1.0f + std::fabs(want[i]))) return static_cast<int>(i);
  }
  return -1;
}

TEST_P(BatchIsolationTest, BadRequestsFailAloneAndNameTheirOwnRow) {
  struct Path {
    std::string model;
    bool dense;
    const Model* engine;
    std::vector<float> overflow;
  };
  std::vector<Path> paths;
  for (const std::string model : {"dsm", "lsh"}) {
    const LoadedModel& loaded = Loaded(model);
    for (bool dense : {false, true}) {
      const Model* engine = dense ? static_cast<const Model*>(loaded.dense.get()) : loaded.sparse.get();
      paths.push_back({model, dense, engine, OverflowingRow(*engine)});
    }
  }
  int overflow_paths = 0;
  for (const Path& p : paths) overflow_paths += p.overflow.empty() ? 0 : 1;
  ASSERT_GE(overflow_paths, 2) << "no input found whose outputs overflow";

  Counts counts;
  auto native = sparse::v1::SparseInference::NewStub(channel_);
  auto oip = inference::GRPCInferenceService::NewStub(channel_);
  std::vector<std::thread> threads;
  for (int t = 0; t < kGoodThreads + kBadThreads; ++t) {
    threads.emplace_back([&, t] {
      const bool bad = t >= kGoodThreads;
      for (int i = 0; i < kRequestsPerThread; ++i) {
        const Path& path = paths[(t + i) % paths.size()];
        const int64_t rows = 1 + (t + i) % 4;
        std::vector<float> x = testing::RandomInputs(rows, kD, 1000 * t + i);
        const int64_t bad_row = (t + i) % rows;
        const bool nan = (i % 2 == 0) || path.overflow.empty();
        if (bad) {
          if (nan) {
            x[bad_row * kD + (i % kD)] = std::nanf("");
          } else {
            std::copy(path.overflow.begin(), path.overflow.end(), x.begin() + bad_row * kD);
          }
        }
        const bool use_oip = (i % 3 == 2);
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
        grpc::Status status;
        std::vector<float> outputs;
        int64_t batch_size = 0;
        if (use_oip) {
          inference::ModelInferRequest request;
          request.set_model_name(path.dense ? path.model + ".dense" : path.model);
          auto* input = request.add_inputs();
          input->set_name("input");
          input->set_datatype("FP32");
          input->add_shape(rows);
          input->add_shape(kD);
          request.add_raw_input_contents(std::string(reinterpret_cast<const char*>(x.data()),
                                                     x.size() * sizeof(float)));
          inference::ModelInferResponse response;
          status = oip->ModelInfer(&context, request, &response);
          if (status.ok()) {
            const std::string& raw = response.raw_output_contents(0);
            outputs.resize(raw.size() / sizeof(float));
            std::memcpy(outputs.data(), raw.data(), outputs.size() * sizeof(float));
          }
        } else {
          PredictRequest request;
          request.set_model(path.model);
          request.set_rows(rows);
          request.mutable_inputs()->Add(x.begin(), x.end());
          PredictResponse response;
          status = path.dense ? native->PredictDense(&context, request, &response)
                              : native->Predict(&context, request, &response);
          outputs.assign(response.outputs().begin(), response.outputs().end());
          batch_size = response.cost().batch_size();
        }
        if (!bad) {
          if (!status.ok()) {
            ++counts.good_failed;
            ADD_FAILURE() << "good request failed: " << status.error_message();
            continue;
          }
          ++counts.good_ok;
          if (batch_size > rows) ++counts.good_batched;
          std::vector<float> want(rows * path.engine->info().output_dim);
          PredictStats stats;
          EXPECT_OK(path.engine->Predict(x, rows, absl::MakeSpan(want), &stats, nullptr));
          if (outputs.size() != want.size() || Mismatch(outputs.data(), want) >= 0) ++counts.good_wrong;
          continue;
        }
        if (status.ok()) {
          ++counts.bad_answered;
          continue;
        }
        ++counts.bad_rejected;
        const std::string own = "input row " + std::to_string(bad_row) + " ";
        if (status.error_code() != grpc::StatusCode::INVALID_ARGUMENT ||
            status.error_message().find(own) == std::string::npos) {
          ++counts.bad_misnamed;
          ADD_FAILURE() << "bad row " << bad_row << " got " << status.error_code() << ": "
                        << status.error_message();
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::cout << "good: " << counts.good_ok << " answered (" << counts.good_batched
            << " in a batch with other requests), " << counts.good_failed << " failed, "
            << counts.good_wrong << " wrong; bad: " << counts.bad_rejected
            << " rejected, " << counts.bad_misnamed << " naming another row, "
            << counts.bad_answered << " answered\n";
  EXPECT_EQ(counts.good_ok, kGoodThreads * kRequestsPerThread);
  EXPECT_EQ(counts.good_failed, 0);
  EXPECT_EQ(counts.good_wrong, 0);
  EXPECT_EQ(counts.bad_rejected, kBadThreads * kRequestsPerThread);
  EXPECT_EQ(counts.bad_misnamed, 0);
  EXPECT_EQ(counts.bad_answered, 0);
  // The mix did meet in batches (18 clients against 2 workers).
  EXPECT_GT(counts.good_batched, 0);
}

// A batch that holds an overflowing request and good ones, formed for sure:
// the good ones get their answers, the bad one its own row's error.
TEST_P(BatchIsolationTest, AnOverflowInABatchFailsOnlyTheRequestThatSentIt) {
  const LoadedModel& loaded = Loaded("dsm");
  const std::vector<float> overflow = OverflowingRow(*loaded.dense);
  ASSERT_FALSE(overflow.empty());
  // Many concurrent requests on one path until a batch of >1 request held
  // the bad one (batch_size of the good ones shows it).
  auto native = sparse::v1::SparseInference::NewStub(channel_);
  std::atomic<int> good_failed{0}, mixed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 12; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 60; ++i) {
        std::vector<float> x = testing::RandomInputs(2, kD, 77 * t + i);
        const bool bad = t == 0;
        if (bad) std::copy(overflow.begin(), overflow.end(), x.begin() + kD);
        PredictRequest request;
        request.set_model("dsm");
        request.set_rows(2);
        request.mutable_inputs()->Add(x.begin(), x.end());
        PredictResponse response;
        grpc::ClientContext context;
        const grpc::Status status = native->PredictDense(&context, request, &response);
        if (bad) {
          EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
          EXPECT_NE(status.error_message().find("input row 1 is too large"), std::string::npos)
              << status.error_message();
        } else if (!status.ok()) {
          ++good_failed;
        } else if (response.cost().batch_size() > 2) {
          ++mixed;
          EXPECT_EQ(response.cost().flops(), 2 * loaded.dense->info().flops_per_row);
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(good_failed, 0);
  EXPECT_GT(mixed, 0);
}

// A body that is not the method's request message: INVALID_ARGUMENT saying
// it did not parse (gRPC's callback API alone answers UNIMPLEMENTED with no
// message), on every method of both APIs.
TEST_P(RequestParsingTest, AnUndecodableBodyIsInvalidArgumentSayingItDidNotParse) {
  grpc::GenericStub stub(channel_);
  // A field 1 (string) that claims 100 bytes and has 3; then garbage.
  const std::vector<std::string> bodies = {std::string("\x0a\x64" "abc", 5),
                                           std::string("\xff\xff\xff\xff\xff\xff", 6)};
  for (const std::string method :
       {"/sparse.v1.SparseInference/Predict", "/sparse.v1.SparseInference/PredictDense",
        "/sparse.v1.SparseInference/GetModel", "/sparse.v1.SparseInference/ListModels",
        "/inference.GRPCInferenceService/ModelInfer",
        "/inference.GRPCInferenceService/ModelMetadata",
        "/inference.GRPCInferenceService/ModelReady"}) {
    for (const std::string& body : bodies) {
      grpc::Slice slice(body);
      grpc::ByteBuffer request(&slice, 1), response;
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      std::mutex mu;
      std::condition_variable cv;
      bool done = false;
      grpc::Status status;
      stub.UnaryCall(&context, method, grpc::StubOptions(), &request, &response,
                     [&](grpc::Status s) {
                       std::lock_guard<std::mutex> lock(mu);
                       status = std::move(s);
                       done = true;
                       cv.notify_one();
                     });
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return done; });
      EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << method;
      EXPECT_NE(status.error_message().find("did not parse"), std::string::npos)
          << method << ": " << status.error_message();
    }
  }
  // The server goes on answering.
  sparse::v1::ListModelsResponse models;
  grpc::ClientContext context;
  ASSERT_TRUE(sparse::v1::SparseInference::NewStub(channel_)
                  ->ListModels(&context, sparse::v1::ListModelsRequest(), &models)
                  .ok());
  EXPECT_EQ(models.models_size(), 2);
}

// A 64 KiB model name: NOT_FOUND, with the name cut short in the message
// (quoting it whole would overflow gRPC's metadata limit and turn the answer
// into RESOURCE_EXHAUSTED).
TEST_P(RequestParsingTest, AHugeModelNameIsNotFoundWithAShortMessage) {
  const std::string name(64 << 10, 'm');
  auto native = sparse::v1::SparseInference::NewStub(channel_);
  {
    PredictRequest request;
    request.set_model(name);
    request.set_rows(1);
    request.mutable_inputs()->Resize(kD, 0.5f);
    PredictResponse response;
    grpc::ClientContext context;
    const grpc::Status status = native->Predict(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << status.error_message().size();
    EXPECT_LT(status.error_message().size(), 4096u);
    EXPECT_NE(status.error_message().find("more bytes]"), std::string::npos) << status.error_message();
  }
  {
    sparse::v1::GetModelRequest request;
    request.set_model(name);
    sparse::v1::ModelStatus response;
    grpc::ClientContext context;
    EXPECT_EQ(native->GetModel(&context, request, &response).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  auto oip = inference::GRPCInferenceService::NewStub(channel_);
  {
    inference::ModelInferRequest request;
    request.set_model_name(name);
    auto* input = request.add_inputs();
    input->set_name(name);
    input->set_datatype("FP32");
    input->add_shape(1);
    input->add_shape(kD);
    input->mutable_contents()->mutable_fp32_contents()->Resize(kD, 0.5f);
    inference::ModelInferResponse response;
    grpc::ClientContext context;
    EXPECT_EQ(oip->ModelInfer(&context, request, &response).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    // A known model, a huge tensor name and datatype: the error quotes both, cut.
    inference::ModelInferRequest request;
    request.set_model_name("dsm");
    auto* input = request.add_inputs();
    input->set_name(name);
    input->set_datatype(name);
    inference::ModelInferResponse response;
    grpc::ClientContext context;
    const grpc::Status status = oip->ModelInfer(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_LT(status.error_message().size(), 1024u);
  }
}

std::string TestName(const ::testing::TestParamInfo<Precision>& info) {
  return std::string(PrecisionName(info.param));
}
INSTANTIATE_TEST_SUITE_P(Precisions, BatchIsolationTest,
                         ::testing::Values(Precision::kFp32, Precision::kBf16, Precision::kInt8),
                         TestName);
INSTANTIATE_TEST_SUITE_P(Fp32, RequestParsingTest, ::testing::Values(Precision::kFp32), TestName);

}  // namespace
}  // namespace sparse
