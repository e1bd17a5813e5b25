// Fuzzes the request path: the input, decoded as a sparse.v1.PredictRequest
// (first byte even) or an inference.ModelInferRequest (odd), is translated
// by the frontends' own functions (ToInferRequest, TranslateModelInfer) and
// run by the serving core every frontend calls (InferenceCore::Infer),
// against a repository of small real models (an LSH table and a DSM, each
// with its dense twin, both with dynamic batching on). Every request must be
// answered exactly once, with OK and finite outputs of the right size, or
// with an error; never a crash.
//
// First byte with bit 2 set: the batched mode. The rest is up to 8 requests
// separated by "\n--8<--\n", each with its own first byte as above. Each is
// first run alone, inline; then all of them are queued at once behind a
// blocked worker, so they run as dynamic batches (per model and path), and
// each must get what it got alone: a request that succeeded alone (outputs
// well below overflow) must succeed in the batch, with the same FLOPs and,
// for moderate inputs, the same outputs; one that failed must fail with the
// same code. A bad request never fails the requests batched with it.
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

#include "inference/grpc_service.pb.h"
#include "model_store/checkpoint.h"
#include "model_store/model_repository.h"
#include "server/core/inference_core.h"
#include "server/grpc/sparse_v1_messages.h"
#include "server/oip/oip_protocol.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/testing/random_models.h"

