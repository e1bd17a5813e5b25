#include "server/grpc/sparse_inference_service.h"

#include <chrono>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/process_cpu.h"
#include "server/grpc/raw_unary.h"

namespace sparse {
namespace {

using Clock = std::chrono::steady_clock;
using sparse::v1::PredictRequest;
using sparse::v1::PredictResponse;

int64_t NanosBetween(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(to - from).count();
}

}  // namespace

void FillModelStatus(const std::string& name, const ModelState& state,
                     sparse::v1::ModelStatus* out) {
  out->set_name(name);
  out->set_serving_version(state.versions.empty() ? 0 : state.versions.rbegin()->first);
  for (const auto& [number, servable] : state.versions) {
    const LoadedModel& m = servable->loaded;
    const ModelInfo& info = m.sparse->info();
    sparse::v1::VersionStatus* v = out->add_versions();
    v->set_version(number);
    v->set_kind(std::string(ModelKindName(info.kind)));
    v->set_description(info.description);
    v->set_input_dim(info.input_dim);
    v->set_output_dim(info.output_dim);
    v->set_flops_per_row(info.flops_per_row);
    v->set_parameters(info.parameters);
    v->set_has_dense(m.dense != nullptr);
    v->set_dense_cost_only(m.dense_cost_only);
    v->set_precision(std::string(PrecisionName(servable->precision)));
    v->set_weight_bytes_per_row(info.weight_bytes_per_row);
    v->set_resident_bytes(ResidentBytes(*servable));
    v->set_model_sha256(servable->loaded.model_sha256);
    if (servable->part.role == ModelPart::Role::kFront) v->set_shards(servable->part.shard.count);
    if (servable->part.role == ModelPart::Role::kShard) v->set_shard(servable->part.shard.ToString());
    if (m.dense != nullptr) {
      v->set_dense_flops_per_row(m.dense->info().flops_per_row);
      v->set_dense_parameters(m.dense->info().parameters);
      v->set_dense_weight_bytes_per_row(m.dense->info().weight_bytes_per_row);
    }
    for (const auto& [key, value] : m.info) (*v->mutable_info())[key] = value;
  }
  for (const auto& [number, failure] : state.failures) {
    sparse::v1::VersionFailure* f = out->add_failed_versions();
    f->set_version(number);
    f->set_error(failure.error);
  }
  out->set_config_error(state.config_error);
}

InferRequest ToInferRequest(const PredictRequest& request, bool dense) {
  InferRequest out;
  out.model = request.model();
  out.version = request.version();
  out.dense = dense;
  out.rows = request.rows();
  out.inputs = absl::MakeConstSpan(request.inputs().data(), request.inputs_size());
  out.return_route = request.return_route();
  return out;
}

void ToPredictResponse(const InferResponse& answer, PredictResponse* response) {
  response->mutable_outputs()->Add(answer.outputs.begin(), answer.outputs.end());
  response->set_model(answer.model);
  response->set_version(answer.version);
  response->set_rows(answer.rows);
  response->set_output_dim(answer.output_dim);
  response->set_dense_cost_only(answer.dense_cost_only);
  sparse::v1::Cost* cost = response->mutable_cost();
  cost->set_flops(answer.cost.flops);
  cost->set_dense_flops(answer.cost.dense_flops);
  cost->set_queue_ns(answer.cost.queue_ns);
  cost->set_route_ns(answer.cost.route_ns);
  cost->set_compute_ns(answer.cost.compute_ns);
  cost->set_total_ns(answer.cost.total_ns);
  cost->set_batch_size(answer.cost.batch_rows);
  cost->set_weight_bytes(answer.cost.weight_bytes);
  cost->set_shards(static_cast<int32_t>(answer.cost.shards));
  cost->set_fanout_ns(answer.cost.fanout_ns);
  if (answer.has_route) {
    const Route& from = answer.route;
    sparse::v1::Route* r = response->mutable_route();
    r->set_keys_per_row(from.keys_per_row);
    r->mutable_bucket_keys()->Add(from.bucket_keys.begin(), from.bucket_keys.end());
    for (uint8_t missed : from.bucket_missed) r->add_bucket_missed(missed != 0);
    r->set_experts_per_row(from.experts_per_row);
    r->mutable_expert_ids()->Add(from.expert_ids.begin(), from.expert_ids.end());
  }
}

SparseInferenceService::SparseInferenceService(const ModelRepository* repository, InferenceCore* core)
    : repository_(repository), core_(core), start_(Clock::now()) {}

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
        for (const auto& [name, state] : *repository_->snapshot()) {
          FillModelStatus(name, state, out->add_models());
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
        const std::shared_ptr<const RepositorySnapshot> snapshot = repository_->snapshot();
        auto it = snapshot->find(r.model());
        // Find() words the error (and lists what is loaded).
        if (it == snapshot->end()) return repository_->Find(r.model(), 0).status();
        FillModelStatus(it->first, it->second, out);
        return absl::OkStatus();
      });
}

}  // namespace sparse
