#include "server/oip/oip_protocol.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <memory>
#include <map>
#include <set>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "common/client_text.h"
#include "common/status_macros.h"

namespace sparse {
namespace {

constexpr absl::string_view kDenseSuffix = ".dense";

// "m" or "m.dense", and a version string, as the native API names them.
struct Target {
  std::string model;
  int64_t version = 0;  // 0: the newest
  bool dense = false;
};

absl::StatusOr<Target> ParseTarget(absl::string_view name, absl::string_view version) {
  Target t;
  t.dense = absl::ConsumeSuffix(&name, kDenseSuffix);
  t.model = std::string(name);
  if (!version.empty() && (!absl::SimpleAtoi(version, &t.version) || t.version < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model version must be a positive integer or empty, got '", ClientText(version), "'"));
  }
  return t;
}

// The version and path a target names; NOT_FOUND / UNAVAILABLE as the
// native API.
absl::StatusOr<ModelHandle> FindTarget(const InferenceCore& core, const Target& t) {
  ASSIGN_OR_RETURN(ModelHandle found, core.Resolve(t.model, t.version));
  if (t.dense && !found.has_dense()) {
    return absl::NotFoundError(absl::StrCat("model '", ClientText(t.model),
                                            "' has no dense twin, so '", ClientText(t.model),
                                            kDenseSuffix, "' does not exist"));
  }
  return found.Path(t.dense);
}

inference::InferParameter Int64Param(int64_t v) {
  inference::InferParameter p;
  p.set_int64_param(v);
  return p;
}

// Whether a parameter is set to something other than its "off" value
// (false, 0, 0.0, ""), whichever of the protocol's types carries it: REST
// sends a positive JSON integer as uint64 and a fraction as double, and
// Triton's clients send a string sequence ID as a string.
bool IsSet(const inference::InferParameter& p) {
  switch (p.parameter_choice_case()) {
    case inference::InferParameter::kBoolParam:
      return p.bool_param();
    case inference::InferParameter::kInt64Param:
      return p.int64_param() != 0;
    case inference::InferParameter::kUint64Param:
      return p.uint64_param() != 0;
    case inference::InferParameter::kDoubleParam:
      return p.double_param() != 0.0;  // NaN too
    case inference::InferParameter::kStringParam:
      return !p.string_param().empty();
    case inference::InferParameter::PARAMETER_CHOICE_NOT_SET:
      return false;
  }
  return false;
}

// A request parameter that must be a whole number >= 0 (`priority`, and
// `timeout` in microseconds): absent is 0. REST sends a JSON integer as
// uint64 (int64 when negative), gRPC clients either.
absl::StatusOr<uint64_t> WholeParam(const inference::ModelInferRequest& in, const char* key) {
  auto it = in.parameters().find(key);
  if (it == in.parameters().end()) return 0;
  const inference::InferParameter& p = it->second;
  switch (p.parameter_choice_case()) {
    case inference::InferParameter::kUint64Param:
      return p.uint64_param();
    case inference::InferParameter::kInt64Param:
      if (p.int64_param() >= 0) return static_cast<uint64_t>(p.int64_param());
      return absl::InvalidArgumentError(absl::StrCat(
          "parameter '", key, "' must be a whole number >= 0, got ", p.int64_param()));
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "parameter '", key, "' must be a whole number >= 0 (an integer parameter), got ",
          ClientText(p.ShortDebugString())));
  }
}

// `priority` (a level, 1 the highest; 0 the model's default) and `timeout`
// (microseconds a request may wait before DEADLINE_EXCEEDED; 0 none), into
// the core's request.
absl::Status ReadAdmission(const inference::ModelInferRequest& in, InferRequest* out) {
  ASSIGN_OR_RETURN(const uint64_t priority, WholeParam(in, "priority"));
  ASSIGN_OR_RETURN(const uint64_t timeout_us, WholeParam(in, "timeout"));
  if (priority > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("parameter 'priority' is a priority level (1 is the highest), got ", priority));
  }
  out->priority = static_cast<uint32_t>(priority);
  // Beyond ~292 years, no timeout.
  if (timeout_us > 0 && timeout_us < (uint64_t{1} << 62)) {
    out->timeout = absl::Microseconds(static_cast<int64_t>(timeout_us));
  }
  return absl::OkStatus();
}

