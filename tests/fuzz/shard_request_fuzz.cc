// Fuzzes a shard's handling of a front's call (sparse.v1.ShardService's
// ComputePartial): the input, after its first byte, is decoded as a
// sparse.v1.PartialRequest, translated by the shard frontend's own function
// (ToInferRequest) and run by the serving core, whose admission checks the
// call (shard index, version, precision, files: InferRequest::shard_call)
// and its route (expert ids, bucket keys), against a shard server's
// repository: shard 0 of 2 of small real models, an LSH table "lsh" and a
// DSM "dsm". With the first byte odd the call is aimed right (this shard, its
// version, precision and SHA-256), so the fuzzer reaches the route's checks
// and the compute; even, it is run as sent. Every call must be answered
// exactly once, with OK and outputs of rows x o values (none for a
// keep-alive; non-finite sums included, which the front checks), or with an
// error; never a crash.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "model_store/model_repository.h"
#include "server/core/inference_core.h"
#include "server/grpc/sparse_v1_messages.h"
#include "sparse/v1/shard.pb.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

constexpr sparse::ShardSpec kShard{.index = 0, .count = 2};

struct World {
  std::unique_ptr<sparse::ModelRepository> repository;
  std::unique_ptr<sparse::InferenceCore> core;  // every call inline
};

World* MakeWorld() {
  const std::string root = sparse::fuzz::ScratchDir("shard_request_repo");
  sparse::fuzz::WriteSmallModels(root);
  auto* world = new World;
  sparse::ModelRepository::Options options;
  options.max_batch_rows = 64;
  options.part = {.role = sparse::ModelPart::Role::kShard, .shard = kShard};
  world->repository = *sparse::ModelRepository::Open(root, options, nullptr);
  world->core = std::make_unique<sparse::InferenceCore>(
      world->repository.get(), sparse::InferenceCore::Options{.workers = 1,
                                                               .max_queue = 16,
                                                               .max_batch_rows = 64,
                                                               .inline_max_flops = int64_t{1} << 40,
                                                               .observe = nullptr,
                                                               .shard = kShard});
  return world;
}

// Aims `request` at this shard's version of its model, as a front would.
void AimRight(const World& world, sparse::v1::PartialRequest* request) {
  request->set_shard_index(kShard.index);
  request->set_shard_count(kShard.count);
  absl::StatusOr<sparse::ModelStatus> model = world.core->Model(request->model());
  if (!model.ok() || model->versions.empty()) return;
  const sparse::VersionStatus& version = model->versions.back();
  request->set_version(version.version);
  request->set_precision(static_cast<sparse::v1::Precision>(version.precision));
  request->set_model_sha256(version.model_sha256);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World* world = MakeWorld();
  if (size < 1) return 0;
  sparse::v1::PartialRequest partial;
  if (!partial.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
  if (data[0] % 2 == 1) AimRight(*world, &partial);
  sparse::Route given;
  const sparse::InferRequest request = sparse::ToInferRequest(partial, &given);
  sparse::InferResponse response;
  absl::Status status;
  int answers = 0;
  world->core->Infer(request, &response, [&](absl::Status s) {
    status = std::move(s);
    ++answers;
  });
  if (answers != 1) __builtin_trap();  // inline: answered before Infer returns
  if (!status.ok() || partial.rows() == 0) return 0;
  // A shard's partial sums go back as computed, Inf included (the front
  // checks the sums, so its error names the client's row): only the size is
  // the shard's to keep.
  if (static_cast<int64_t>(response.outputs.size()) != partial.rows() * response.output_dim) {
    __builtin_trap();
  }
  sparse::v1::PartialResponse out;
  sparse::ToPartialResponse(response, &out);
  return 0;
}
