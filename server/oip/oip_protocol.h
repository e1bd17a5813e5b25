// OipProtocol: the Open Inference Protocol's calls (KServe v2, with
// Triton's model configuration, statistics and repository extensions) over
// the serving core and the model control, on the protocol's
// protobuf messages (proto/inference/grpc_service.proto) and free of any
// transport. Its two frontends only carry them: gRPC (server/grpc/oip_grpc_service.h)
// and HTTP/REST (server/http/rest_frontend.h, the messages as KServe's JSON).
//
// - Model `m` is the routed sparse path; `m.dense` is its dense twin.
// - ModelInfer takes one FP32 input tensor named "input", of shape [rows, d]
//   (or [d] for one row), its data either in contents.fp32_contents or in
//   raw_input_contents[0] (little-endian floats), and answers one FP32 output
//   tensor "output" of shape [rows, o] in raw_output_contents[0]. The
//   request's cost goes into the response parameters: flops, dense_flops,
//   compute_ns (route + compute), queue_ns, total_ns (arrival to answer).
// - Versions are decimal strings; empty means the newest loaded.
// - ModelConfig describes a version as a Triton ModelConfig; ModelStatistics
//   reports the core's per-version statistics (server/core/statistics.h);
//   RepositoryIndex lists every model directory and version with its state;
//   RepositoryModelLoad / Unload are the model-control life cycle, refused
//   (FAILED_PRECONDITION) unless sparse-server runs with --model_control.
// docs/api.md has the tables.
//
// Models are read through the core's read API (server/core/model_reads.h).
// Thread-safe; the core and the model control must outlive it.
#ifndef SPARSE_SERVER_OIP_OIP_PROTOCOL_H_
#define SPARSE_SERVER_OIP_OIP_PROTOCOL_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "inference/grpc_service.pb.h"
#include "server/core/inference_core.h"
#include "server/core/model_control.h"

namespace sparse {

// ServerMetadata.extensions: Triton's names for exactly what is served
// (binary_tensor_data is the HTTP/REST port's; gRPC has raw contents).
inline constexpr const char* kExtensions[] = {"model_configuration", "model_repository",
                                              "statistics", "parameters", "binary_tensor_data"};

// How the caller's protocol spells a ModelInferRequest, so that an error
// names the field the caller wrote: gRPC sends the protobuf message itself
// (`contents.fp32_contents`, `raw_input_contents[0]`); REST sends KServe's
// JSON, which the REST frontend translates into it (`data`, an input's
// `binary_data_size` bytes after the JSON).
enum class OipEncoding { kProtobuf, kJson };

// The core's request a ModelInferRequest stands for. Inputs given in
// contents.fp32_contents are not copied (`request` must outlive the result);
// raw_input_contents are copied into *storage (bytes carry no alignment).
// The one input must be named `input` (as ModelMetadata and ModelConfig
// say) and hold at most the core's max_batch_rows() rows.
// Requested outputs must name `output`; request parameters Triton's clients
// send are ignored when harmless (priority, timeout, the HTTP binary-data
// ones) and refused when they would change the answer's meaning (sequence
// batching, classification, shared memory).
// Errors are those ModelInfer answers (NOT_FOUND, INVALID_ARGUMENT with what
// was expected, naming fields as `encoding` spells them). Used by
// ModelInfer and by the request fuzzer.
absl::StatusOr<InferRequest> TranslateModelInfer(
    const InferenceCore& core, const inference::ModelInferRequest& request,
    std::vector<float>* storage, OipEncoding encoding = OipEncoding::kProtobuf);

// The ModelInferResponse for the core's answer to `request`: one FP32
// output tensor [rows, output_dim] whose values are raw_output_contents[0]
// (little-endian floats, as Triton answers), and the cost in `parameters`
// (flops, dense_flops, compute_ns = route + compute, queue_ns).
void ToModelInferResponse(const inference::ModelInferRequest& request, const InferResponse& answer,
                          inference::ModelInferResponse* out);

// The Triton ModelConfig of one path of a loaded version, named `name`
// ("m" or "m.dense"). REQUIRES: version.dense when `dense`.
void ToTritonModelConfig(const std::string& name, const VersionStatus& version, bool dense,
                         const sparse::v1::ModelConfig& config, const InferenceCore& core,
                         inference::ModelConfig* out);

class OipProtocol {
 public:
  // `control` is null when sparse-server runs without --model_control.
  OipProtocol(InferenceCore* core, ModelControl* control);

  // The calls that answer at once. Errors as docs/api.md lists them.
  absl::Status ServerLive(const inference::ServerLiveRequest& r,
                          inference::ServerLiveResponse* out) const;
  absl::Status ServerReady(const inference::ServerReadyRequest& r,
                           inference::ServerReadyResponse* out) const;
  absl::Status ModelReady(const inference::ModelReadyRequest& r,
                          inference::ModelReadyResponse* out) const;
  absl::Status ServerMetadata(const inference::ServerMetadataRequest& r,
                              inference::ServerMetadataResponse* out) const;
  absl::Status ModelMetadata(const inference::ModelMetadataRequest& r,
                             inference::ModelMetadataResponse* out) const;
  absl::Status ModelConfig(const inference::ModelConfigRequest& r,
                           inference::ModelConfigResponse* out) const;
  absl::Status ModelStatistics(const inference::ModelStatisticsRequest& r,
                               inference::ModelStatisticsResponse* out) const;
  absl::Status RepositoryIndex(const inference::RepositoryIndexRequest& r,
                               inference::RepositoryIndexResponse* out) const;
  absl::Status RepositoryModelUnload(const inference::RepositoryModelUnloadRequest& r,
                                     inference::RepositoryModelUnloadResponse* out);

  // Runs the request through the core; `done` runs once, from this thread or
  // a worker, after *out is filled (on OK). `bind` gives the transport's
  // deadline, cancellation and decode time to the core's request. `r` and
  // `out` must live until `done`. Errors name fields as `encoding` spells
  // them (the caller's protocol).
  void ModelInfer(const inference::ModelInferRequest& r, OipEncoding encoding,
                  inference::ModelInferResponse* out,
                  const std::function<void(InferRequest*)>& bind, InferDone done);
  // The widest input (d) of the loaded versions of the model `name` names
  // ("m" or "m.dense"); 0 when none is loaded.
  int64_t InputWidth(absl::string_view name) const;

  // Loads on the model control's loader thread; `done` runs there.
  void RepositoryModelLoad(const inference::RepositoryModelLoadRequest& r, InferDone done);

 private:
  InferenceCore* const core_;
  ModelControl* const control_;
};

}  // namespace sparse

#endif  // SPARSE_SERVER_OIP_OIP_PROTOCOL_H_