// The request's parameters and requested outputs, as Triton's clients send
// them. Kept: the one output, `output`, asked for by name; `priority` and
// `timeout` (ReadAdmission). Ignored, being harmless here: binary_data /
// binary_data_output / binary_data_size (HTTP encodings), and anything else
// unknown. Refused,
// since they would change what the answer means: sequence batching
// (sequence_id, sequence_start, sequence_end), classification outputs and
// shared-memory tensors.
absl::Status CheckRequestOptions(const inference::ModelInferRequest& in) {
  for (const char* key : {"sequence_id", "sequence_start", "sequence_end"}) {
    auto it = in.parameters().find(key);
    if (it != in.parameters().end() && IsSet(it->second)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "parameter '", key, "': sequence batching is not supported (the models are stateless)"));
    }
  }
  auto refuse_shared_memory = [](const auto& parameters, absl::string_view tensor) -> absl::Status {
    for (const char* key :
         {"shared_memory_region", "shared_memory_byte_size", "shared_memory_offset"}) {
      auto it = parameters.find(key);
      if (it != parameters.end() && IsSet(it->second)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor '", ClientText(tensor), "': shared-memory tensors are not supported; send ",
            "the data in the request"));
      }
    }
    return absl::OkStatus();
  };
  for (const auto& input : in.inputs()) {
    RETURN_IF_ERROR(refuse_shared_memory(input.parameters(), input.name()));
  }
  for (const auto& output : in.outputs()) {
    if (output.name() != "output") {
      return absl::InvalidArgumentError(absl::StrCat("unknown output '", ClientText(output.name()),
                                                     "': the model has one output, 'output'"));
    }
    auto classification = output.parameters().find("classification");
    if (classification != output.parameters().end() && IsSet(classification->second)) {
      return absl::InvalidArgumentError(
          "output 'output': classification is not supported; the outputs are regression values");
    }
    RETURN_IF_ERROR(refuse_shared_memory(output.parameters(), output.name()));
  }
  return absl::OkStatus();
}

// Where an input tensor's values go in each encoding, as errors name them.
struct InputFields {
  absl::string_view values;  // typed values
  absl::string_view raw;     // bytes: little-endian floats
  absl::string_view one_place;  // "give them in one place, not both"
};

const InputFields& FieldsOf(OipEncoding encoding) {
  static constexpr InputFields kProtobuf = {
      "inputs[0].contents.fp32_contents", "raw_input_contents[0]",
      "give the input either in raw_input_contents (one entry) or in contents, not both"};
  static constexpr InputFields kJson = {
      "inputs[0].data", "inputs[0].parameters.binary_data_size",
      "give inputs[0] either its data or binary data (binary_data_size), not both"};
  return encoding == OipEncoding::kJson ? kJson : kProtobuf;
}

// The rows the one input tensor of `in` holds, for a model of `input_dim`
// inputs: its name, datatype and shape as ModelMetadata gives them, and at
// most the core's max_batch_rows() rows.
absl::StatusOr<int64_t> InputRows(const InferenceCore& core,
                                  const inference::ModelInferRequest& in, int64_t input_dim) {
  if (in.inputs_size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected exactly 1 input tensor (FP32, shape [rows, ", input_dim, "]), got ",
                     in.inputs_size()));
  }
  const auto& input = in.inputs(0);
  if (input.name() != "input") {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown input '", ClientText(input.name()), "': model '", ClientText(in.model_name()),
        "' has one input, 'input' (FP32, shape [rows, ", input_dim, "]), as its metadata says"));
  }
  if (input.datatype() != "FP32") {
    return absl::InvalidArgumentError(absl::StrCat("input '", ClientText(input.name()),
                                                   "': expected datatype FP32, got '",
                                                   ClientText(input.datatype()), "'"));
  }
  int64_t rows = 0;
  if (input.shape_size() == 2 && input.shape(1) == input_dim && input.shape(0) >= 1) {
    rows = input.shape(0);
  } else if (input.shape_size() == 1 && input.shape(0) == input_dim) {
    rows = 1;
  } else {
    std::string shape;
    for (int64_t v : input.shape()) absl::StrAppend(&shape, shape.empty() ? "" : ", ", v);
    return absl::InvalidArgumentError(absl::StrCat("input '", ClientText(input.name()),
                                                   "': expected shape [rows, ", input_dim,
                                                   "], got [", shape, "]"));
  }
  // Checked here, before the values are looked for, so rows x d cannot
  // overflow (sparse-server takes --max_batch_rows up to 2^20).
  if (rows > core.max_batch_rows()) return core.TooManyRows(rows);
  return rows;
}

