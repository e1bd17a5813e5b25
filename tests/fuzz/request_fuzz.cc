// Fuzzes the request path: the input, decoded as a sparse.v1.PredictRequest
// (first byte even) or an inference.ModelInferRequest (odd), is admitted and
// run by the same InferenceService::Run the gRPC services call, against a
// repository of small real models (an LSH table and a DSM, each with its
// dense twin). Every request must be answered exactly once, with OK and
// finite outputs of the right size, or with an error; never a crash.
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <memory>

#include "inference/grpc_service.pb.h"
#include "model_store/checkpoint.h"
#include "server/inference_service.h"
#include "server/model_repository.h"
#include "server/oip_service.h"
#include "server/worker_pool.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/testing/random_models.h"

namespace {

using sparse::v1::PredictRequest;
using sparse::v1::PredictResponse;

struct World {
  std::unique_ptr<sparse::ModelRepository> repository;
  std::unique_ptr<sparse::WorkerPool> pool;
  std::unique_ptr<sparse::InferenceService> service;
};

World* MakeWorld() {
  const std::string root = sparse::fuzz::ScratchDir("request_repo");
  if (!std::filesystem::exists(root + "/lsh/1")) {
    sparse::Checkpoint lsh;
    lsh.sparse = sparse::testing::RandomLshTable({.d = 4, .o = 2, .s = 3, .m = 5}, 1);
    lsh.dense = sparse::testing::RandomDense(4, 16, 2, sparse::Activation::kRelu, 2);
    sparse::Checkpoint dsm;
    dsm.sparse = sparse::testing::RandomDsm({.d = 4, .o = 1, .experts = 4, .active_units = 8}, 3);
    dsm.dense = sparse::testing::RandomDense(4, 32, 1, sparse::Activation::kRelu, 4);
    if (!sparse::WriteCheckpoint(root + "/lsh", 1, lsh).ok() ||
        !sparse::WriteCheckpoint(root + "/dsm", 1, dsm).ok()) {
      __builtin_trap();
    }
  }
  auto* world = new World;
  sparse::ModelRepository::Options options;
  options.max_batch_rows = 64;
  world->repository = *sparse::ModelRepository::Open(root, options, nullptr);
  world->pool = std::make_unique<sparse::WorkerPool>(1, 16);
  // Every request runs inline, on this thread: the fuzzer sees each one
  // through. (No gRPC context exists here; only queued requests read it.)
  world->service = std::make_unique<sparse::InferenceService>(
      world->repository.get(), world->pool.get(),
      sparse::InferenceService::Options{.max_batch_rows = 64,
                                        .inline_max_flops = int64_t{1} << 40,
                                        .metrics = nullptr});
  return world;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World* world = MakeWorld();
  if (size < 1) return 0;
  PredictRequest request;
  bool dense = false;
  if (data[0] % 2 == 0) {
    if (!request.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
    dense = (data[0] & 2) != 0;
  } else {
    inference::ModelInferRequest infer;
    if (!infer.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
    absl::StatusOr<bool> translated = sparse::TranslateModelInfer(*world->repository, infer, &request);
    if (!translated.ok()) return 0;
    dense = *translated;
  }
  PredictResponse response;
  int answers = 0;
  grpc::Status status;
  world->service->Run(nullptr, &request, &response, dense, [&](grpc::Status s) {
    status = std::move(s);
    ++answers;
  });
  if (answers != 1) __builtin_trap();
  if (status.ok()) {
    if (response.outputs_size() != response.rows() * response.output_dim()) __builtin_trap();
    for (float v : response.outputs()) {
      if (!std::isfinite(v)) __builtin_trap();
    }
  }
  return 0;
}
