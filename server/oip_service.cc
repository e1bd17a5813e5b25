#include "server/oip_service.h"

#include <cstring>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "engine/status_macros.h"
#include "server/grpc_status.h"

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
    return absl::InvalidArgumentError(
        absl::StrCat("model version must be a positive integer or empty, got '", version, "'"));
  }
  return t;
}

// The servable and path a target names; NOT_FOUND / FAILED_PRECONDITION as
// the native API.
absl::StatusOr<std::shared_ptr<const Servable>> FindTarget(const ModelRepository& repository,
                                                          const Target& t) {
  ASSIGN_OR_RETURN(std::shared_ptr<const Servable> servable, repository.Find(t.model, t.version));
  if (t.dense && servable->loaded.dense == nullptr) {
    return absl::NotFoundError(absl::StrCat("model '", t.model, "' has no dense twin, so '",
                                            t.model, kDenseSuffix, "' does not exist"));
  }
  return servable;
}

inference::InferParameter Int64Param(int64_t v) {
  inference::InferParameter p;
  p.set_int64_param(v);
  return p;
}

grpc::ServerUnaryReactor* FinishWith(grpc::CallbackServerContext* context, const absl::Status& s) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

// Translates a ModelInferRequest into the native request (the input's
// floats copied once).
absl::Status ToPredictRequest(const inference::ModelInferRequest& in, const Target& t,
                              int64_t input_dim, sparse::v1::PredictRequest* out) {
  if (in.inputs_size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected exactly 1 input tensor (FP32, shape [rows, ", input_dim, "]), got ",
        in.inputs_size()));
  }
  const auto& input = in.inputs(0);
  if (input.datatype() != "FP32") {
    return absl::InvalidArgumentError(
        absl::StrCat("input '", input.name(), "': expected datatype FP32, got '", input.datatype(), "'"));
  }
  int64_t rows = 0;
  if (input.shape_size() == 2 && input.shape(1) == input_dim && input.shape(0) >= 1) {
    rows = input.shape(0);
  } else if (input.shape_size() == 1 && input.shape(0) == input_dim) {
    rows = 1;
  } else {
    std::string shape;
    for (int64_t v : input.shape()) absl::StrAppend(&shape, shape.empty() ? "" : ", ", v);
    return absl::InvalidArgumentError(absl::StrCat("input '", input.name(), "': expected shape [rows, ",
                                                   input_dim, "], got [", shape, "]"));
  }
  // sparse-server never accepts more than 2^20 rows (--max_batch_rows); the
  // configured limit is enforced with the native request. Checked here first
  // so rows x d cannot overflow.
  if (rows > (int64_t{1} << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("input '", input.name(), "': ", rows, " rows is more than any batch limit"));
  }
  const int64_t n = rows * input_dim;
  out->set_model(t.model);
  out->set_version(t.version);
  out->set_rows(rows);
  if (in.raw_input_contents_size() > 0) {
    if (in.raw_input_contents_size() != 1 || input.contents().fp32_contents_size() > 0) {
      return absl::InvalidArgumentError(
          "give the input either in raw_input_contents (one entry) or in contents, not both");
    }
    const std::string& raw = in.raw_input_contents(0);
    if (static_cast<int64_t>(raw.size()) != n * 4) {
      return absl::InvalidArgumentError(absl::StrCat("raw_input_contents[0]: expected ", n * 4,
                                                     " bytes (", rows, " x ", input_dim,
                                                     " FP32), got ", raw.size()));
    }
    out->mutable_inputs()->Resize(static_cast<int>(n), 0.0f);
    std::memcpy(out->mutable_inputs()->mutable_data(), raw.data(), raw.size());
    return absl::OkStatus();
  }
  if (input.contents().fp32_contents_size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("input '", input.name(), "': shape [", rows, ", ",
                                                   input_dim, "] needs ", n,
                                                   " fp32_contents, got ",
                                                   input.contents().fp32_contents_size()));
  }
  *out->mutable_inputs() = input.contents().fp32_contents();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<bool> TranslateModelInfer(const ModelRepository& repository,
                                         const inference::ModelInferRequest& request,
                                         sparse::v1::PredictRequest* out) {
  ASSIGN_OR_RETURN(Target t, ParseTarget(request.model_name(), request.model_version()));
  ASSIGN_OR_RETURN(std::shared_ptr<const Servable> servable, FindTarget(repository, t));
  const LoadedModel& loaded = servable->loaded;
  const ModelInfo& info = t.dense ? loaded.dense->info() : loaded.sparse->info();
  RETURN_IF_ERROR(ToPredictRequest(request, t, info.input_dim, out));
  return t.dense;
}

OipService::OipService(const ModelRepository* repository, InferenceService* inference)
    : repository_(repository), inference_(inference) {}