// The input tensor of a ModelInferRequest as the core's rows, for a model
// of `input_dim` inputs; errors name fields as `encoding` spells them.
absl::Status ToInferRequest(const InferenceCore& core, const inference::ModelInferRequest& in,
                            int64_t input_dim, OipEncoding encoding, std::vector<float>* storage,
                            InferRequest* out) {
  ASSIGN_OR_RETURN(const int64_t rows, InputRows(core, in, input_dim));
  const InputFields& fields = FieldsOf(encoding);
  const auto& input = in.inputs(0);
  const int64_t n = rows * input_dim;
  out->rows = rows;
  if (in.raw_input_contents_size() > 0) {
    if (in.raw_input_contents_size() != 1 || input.contents().fp32_contents_size() > 0) {
      return absl::InvalidArgumentError(std::string(fields.one_place));
    }
    const std::string& raw = in.raw_input_contents(0);
    if (static_cast<int64_t>(raw.size()) != n * 4) {
      return absl::InvalidArgumentError(absl::StrCat(fields.raw, ": expected ", n * 4, " bytes (",
                                                     rows, " x ", input_dim, " FP32), got ",
                                                     raw.size()));
    }
    storage->resize(n);
    std::memcpy(storage->data(), raw.data(), raw.size());
    out->inputs = *storage;
    return absl::OkStatus();
  }
  if (input.contents().fp32_contents_size() != n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input '", ClientText(input.name()), "': shape [", rows, ", ", input_dim, "] needs ", n,
        " values in ", fields.values, ", got ", input.contents().fp32_contents_size()));
  }
  out->inputs = absl::MakeConstSpan(input.contents().fp32_contents().data(), n);
  return absl::OkStatus();
}

// Triton's version policy for ours (the same three choices).
void ToTritonPolicy(const sparse::v1::VersionPolicy& policy, inference::ModelVersionPolicy* out) {
  switch (policy.policy_case()) {
    case sparse::v1::VersionPolicy::kAll:
      out->mutable_all();
      break;
    case sparse::v1::VersionPolicy::kSpecific:
      for (int64_t v : policy.specific().versions()) out->mutable_specific()->add_versions(v);
      break;
    case sparse::v1::VersionPolicy::kLatest:
      out->mutable_latest()->set_num_versions(policy.latest().num_versions());
      break;
    default:  // unset: the default, latest 1
      out->mutable_latest()->set_num_versions(1);
      break;
  }
}

void ToTritonDuration(const StatDuration& from, inference::StatisticDuration* out) {
  out->set_count(from.count);
  out->set_ns(from.ns);
}

// One ModelStatistics entry: the path `path` names, named `name`.
void AddStatistics(const std::string& name, const ModelHandle& path, const InferenceCore& core,
                   inference::ModelStatisticsResponse* out) {
  const PathStatistics s = core.Statistics(path);
  inference::ModelStatistics* m = out->add_model_stats();
  m->set_name(name);
  m->set_version(absl::StrCat(path.version()));
  m->set_last_inference(s.last_inference_ms);
  m->set_inference_count(s.inference_count);
  m->set_execution_count(s.execution_count);
  inference::InferStatistics* stats = m->mutable_inference_stats();
  ToTritonDuration(s.success, stats->mutable_success());
  ToTritonDuration(s.fail, stats->mutable_fail());
  ToTritonDuration(s.queue, stats->mutable_queue());
  ToTritonDuration(s.compute_input, stats->mutable_compute_input());
  ToTritonDuration(s.compute_infer, stats->mutable_compute_infer());
  ToTritonDuration(s.compute_output, stats->mutable_compute_output());
  stats->mutable_cache_hit();
  stats->mutable_cache_miss();
  for (const auto& [rows, batch] : s.batches) {
    inference::InferBatchStatistics* b = m->add_batch_stats();
    b->set_batch_size(static_cast<uint64_t>(rows));
    ToTritonDuration(batch.compute_input, b->mutable_compute_input());
    ToTritonDuration(batch.compute_infer, b->mutable_compute_infer());
    ToTritonDuration(batch.compute_output, b->mutable_compute_output());
  }
}