namespace {

struct World {
  std::unique_ptr<sparse::ModelRepository> repository;
  std::unique_ptr<sparse::InferenceCore> inline_core;  // every request inline
  std::unique_ptr<sparse::InferenceCore> queued_core;  // every request queued
};

World* MakeWorld() {
  const std::string root = sparse::fuzz::ScratchDir("request_repo");
  if (!std::filesystem::exists(root + "/lsh/1")) {
    sparse::fuzz::WriteSmallModels(root);
    for (const char* model : {"lsh", "dsm"}) {
      std::ofstream(root + "/" + model + "/config.pbtxt")
          << "dynamic_batching { max_batch_rows: 64 max_queue_size: 16 }\n";
    }
  }
  auto* world = new World;
  sparse::ModelRepository::Options options;
  options.max_batch_rows = 64;
  world->repository = *sparse::ModelRepository::Open(root, options, nullptr);
  // Every request runs inline, on this thread: the fuzzer sees each one through.
  world->inline_core = std::make_unique<sparse::InferenceCore>(
      world->repository.get(),
      sparse::InferenceCore::Options{.workers = 1,
                                     .max_queue = 16,
                                     .max_batch_rows = 64,
                                     .inline_max_flops = int64_t{1} << 40,
                                     .observe = nullptr});
  world->queued_core = std::make_unique<sparse::InferenceCore>(
      world->repository.get(), sparse::InferenceCore::Options{.workers = 1,
                                                               .max_queue = 16,
                                                               .max_batch_rows = 64,
                                                               .inline_max_flops = 0,
                                                               .observe = nullptr});
  return world;
}

// One request as a frontend hands it to the core, with the storage its
// inputs point into.
struct Decoded {
  sparse::v1::PredictRequest native;
  std::vector<float> storage;  // OIP raw contents
  sparse::InferRequest request;
};

// Decodes one request (first byte: even native, odd OIP; bit 1 dense for
// native). False if the bytes are not a request the core would be given.
bool Decode(const World& world, absl::string_view bytes, Decoded* out) {
  if (bytes.empty()) return false;
  const uint8_t mode = static_cast<uint8_t>(bytes[0]);
  bytes.remove_prefix(1);
  if (mode % 2 == 0) {
    if (!out->native.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return false;
    out->request = sparse::ToInferRequest(out->native, (mode & 2) != 0);
    return true;
  }
  inference::ModelInferRequest infer;
  if (!infer.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return false;
  absl::StatusOr<sparse::InferRequest> translated =
      sparse::TranslateModelInfer(*world.inline_core, infer, &out->storage);
  if (!translated.ok()) return false;
  out->request = *std::move(translated);
  if (out->storage.empty()) {
    // fp32_contents are not copied: keep them, and point at the copy.
    out->storage.assign(out->request.inputs.begin(), out->request.inputs.end());
  }
  out->request.inputs = out->storage;
  return true;
}

void CheckAnswer(const absl::Status& status, const sparse::InferResponse& response) {
  if (!status.ok()) return;
  if (static_cast<int64_t>(response.outputs.size()) != response.rows * response.output_dim) {
    __builtin_trap();
  }
  for (float v : response.outputs) {
    if (!std::isfinite(v)) __builtin_trap();
  }
}

struct Answer {
  sparse::InferResponse response;
  absl::Status status;
  int answers = 0;
};

void Batched(World& world, absl::string_view input) {
  std::vector<absl::string_view> parts = absl::StrSplit(input, "\n--8<--\n");
  if (parts.size() > 8) parts.resize(8);
  struct Item {
    Decoded decoded;
    Answer alone, batched;
  };
  std::vector<std::unique_ptr<Item>> items;
  for (absl::string_view part : parts) {
    auto item = std::make_unique<Item>();
    if (Decode(world, part, &item->decoded)) items.push_back(std::move(item));
  }
  if (items.empty()) return;
  for (auto& item : items) {
    Answer* alone = &item->alone;
    world.inline_core->Infer(item->decoded.request, &alone->response, [alone](absl::Status s) {
      alone->status = std::move(s);
      ++alone->answers;
    });
    if (alone->answers != 1) __builtin_trap();
    CheckAnswer(alone->status, alone->response);
  }
  // Hold the one worker so every request is queued before any batch forms.
  // Shared: the worker may still be leaving the wait after this returns.
  auto held = std::make_shared<absl::Notification>();
  auto release = std::make_shared<absl::Notification>();
  if (!world.queued_core->pool().Submit([held, release] {
        held->Notify();
        release->WaitForNotification();
      })) {
    __builtin_trap();
  }
  held->WaitForNotification();
  absl::Mutex mu;
  int pending = static_cast<int>(items.size());
  for (auto& item : items) {
    Answer* batched = &item->batched;
    world.queued_core->Infer(item->decoded.request, &batched->response,
                             [batched, &mu, &pending](absl::Status s) {
                               absl::MutexLock lock(&mu);
                               batched->status = std::move(s);
                               ++batched->answers;
                               --pending;
                             });
  }
  release->Notify();
  {
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(+[](int* p) { return *p == 0; }, &pending));
  }
  for (const auto& item : items) {
    const Answer &a = item->alone, &b = item->batched;
    if (b.answers != 1) __builtin_trap();
    CheckAnswer(b.status, b.response);
    // A request with its own timeout (OIP `timeout`, timeout_us) may run out
    // of it on either side: batched it waits behind the held worker, and
    // even alone a timeout of a few microseconds may pass before its check.
    // That is the clock, not another request: nothing more to compare.
    const bool timed = item->decoded.request.timeout != absl::InfiniteDuration();
    if (timed && (a.status.code() == absl::StatusCode::kDeadlineExceeded ||
                  b.status.code() == absl::StatusCode::kDeadlineExceeded)) {
      continue;
    }
    float largest_output = 0, largest_input = 0;
    for (float v : a.response.outputs) largest_output = std::max(largest_output, std::fabs(v));
    for (float v : item->decoded.request.inputs) largest_input = std::max(largest_input, std::fabs(v));
    if (a.status.ok() && largest_output < 1e30f) {
      // Isolation: what succeeded alone succeeds beside any other requests.
      if (!b.status.ok()) __builtin_trap();
      if (b.response.cost.flops != a.response.cost.flops) __builtin_trap();
      if (largest_input <= 1e3f) {
        for (size_t i = 0; i < a.response.outputs.size(); ++i) {
          const float x = a.response.outputs[i], y = b.response.outputs[i];
          if (std::fabs(x - y) > 1e-3f * (1 + std::fabs(x)) * (1 + largest_input)) __builtin_trap();
        }
      }
    }
    // A request that failed alone fails in a batch with the same code
    // (shape, NaN, unknown model, an output that overflows); only an output
    // at the edge of overflow may come out finite from another kernel.
    const bool overflowed = a.status.message().find("too large") != absl::string_view::npos;
    if (!a.status.ok() && b.status.code() != a.status.code() && !(overflowed && b.status.ok())) {
      __builtin_trap();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World* world = MakeWorld();
  if (size < 1) return 0;
  const absl::string_view input(reinterpret_cast<const char*>(data), size);
  if ((data[0] & 4) != 0) {
    Batched(*world, input.substr(1));
    return 0;
  }
  Decoded decoded;
  if (!Decode(*world, input, &decoded)) return 0;
  Answer answer;
  world->inline_core->Infer(decoded.request, &answer.response, [&answer](absl::Status s) {
    answer.status = std::move(s);
    ++answer.answers;
  });
  if (answer.answers != 1) __builtin_trap();
  CheckAnswer(answer.status, answer.response);
  return 0;
}
