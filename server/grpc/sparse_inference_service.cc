#include "server/grpc/sparse_inference_service.h"

#include <chrono>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/process_cpu.h"
#include "common/status_macros.h"
#include "server/grpc/raw_unary.h"
#include "server/grpc/sparse_v1_messages.h"

namespace sparse {
namespace {

using Clock = std::chrono::steady_clock;
using sparse::v1::PredictRequest;
using sparse::v1::PredictResponse;

int64_t NanosBetween(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(to - from).count();
}

}  // namespace

SparseInferenceService::SparseInferenceService(InferenceCore* core)
    : core_(core), start_(Clock::now()) {}

grpc::ServerUnaryReactor* SparseInferenceService::Predict(grpc::CallbackServerContext* context,
                                                    const grpc::ByteBuffer* request,
                                                    grpc::ByteBuffer* response) {
  return Infer(context, request, response, /*dense=*/false);
}

grpc::ServerUnaryReactor* SparseInferenceService::PredictDense(grpc::CallbackServerContext* context,
                                                         const grpc::ByteBuffer* request,
                                                         grpc::ByteBuffer* response) {
  return Infer(context, request, response, /*dense=*/true);
}

grpc::ServerUnaryReactor* SparseInferenceService::Infer(grpc::CallbackServerContext* context,
                                                  const grpc::ByteBuffer* request,
                                                  grpc::ByteBuffer* response, bool dense) {
  return ServeUnary<PredictRequest, PredictResponse>(
      context, request, response,
      [this, context, dense](const PredictRequest& r, PredictResponse* out, UnaryDone done,
                             std::chrono::steady_clock::time_point received) {
        // The core's request and answer live until the call is finished.
        struct Call {
          InferRequest request;
          InferResponse answer;
        };
        auto call = std::make_shared<Call>();
        call->request = ToInferRequest(r, dense);
        BindToCall(context, received, &call->request);
        core_->Infer(call->request, &call->answer,
                     [call, out, done = std::move(done)](absl::Status status) {
                       if (status.ok()) ToPredictResponse(call->answer, out);
                       done(status);
                     });
      });
}

grpc::ServerUnaryReactor* SparseInferenceService::Echo(grpc::CallbackServerContext* context,
                                                 const grpc::ByteBuffer* request,
                                                 grpc::ByteBuffer* response) {
  const auto arrival = Clock::now();
  // A model of zero FLOPs: answered on the gRPC thread, like any request
  // under inline_max_flops.
  return ServeUnaryNow<sparse::v1::EchoRequest, sparse::v1::EchoResponse>(
      context, request, response,
      [arrival](const sparse::v1::EchoRequest& r, sparse::v1::EchoResponse* out) {
        out->set_payload(r.payload());
        out->set_queue_ns(NanosBetween(arrival, Clock::now()));
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* SparseInferenceService::GetServerStats(grpc::CallbackServerContext* context,
                                                           const grpc::ByteBuffer* request,
                                                           grpc::ByteBuffer* response) {
  return ServeUnaryNow<sparse::v1::ServerStatsRequest, sparse::v1::ServerStats>(
      context, request, response,
      [this](const sparse::v1::ServerStatsRequest&, sparse::v1::ServerStats* out) {
        const ProcessCpu cpu = ReadProcessCpu();
        out->set_cpu_user_ns(cpu.user_ns);
        out->set_cpu_system_ns(cpu.system_ns);
        out->set_uptime_ns(NanosBetween(start_, Clock::now()));
        out->set_cores(UsableCores());
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* SparseInferenceService::ListModels(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request,
                                                       grpc::ByteBuffer* response) {
  return ServeUnaryNow<sparse::v1::ListModelsRequest, sparse::v1::ListModelsResponse>(
      context, request, response,
      [this](const sparse::v1::ListModelsRequest&, sparse::v1::ListModelsResponse* out) {
        // Residency (mincore) too: model_reads.h, ModelReads::kResidency.
        for (const ModelStatus& model : core_->Models(ModelReads::kResidency)) {
          sparse::v1::ModelStatus* status = out->add_models();
          ToModelStatusProto(model, status);
          status->set_max_batch_rows(core_->max_batch_rows());
        }
        // Directories that serve nothing, with why (a user looks here first).
        for (const auto& [name, why] : core_->NotServed()) {
          sparse::v1::ModelStatus* status = out->add_models();
          status->set_name(name);
          status->set_not_served(why);
          status->set_max_batch_rows(core_->max_batch_rows());
        }
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* SparseInferenceService::GetModel(grpc::CallbackServerContext* context,
                                                     const grpc::ByteBuffer* request,
                                                     grpc::ByteBuffer* response) {
  return ServeUnaryNow<sparse::v1::GetModelRequest, sparse::v1::ModelStatus>(
      context, request, response,
      [this](const sparse::v1::GetModelRequest& r, sparse::v1::ModelStatus* out) -> absl::Status {
        ASSIGN_OR_RETURN(const ModelStatus model,
                         core_->Model(r.model(), ModelReads::kResidency));
        ToModelStatusProto(model, out);
        out->set_max_batch_rows(core_->max_batch_rows());
        return absl::OkStatus();
      });
}

}  // namespace sparse