// sparse-server has one repository: Triton's repository_name must be empty.
absl::Status CheckRepositoryName(absl::string_view name) {
  if (name.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("repository_name '", ClientText(name),
                   "': sparse-server serves one model repository; leave repository_name empty"));
}

absl::Status NeedsModelControl() {
  return absl::FailedPreconditionError(
      "sparse-server runs without --model_control, so it serves what its repository holds "
      "and loads changes itself; start it with --model_control to load and unload models by "
      "request");
}

}  // namespace

void ToTritonModelConfig(const std::string& name, const VersionStatus& version, bool dense,
                         const sparse::v1::ModelConfig& config, const InferenceCore& core,
                         inference::ModelConfig* out) {
  const ModelInfo& info = dense ? *version.dense : version.sparse;
  out->set_name(name);
  out->set_platform(absl::StrCat("sparse-serve_", dense ? "dense" : ModelKindName(info.kind)));
  out->set_backend("sparse-serve");
  ToTritonPolicy(config.version_policy(), out->mutable_version_policy());
  // Requests carry [rows, d]: the first dimension is the batch, up to the
  // server's --max_batch_rows.
  out->set_max_batch_size(static_cast<int32_t>(
      std::min<int64_t>(core.max_batch_rows(), std::numeric_limits<int32_t>::max())));
  inference::ModelInput* input = out->add_input();
  input->set_name("input");
  input->set_data_type(inference::TYPE_FP32);
  input->add_dims(info.input_dim);
  inference::ModelOutput* output = out->add_output();
  output->set_name("output");
  output->set_data_type(inference::TYPE_FP32);
  output->add_dims(info.output_dim);
  auto& params = *out->mutable_parameters();
  params["flops_per_row"].set_string_value(absl::StrCat(info.flops_per_row));
  params["weight_bytes_per_row"].set_string_value(absl::StrCat(info.weight_bytes_per_row));
  params["precision"].set_string_value(std::string(PrecisionName(version.precision)));
  if (version.dense.has_value()) {
    params["dense_flops_per_row"].set_string_value(absl::StrCat(version.dense->flops_per_row));
  }
  if (dense && version.dense_cost_only) params["dense_cost_only"].set_string_value("true");
  if (config.has_dynamic_batching()) {
    const BatchingOptions batching =
        ToBatchingOptions(config.dynamic_batching(), core.workers(), dense);
    if (batching.enabled) {
      out->mutable_dynamic_batching()->set_max_queue_delay_microseconds(
          static_cast<uint64_t>(batching.max_queue_delay_us));
      params["max_batch_rows"].set_string_value(absl::StrCat(batching.max_batch_rows));
      params["max_queue_size"].set_string_value(absl::StrCat(batching.max_queue_size));
      out->mutable_dynamic_batching()->set_priority_levels(config.priority_levels());
      out->mutable_dynamic_batching()->set_default_priority_level(config.default_priority_level());
    }
  }
  // Where Triton's schema has no place for them (levels without batching,
  // the limits), they are model options, as a Triton-schema config.pbtxt
  // sets them.
  if (config.priority_levels() > 0) {
    params["priority_levels"].set_string_value(absl::StrCat(config.priority_levels()));
    params["default_priority_level"].set_string_value(
        absl::StrCat(config.default_priority_level()));
  }
  const sparse::v1::Limits& limits = config.limits();
  if (limits.max_in_flight() > 0) {
    params["max_in_flight"].set_string_value(absl::StrCat(limits.max_in_flight()));
    params["over_limit"].set_string_value(sparse::v1::Limits::Action_Name(limits.over_limit()));
    if (limits.max_delay_us() > 0) {
      params["max_delay_us"].set_string_value(absl::StrCat(limits.max_delay_us()));
    }
  }
  if (limits.worker_weight() > 0) {
    params["worker_weight"].set_string_value(absl::StrCat(limits.worker_weight()));
  }
  // The workers that may run the model at once: its instance_count, or
  // every worker of the server.
  inference::ModelInstanceGroup* group = out->add_instance_group();
  group->set_name(absl::StrCat(name, "_cpu"));
  group->set_kind(inference::ModelInstanceGroup::KIND_CPU);
  group->set_count(config.instance_count() > 0 ? std::min(config.instance_count(), core.workers())
                                               : core.workers());
}

