// The core's plain structs as sparse.v1 messages and back, for the native
// gRPC frontends (SparseInference, ModelControl, the shard service): each
// conversion is written once here.
#ifndef SPARSE_SERVER_GRPC_SPARSE_V1_MESSAGES_H_
#define SPARSE_SERVER_GRPC_SPARSE_V1_MESSAGES_H_

#include "server/core/infer.h"
#include "server/core/model_reads.h"
#include "sparse/v1/inference.pb.h"
#include "sparse/v1/shard.pb.h"

namespace sparse {

// The sparse.v1.ModelStatus of one model (GetModel, ListModels, LoadModel).
void ToModelStatusProto(const ModelStatus& model, sparse::v1::ModelStatus* out);

// What a request cost (DESIGN.md §1) as sparse.v1.Cost: every field the
// core measured (a shard's answer reads the ones it needs).
void ToCostProto(const InferCost& cost, sparse::v1::Cost* out);

// The core's request for a PredictRequest (its inputs not copied: `request`
// must outlive the returned value).
InferRequest ToInferRequest(const sparse::v1::PredictRequest& request, bool dense);
// The PredictResponse for the core's answer.
void ToPredictResponse(const InferResponse& answer, sparse::v1::PredictResponse* response);

// The core's request for a front's PartialRequest: its route in *given
// (which must outlive the request, like `request`), its checks in
// InferRequest::shard_call.
InferRequest ToInferRequest(const sparse::v1::PartialRequest& request, Route* given);
// The PartialResponse for the core's answer: outputs, misses, cost.
void ToPartialResponse(const InferResponse& answer, sparse::v1::PartialResponse* response);

}  // namespace sparse

#endif  // SPARSE_SERVER_GRPC_SPARSE_V1_MESSAGES_H_
