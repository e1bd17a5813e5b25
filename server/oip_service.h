// OipService: the Open Inference Protocol (inference.GRPCInferenceService,
// proto/inference/grpc_service.proto) over the same models and the same
// request path as sparse.v1 (DESIGN.md §4), with Triton's model
// configuration, statistics and repository extensions (docs/api.md).
//
// - Model `m` is the routed sparse path; `m.dense` is its dense twin.
// - ModelInfer takes one FP32 input tensor of shape [rows, d] (or [d] for one
//   row), its data either in contents.fp32_contents or in
//   raw_input_contents[0] (little-endian floats), and answers one FP32 output
//   tensor "output" of shape [rows, o] in raw_output_contents[0]. The
//   request's cost goes into the response parameters: flops, dense_flops,
//   compute_ns (route + compute), queue_ns.
// - Versions are decimal strings; empty means the newest loaded.
// - ModelConfig describes a version as a Triton ModelConfig; ModelStatistics
//   reports the core's per-version statistics (server/core/statistics.h);
//   RepositoryIndex lists every model directory and version with its state;
//   RepositoryModelLoad / Unload are the model-control life cycle, refused
//   (FAILED_PRECONDITION) unless sparse-server runs with --model_control.
//
// Thread-safe; the repository, the core and the model control must outlive
// it.
#ifndef SPARSE_SERVER_OIP_SERVICE_H_
#define SPARSE_SERVER_OIP_SERVICE_H_

#include <vector>

#include "absl/status/statusor.h"
#include "inference/grpc_service.grpc.pb.h"
#include "server/core/inference_core.h"
#include "server/core/model_control.h"
#include "model_store/model_repository.h"

namespace sparse {

// The core's request a ModelInferRequest stands for. Inputs given in
// contents.fp32_contents are not copied (`request` must outlive the result);
// raw_input_contents are copied into *storage (bytes carry no alignment).
// Requested outputs must name `output`; request parameters Triton's clients
// send are ignored when harmless (priority, timeout, the HTTP binary-data
// ones) and refused when they would change the answer's meaning (sequence
// batching, classification, shared memory).
// Errors are those ModelInfer answers (NOT_FOUND, INVALID_ARGUMENT with what
// was expected). Used by ModelInfer and by the request fuzzer.
absl::StatusOr<InferRequest> TranslateModelInfer(const ModelRepository& repository,
                                                 const inference::ModelInferRequest& request,
                                                 std::vector<float>* storage);

// The ModelInferResponse for the core's answer to `request`: one FP32
// output tensor [rows, output_dim] whose values are raw_output_contents[0]
// (little-endian floats, as Triton answers), and the cost in `parameters`
// (flops, dense_flops, compute_ns = route + compute, queue_ns).
void ToModelInferResponse(const inference::ModelInferRequest& request, const InferResponse& answer,
                          inference::ModelInferResponse* out);

// Every method is registered raw and parses its own request body
// (server/raw_unary.h), so a body that does not parse gets INVALID_ARGUMENT.
using OipRawService = inference::GRPCInferenceService::WithRawCallbackMethod_ServerLive<
    inference::GRPCInferenceService::WithRawCallbackMethod_ServerReady<
        inference::GRPCInferenceService::WithRawCallbackMethod_ModelReady<
            inference::GRPCInferenceService::WithRawCallbackMethod_ServerMetadata<
                inference::GRPCInferenceService::WithRawCallbackMethod_ModelMetadata<
                    inference::GRPCInferenceService::WithRawCallbackMethod_ModelInfer<
                        inference::GRPCInferenceService::WithRawCallbackMethod_ModelConfig<
                            inference::GRPCInferenceService::WithRawCallbackMethod_ModelStatistics<
                                inference::GRPCInferenceService::WithRawCallbackMethod_RepositoryIndex<
                                    inference::GRPCInferenceService::
                                        WithRawCallbackMethod_RepositoryModelLoad<
                                            inference::GRPCInferenceService::
                                                WithRawCallbackMethod_RepositoryModelUnload<
                                                    inference::GRPCInferenceService::
                                                        Service>>>>>>>>>>>;

// The Triton ModelConfig of one path of a loaded version, named `name`
// ("m" or "m.dense"), as ModelConfig answers it.
void ToTritonModelConfig(const std::string& name, const Servable& servable, bool dense,
                         const sparse::v1::ModelConfig& config, const InferenceCore& core,
                         inference::ModelConfig* out);

class OipService final : public OipRawService {
 public:
  // `control` is null when sparse-server runs without --model_control.
  OipService(const ModelRepository* repository, InferenceCore* core, ModelControl* control);

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* context,
                                        const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* context,
                                           const grpc::ByteBuffer* request,
                                           grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ModelConfig(grpc::CallbackServerContext* context,
                                        const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ModelStatistics(grpc::CallbackServerContext* context,
                                            const grpc::ByteBuffer* request,
                                            grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* RepositoryIndex(grpc::CallbackServerContext* context,
                                            const grpc::ByteBuffer* request,
                                            grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* RepositoryModelLoad(grpc::CallbackServerContext* context,
                                                const grpc::ByteBuffer* request,
                                                grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* RepositoryModelUnload(grpc::CallbackServerContext* context,
                                                  const grpc::ByteBuffer* request,
                                                  grpc::ByteBuffer* response) override;

 private:
  const ModelRepository* const repository_;
  InferenceCore* const core_;
  ModelControl* const control_;
};

}  // namespace sparse

#endif  // SPARSE_SERVER_OIP_SERVICE_H_