absl::StatusOr<InferRequest> TranslateModelInfer(const InferenceCore& core,
                                                 const inference::ModelInferRequest& request,
                                                 std::vector<float>* storage,
                                                 OipEncoding encoding) {
  ASSIGN_OR_RETURN(Target t, ParseTarget(request.model_name(), request.model_version()));
  ASSIGN_OR_RETURN(ModelHandle path, FindTarget(core, t));
  RETURN_IF_ERROR(CheckRequestOptions(request));
  InferRequest out;
  out.model = t.model;
  out.version = t.version;
  out.dense = t.dense;
  RETURN_IF_ERROR(
      ToInferRequest(core, request, path.info().input_dim, encoding, storage, &out));
  RETURN_IF_ERROR(ReadAdmission(request, &out));
  out.resolved = std::move(path);  // the core runs it on this version: one lookup
  return out;
}

void ToModelInferResponse(const inference::ModelInferRequest& request, const InferResponse& answer,
                          inference::ModelInferResponse* out) {
  out->set_model_name(request.model_name());
  out->set_model_version(absl::StrCat(answer.version));
  out->set_id(request.id());
  auto* tensor = out->add_outputs();
  tensor->set_name("output");
  tensor->set_datatype("FP32");
  tensor->add_shape(answer.rows);
  tensor->add_shape(answer.output_dim);
  // The values go in raw_output_contents, not in typed contents: what
  // Triton answers and what its clients read (InferResult.as_numpy).
  static_assert(std::endian::native == std::endian::little,
                "raw_output_contents are little-endian floats");
  out->add_raw_output_contents(reinterpret_cast<const char*>(answer.outputs.data()),
                               answer.outputs.size() * sizeof(float));
  auto& params = *out->mutable_parameters();
  params["flops"] = Int64Param(answer.cost.flops);
  params["dense_flops"] = Int64Param(answer.cost.dense_flops);
  params["weight_bytes"] = Int64Param(answer.cost.weight_bytes);
  params["major_faults"] = Int64Param(answer.cost.major_faults);
  if (answer.cost.shards > 0) {
    // A sharded model: the shards its batch called and the fan-out's wall time.
    params["shards"] = Int64Param(answer.cost.shards);
    params["fanout_ns"] = Int64Param(answer.cost.fanout_ns);
  }
  params["compute_ns"] = Int64Param(answer.cost.route_ns + answer.cost.compute_ns);
  params["queue_ns"] = Int64Param(answer.cost.queue_ns);
  params["total_ns"] = Int64Param(answer.cost.total_ns);
}

OipProtocol::OipProtocol(InferenceCore* core, ModelControl* control)
    : core_(core), control_(control) {}

absl::Status OipProtocol::ServerLive(const inference::ServerLiveRequest&,
                                       inference::ServerLiveResponse* out) const {
  out->set_live(true);
  return absl::OkStatus();
}

absl::Status OipProtocol::ServerReady(const inference::ServerReadyRequest&,
                                        inference::ServerReadyResponse* out) const {
  out->set_ready(core_->ServingVersions() > 0);
  return absl::OkStatus();
}

absl::Status OipProtocol::ModelReady(const inference::ModelReadyRequest& r,
                                       inference::ModelReadyResponse* out) const {
  ASSIGN_OR_RETURN(Target t, ParseTarget(r.name(), r.version()));
  absl::StatusOr<ModelHandle> found = FindTarget(*core_, t);
  if (!found.ok() && found.status().code() != absl::StatusCode::kNotFound &&
      found.status().code() != absl::StatusCode::kUnavailable) {
    return found.status();
  }
  out->set_ready(found.ok());  // a model that is not loaded is not ready
  return absl::OkStatus();
}

