// The serving core's request and response: plain structs, no protocol.
//
// A frontend (native gRPC, Open Inference Protocol, an in-process caller)
// translates its protocol's request into an InferRequest, hands it to
// InferenceCore::Infer with an InferResponse to fill, and translates the
// response back once `done` has run (server/core/inference_core.h).
#ifndef SPARSE_SERVER_CORE_INFER_H_
#define SPARSE_SERVER_CORE_INFER_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "engine/model.h"
#include "engine/precision.h"
#include "server/core/model_reads.h"

namespace sparse {

struct InferRequest {
  std::string model;
  int64_t version = 0;  // 0: the newest loaded
  bool dense = false;   // the dense twin instead of the routed sparse path
  int64_t rows = 0;
  // rows x input_dim floats, row-major. Not owned: the caller keeps them
  // alive until `done` has run.
  absl::Span<const float> inputs;
  bool return_route = false;  // fill InferResponse::route (sparse path only)
  // A request still queued at its deadline, or whose caller has left, is
  // answered DEADLINE_EXCEEDED / CANCELLED before any compute.
  absl::Time deadline = absl::InfiniteFuture();
  std::function<bool()> cancelled;  // may be empty: never cancelled
  // OIP's `timeout` parameter (and the native API's timeout_us): a request
  // still queued this long after it arrived is answered DEADLINE_EXCEEDED,
  // as at `deadline` (the earlier of the two counts). The only deadline a
  // REST request has.
  absl::Duration timeout = absl::InfiniteDuration();
  // Its priority level, as Triton's: 1 is the highest, 0 means the model's
  // dynamic_batching.default_priority_level. A model with priority_levels
  // set refuses a level above them; one without ignores it. Requests wait
  // for a worker, and in a batching queue, highest level first.
  uint32_t priority = 0;
  // Time the frontend spent decoding its protocol's request into this one;
  // counted as the request's compute_input (server/core/statistics.h).
  int64_t decode_ns = 0;
  // A shard's part of a sharded model computes for the route its front
  // gives (engine/model.h, PredictOptions::given); required for such a
  // model, refused by any other. Not owned, like `inputs`.
  const Route* given_route = nullptr;
  // The version this request runs on, when the frontend resolved it already
  // (InferenceCore::Resolve, to decode the request): the core then uses it,
  // and its path, instead of looking `model` and `version` up again.
  ModelHandle resolved;
  // A front's call to this server's part of a sharded model
  // (sparse.v1.ShardService). Admission checks that this server is the shard
  // the front means (InferenceCore::Options::shard) and serves the same
  // version (>= 1), precision and files, and marks the version used so it is
  // retained while fronts route with it. With rows == 0 it is a front's
  // keep-alive: answered OK once checked, and not counted as a request.
  struct ShardCall {
    int shard_index = 0;
    int shard_count = 0;
    Precision precision = Precision::kFp32;
    std::string model_sha256;  // empty: not compared
  };
  std::optional<ShardCall> shard_call;
};

// What one request cost (DESIGN.md §1). In a batch, FLOPs are the request's
// own rows' share (every row of a model costs the same); times are the
// batch's.
struct InferCost {
  int64_t flops = 0;        // arithmetic the kernels executed for this request
  int64_t dense_flops = 0;  // what the dense baseline costs for the same rows
  int64_t queue_ns = 0;     // from arrival to the start of its compute
  int64_t route_ns = 0;     // hashing / routing
  int64_t compute_ns = 0;   // the selected slice, bucket values or dense layers
  int64_t total_ns = 0;     // from arrival to the answer being ready
  int64_t batch_rows = 0;   // rows computed together with this request's rows
  // Weight bytes the kernels read: the request's share, by rows, of its
  // batch's (docs/checkpoint-format.md, "Bytes each path reads").
  int64_t weight_bytes = 0;
  // A sharded model (docs/deploy.md): the shards its batch called, and the
  // wall time from the first call to the last answer. FLOPs, bytes and
  // compute_ns include the shards' own.
  int64_t shards = 0;
  int64_t fanout_ns = 0;
  // Major page faults the batch's compute took (getrusage RUSAGE_THREAD on
  // the thread that computed it, common/page_faults.h), this request's share
  // by rows as for weight_bytes: a batch's faults may come from any of its
  // requests' slices. A sharded model's include the shards' own.
  int64_t major_faults = 0;
};

struct InferResponse {
  std::string model;
  int64_t version = 0;
  int64_t rows = 0;
  int64_t output_dim = 0;
  // A dense answer computed from the DSM's own weights unmasked (no trained
  // twin): its cost is the baseline's, its outputs are not a baseline model's.
  bool dense_cost_only = false;
  std::vector<float> outputs;  // rows x output_dim, row-major
  bool has_route = false;      // route holds this request's rows only
  Route route;
  InferCost cost;
};

// Completion: called exactly once, from the caller's thread (a request
// answered at once) or from a worker. After it returns the core no longer
// touches the request or the response.
using InferDone = std::function<void(absl::Status)>;

}  // namespace sparse

#endif  // SPARSE_SERVER_CORE_INFER_H_
