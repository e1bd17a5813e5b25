#include "server/grpc/sparse_v1_messages.h"

#include <string>

#include "engine/precision.h"

namespace sparse {

void ToModelStatusProto(const ModelStatus& model, sparse::v1::ModelStatus* out) {
  out->set_name(model.name);
  out->set_serving_version(model.versions.empty() ? 0 : model.versions.back().version);
  for (const VersionStatus& version : model.versions) {
    const ModelInfo& info = version.sparse;
    sparse::v1::VersionStatus* v = out->add_versions();
    v->set_version(version.version);
    v->set_kind(std::string(ModelKindName(info.kind)));
    v->set_description(info.description);
    v->set_input_dim(info.input_dim);
    v->set_output_dim(info.output_dim);
    v->set_flops_per_row(info.flops_per_row);
    v->set_parameters(info.parameters);
    v->set_has_dense(version.dense.has_value());
    v->set_dense_cost_only(version.dense_cost_only);
    v->set_precision(std::string(PrecisionName(version.precision)));
    v->set_weight_bytes_per_row(info.weight_bytes_per_row);
    v->set_resident_bytes(version.resident_bytes);
    v->set_model_sha256(version.model_sha256);
    v->set_mapped_bytes(version.mapped_bytes);
    v->set_mapped_resident_bytes(version.mapped_resident_bytes);
    v->set_weight_cache_file(version.weight_cache_file);
    v->set_weight_verify(version.weight_verify);
    v->set_experts(version.experts);
    v->set_expert_bytes(version.expert_bytes);
    v->mutable_expert_resident_bytes()->Add(version.expert_resident_bytes.begin(),
                                            version.expert_resident_bytes.end());
    if (version.shards > 0) v->set_shards(static_cast<int32_t>(version.shards));
    if (!version.shard.empty()) v->set_shard(version.shard);
    if (version.dense.has_value()) {
      v->set_dense_flops_per_row(version.dense->flops_per_row);
      v->set_dense_parameters(version.dense->parameters);
      v->set_dense_weight_bytes_per_row(version.dense->weight_bytes_per_row);
    }
    for (const auto& [key, value] : version.info) (*v->mutable_info())[key] = value;
  }
  for (const auto& [number, error] : model.failures) {
    sparse::v1::VersionFailure* f = out->add_failed_versions();
    f->set_version(number);
    f->set_error(error);
  }
  out->set_config_error(model.config_error);
}

void ToCostProto(const InferCost& cost, sparse::v1::Cost* out) {
  out->set_flops(cost.flops);
  out->set_dense_flops(cost.dense_flops);
  out->set_queue_ns(cost.queue_ns);
  out->set_route_ns(cost.route_ns);
  out->set_compute_ns(cost.compute_ns);
  out->set_total_ns(cost.total_ns);
  out->set_batch_size(cost.batch_rows);
  out->set_weight_bytes(cost.weight_bytes);
  out->set_shards(static_cast<int32_t>(cost.shards));
  out->set_fanout_ns(cost.fanout_ns);
  out->set_major_faults(cost.major_faults);
}

InferRequest ToInferRequest(const sparse::v1::PredictRequest& request, bool dense) {
  InferRequest out;
  out.model = request.model();
  out.version = request.version();
  out.dense = dense;
  out.rows = request.rows();
  out.inputs = absl::MakeConstSpan(request.inputs().data(), request.inputs_size());
  out.return_route = request.return_route();
  out.priority = request.priority();
  // Beyond ~292 years, no timeout.
  if (request.timeout_us() > 0 && request.timeout_us() < (uint64_t{1} << 62)) {
    out.timeout = absl::Microseconds(static_cast<int64_t>(request.timeout_us()));
  }
  return out;
}

void ToPredictResponse(const InferResponse& answer, sparse::v1::PredictResponse* response) {
  response->mutable_outputs()->Add(answer.outputs.begin(), answer.outputs.end());
  response->set_model(answer.model);
  response->set_version(answer.version);
  response->set_rows(answer.rows);
  response->set_output_dim(answer.output_dim);
  response->set_dense_cost_only(answer.dense_cost_only);
  ToCostProto(answer.cost, response->mutable_cost());
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

InferRequest ToInferRequest(const sparse::v1::PartialRequest& request, Route* given) {
  given->experts_per_row = request.experts_per_row();
  given->expert_ids.assign(request.expert_ids().begin(), request.expert_ids().end());
  given->chunk_rows.assign(request.chunk_rows().begin(), request.chunk_rows().end());
  given->keys_per_row = request.keys_per_row();
  given->bucket_keys.assign(request.bucket_keys().begin(), request.bucket_keys().end());
  InferRequest out;
  out.model = request.model();
  out.version = request.version();
  out.rows = request.rows();
  out.inputs = absl::MakeConstSpan(request.inputs().data(), request.inputs().size());
  out.given_route = given;
  out.return_route = request.keys_per_row() > 0;  // the misses
  out.shard_call = InferRequest::ShardCall{
      .shard_index = request.shard_index(),
      .shard_count = request.shard_count(),
      .precision = static_cast<Precision>(request.precision()),
      .model_sha256 = request.model_sha256(),
  };
  return out;
}

void ToPartialResponse(const InferResponse& answer, sparse::v1::PartialResponse* response) {
  response->mutable_outputs()->Add(answer.outputs.begin(), answer.outputs.end());
  if (answer.has_route && !answer.route.bucket_missed.empty()) {
    response->set_bucket_missed(answer.route.bucket_missed.data(),
                                answer.route.bucket_missed.size());
  }
  ToCostProto(answer.cost, response->mutable_cost());
}

}  // namespace sparse