absl::Status OipProtocol::ServerMetadata(const inference::ServerMetadataRequest&,
                                           inference::ServerMetadataResponse* out) const {
  out->set_name("sparse-serve");
  out->set_version("1");
  // Triton's names for what is served (docs/api.md).
  for (const char* extension : kExtensions) out->add_extensions(extension);
  return absl::OkStatus();
}

absl::Status OipProtocol::ModelMetadata(const inference::ModelMetadataRequest& r,
                                          inference::ModelMetadataResponse* out) const {
  ASSIGN_OR_RETURN(Target t, ParseTarget(r.name(), r.version()));
  ASSIGN_OR_RETURN(const ModelHandle found, FindTarget(*core_, t));
  const ModelInfo& info = found.info();
  out->set_name(r.name());
  ASSIGN_OR_RETURN(const ModelStatus model, core_->Model(t.model));
  for (const VersionStatus& v : model.versions) {
    if (!t.dense || v.dense.has_value()) out->add_versions(absl::StrCat(v.version));
  }
  out->set_platform(absl::StrCat("sparse-serve_", t.dense ? "dense" : ModelKindName(info.kind)));
  auto* input = out->add_inputs();
  input->set_name("input");
  input->set_datatype("FP32");
  input->add_shape(-1);
  input->add_shape(info.input_dim);
  auto* output = out->add_outputs();
  output->set_name("output");
  output->set_datatype("FP32");
  output->add_shape(-1);
  output->add_shape(info.output_dim);
  return absl::OkStatus();
}

void OipProtocol::ModelInfer(const inference::ModelInferRequest& r, OipEncoding encoding,
                               inference::ModelInferResponse* out,
                               const std::function<void(InferRequest*)>& bind, InferDone done) {
  // The core's request and answer live until the call finishes.
  struct Call {
    std::vector<float> inputs;  // raw_input_contents, copied
    InferRequest request;
    InferResponse answer;
  };
  auto call = std::make_shared<Call>();
  absl::StatusOr<InferRequest> translated = TranslateModelInfer(*core_, r, &call->inputs, encoding);
  if (!translated.ok()) {
    done(translated.status());
    return;
  }
  call->request = *std::move(translated);
  bind(&call->request);
  core_->Infer(call->request, &call->answer,
               [call, &r, out, done = std::move(done)](absl::Status status) {
                 if (!status.ok()) {
                   done(status);
                   return;
                 }
                 ToModelInferResponse(r, call->answer, out);
                 done(absl::OkStatus());
               });
}

absl::Status OipProtocol::ModelConfig(const inference::ModelConfigRequest& r,
                                        inference::ModelConfigResponse* out) const {
  ASSIGN_OR_RETURN(Target t, ParseTarget(r.name(), r.version()));
  ASSIGN_OR_RETURN(const ModelHandle found, FindTarget(*core_, t));
  ASSIGN_OR_RETURN(const ModelStatus model, core_->Model(t.model));
  for (const VersionStatus& version : model.versions) {
    if (version.version != found.version()) continue;
    ToTritonModelConfig(r.name(), version, t.dense, model.config, *core_, out->mutable_config());
    return absl::OkStatus();
  }
  return absl::NotFoundError(absl::StrCat("model '", ClientText(t.model), "' version ",
                                          found.version(), " was unloaded"));
}