grpc::ServerUnaryReactor* OipService::ServerLive(grpc::CallbackServerContext* context,
                                                 const inference::ServerLiveRequest*,
                                                 inference::ServerLiveResponse* response) {
  response->set_live(true);
  return FinishWith(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* OipService::ServerReady(grpc::CallbackServerContext* context,
                                                  const inference::ServerReadyRequest*,
                                                  inference::ServerReadyResponse* response) {
  response->set_ready(ServingVersions(*repository_->snapshot()) > 0);
  return FinishWith(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* OipService::ModelReady(grpc::CallbackServerContext* context,
                                                 const inference::ModelReadyRequest* request,
                                                 inference::ModelReadyResponse* response) {
  absl::StatusOr<Target> t = ParseTarget(request->name(), request->version());
  if (!t.ok()) return FinishWith(context, t.status());
  absl::StatusOr<std::shared_ptr<const Servable>> found = FindTarget(*repository_, *t);
  if (!found.ok() && found.status().code() != absl::StatusCode::kNotFound &&
      found.status().code() != absl::StatusCode::kUnavailable) {
    return FinishWith(context, found.status());
  }
  response->set_ready(found.ok());  // a model that is not loaded is not ready
  return FinishWith(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* OipService::ServerMetadata(grpc::CallbackServerContext* context,
                                                     const inference::ServerMetadataRequest*,
                                                     inference::ServerMetadataResponse* response) {
  response->set_name("sparse-serve");
  response->set_version("1");
  return FinishWith(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* OipService::ModelMetadata(grpc::CallbackServerContext* context,
                                                    const inference::ModelMetadataRequest* request,
                                                    inference::ModelMetadataResponse* response) {
  absl::StatusOr<Target> t = ParseTarget(request->name(), request->version());
  if (!t.ok()) return FinishWith(context, t.status());
  absl::StatusOr<std::shared_ptr<const Servable>> found = FindTarget(*repository_, *t);
  if (!found.ok()) return FinishWith(context, found.status());
  const LoadedModel& loaded = (*found)->loaded;
  const ModelInfo& info = t->dense ? loaded.dense->info() : loaded.sparse->info();
  response->set_name(request->name());
  const std::shared_ptr<const RepositorySnapshot> snapshot = repository_->snapshot();
  auto state = snapshot->find(t->model);
  if (state == snapshot->end()) return FinishWith(context, absl::NotFoundError("model unloaded"));
  for (const auto& [number, servable] : state->second.versions) {
    if (!t->dense || servable->loaded.dense != nullptr) response->add_versions(absl::StrCat(number));
  }
  response->set_platform(absl::StrCat("sparse-serve_", t->dense ? "dense" : ModelKindName(info.kind)));
  auto* input = response->add_inputs();
  input->set_name("input");
  input->set_datatype("FP32");
  input->add_shape(-1);
  input->add_shape(info.input_dim);
  auto* output = response->add_outputs();
  output->set_name("output");
  output->set_datatype("FP32");
  output->add_shape(-1);
  output->add_shape(info.output_dim);
  return FinishWith(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* OipService::ModelInfer(grpc::CallbackServerContext* context,
                                                 const inference::ModelInferRequest* request,
                                                 inference::ModelInferResponse* response) {
  // The native request and response live until the call finishes.
  struct Call {
    sparse::v1::PredictRequest request;
    sparse::v1::PredictResponse response;
  };
  auto call = std::make_shared<Call>();
  absl::StatusOr<bool> dense = TranslateModelInfer(*repository_, *request, &call->request);
  if (!dense.ok()) return FinishWith(context, dense.status());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  inference_->Run(context, &call->request, &call->response, *dense,
                  [call, request, response, reactor](grpc::Status status) {
                    if (!status.ok()) {
                      reactor->Finish(status);
                      return;
                    }
                    const sparse::v1::PredictResponse& r = call->response;
                    response->set_model_name(request->model_name());
                    response->set_model_version(absl::StrCat(r.version()));
                    response->set_id(request->id());
                    auto* out = response->add_outputs();
                    out->set_name("output");
                    out->set_datatype("FP32");
                    out->add_shape(r.rows());
                    out->add_shape(r.output_dim());
                    *out->mutable_contents()->mutable_fp32_contents() = r.outputs();
                    auto& params = *response->mutable_parameters();
                    params["flops"] = Int64Param(r.cost().flops());
                    params["dense_flops"] = Int64Param(r.cost().dense_flops());
                    params["compute_ns"] = Int64Param(r.cost().route_ns() + r.cost().compute_ns());
                    params["queue_ns"] = Int64Param(r.cost().queue_ns());
                    reactor->Finish(grpc::Status::OK);
                  });
  return reactor;
}

}  // namespace sparse