absl::Status OipProtocol::ModelStatistics(const inference::ModelStatisticsRequest& r,
                                            inference::ModelStatisticsResponse* out) const {
  if (r.name().empty()) {
    if (!r.version().empty()) {
      return absl::InvalidArgumentError("a model version needs a model name");
    }
    for (const ModelStatus& model : core_->Models()) {
      for (const VersionStatus& v : model.versions) {
        AddStatistics(model.name, v.handle, *core_, out);
        if (v.dense.has_value()) {
          AddStatistics(absl::StrCat(model.name, kDenseSuffix), v.handle.Path(true), *core_, out);
        }
      }
    }
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(Target t, ParseTarget(r.name(), r.version()));
  absl::StatusOr<ModelStatus> model = core_->Model(t.model);
  if (!model.ok() || model->versions.empty()) {
    return absl::NotFoundError(
        absl::StrCat("model '", ClientText(t.model), "' has no version loaded"));
  }
  for (const VersionStatus& v : model->versions) {
    if (t.version != 0 && v.version != t.version) continue;
    if (t.dense && !v.dense.has_value()) continue;
    AddStatistics(r.name(), v.handle.Path(t.dense), *core_, out);
  }
  if (out->model_stats_size() == 0) {
    return absl::NotFoundError(
        absl::StrCat("model '", ClientText(r.name()), "' version ", t.version, " is not loaded"));
  }
  return absl::OkStatus();
}

absl::Status OipProtocol::RepositoryIndex(const inference::RepositoryIndexRequest& r,
                                            inference::RepositoryIndexResponse* out) const {
  RETURN_IF_ERROR(CheckRepositoryName(r.repository_name()));
  std::map<std::string, ModelStatus> models;
  for (ModelStatus& model : core_->Models()) models[model.name] = std::move(model);
  std::error_code ec;
  const std::vector<std::string> directories = core_->ModelDirectories(&ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("cannot list the model repository: ", ec.message()));
  }
  std::set<std::string> names(directories.begin(), directories.end());
  for (const auto& [name, model] : models) names.insert(name);
  // Why a directory serves nothing ("no version directory to serve: ...").
  const std::map<std::string, std::string> not_served = core_->NotServed();
  auto why_not_served = [&not_served](const std::string& name, const char* otherwise) {
    auto it = not_served.find(name);
    return it == not_served.end() ? std::string(otherwise) : it->second;
  };
  auto add = [&](const std::string& name, std::string version, const char* state,
                 std::string reason) {
    if (r.ready() && absl::string_view(state) != "READY") return;
    auto* m = out->add_models();
    m->set_name(name);
    m->set_version(std::move(version));
    m->set_state(state);
    m->set_reason(std::move(reason));
  };
  for (const std::string& name : names) {
    auto found = models.find(name);
    if (found == models.end()) {
      add(name, "", "UNAVAILABLE", why_not_served(name, "unloaded"));
      continue;
    }
    const ModelStatus& model = found->second;
    std::set<int64_t> serving;
    for (const VersionStatus& v : model.versions) {
      add(name, absl::StrCat(v.version), "READY", "");
      serving.insert(v.version);
    }
    for (const auto& [number, error] : model.failures) {
      if (!serving.contains(number)) add(name, absl::StrCat(number), "UNAVAILABLE", error);
    }
    if (model.versions.empty() && model.failures.empty()) {
      add(name, "", "UNAVAILABLE", why_not_served(name, "no version directory to serve"));
    }
  }
  return absl::OkStatus();
}

int64_t OipProtocol::InputWidth(absl::string_view name) const {
  absl::ConsumeSuffix(&name, kDenseSuffix);
  return core_->WidestInput(name);
}

void OipProtocol::RepositoryModelLoad(const inference::RepositoryModelLoadRequest& r,
                                        InferDone done) {
  if (control_ == nullptr) {
    done(NeedsModelControl());
    return;
  }
  if (absl::Status s = CheckRepositoryName(r.repository_name()); !s.ok()) {
    done(s);
    return;
  }
  // Triton's load parameters that would replace the model's files or
  // configuration; anything else is ignored.
  for (const auto& [key, value] : r.parameters()) {
    if (key == "config" || absl::StartsWith(key, "file:")) {
      done(absl::InvalidArgumentError(
          absl::StrCat("load parameter '", ClientText(key),
                       "': a load reads the model's directory as it is; write the files and its "
                       "config.pbtxt there instead")));
      return;
    }
  }
  control_->Load(r.model_name(), [done = std::move(done)](absl::StatusOr<ModelStatus> state) {
    done(state.status());
  });
}

absl::Status OipProtocol::RepositoryModelUnload(const inference::RepositoryModelUnloadRequest& r,
                                                  inference::RepositoryModelUnloadResponse*) {
  if (control_ == nullptr) return NeedsModelControl();
  RETURN_IF_ERROR(CheckRepositoryName(r.repository_name()));
  // unload_dependents is ignored: no model depends on another.
  return control_->Unload(r.model_name());
}

}  // namespace sparse
