#include "server/http/rest_frontend.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/client_text.h"
#include "common/status_macros.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "nlohmann/json.hpp"

namespace sparse {
namespace {

using Json = nlohmann::json;
// Answers carry FP32 outputs: printed as floats, they are the shortest text
// that reads back as the same float.
using FloatJson = nlohmann::basic_json<std::map, std::vector, std::string, bool, std::int64_t,
                                       std::uint64_t, float>;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

constexpr int kMaxJsonDepth = 16;
// The values an infer body may hold besides its rows' (ids, shapes,
// parameters, requested outputs).
constexpr int64_t kInferBodyRoom = 4096;

// JSON text of `body`; strings that are not UTF-8 (a model directory's
// name, say) have U+FFFD for their bad bytes, so the dump cannot throw.
template <typename AnyJson>
std::string Dump(const AnyJson& body) {
  return body.dump(-1, ' ', false, AnyJson::error_handler_t::replace);
}

HttpReply JsonReply(const Json& body, int status = 200) {
  HttpReply reply;
  reply.status = status;
  reply.body = Dump(body);
  return reply;
}

// One field value of `m` (element `index` of a repeated field, or -1) as
// JSON: numbers as numbers (also 64-bit ones, as Triton's JSON has them),
// enums by name, messages as objects.
Json FieldToJson(const Message& m, const FieldDescriptor* f, int index);

// A protobuf message as the JSON Triton's HTTP API answers: proto field
// names, every scalar (zeros too, so a count of 0 is there to read), a
// message or oneof member only when set, maps as objects.
Json MessageToJson(const Message& m) {
  Json out = Json::object();
  const google::protobuf::Descriptor* d = m.GetDescriptor();
  const Reflection* r = m.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    if (f->is_map()) {
      Json object = Json::object();
      for (int j = 0; j < r->FieldSize(m, f); ++j) {
        const Message& entry = r->GetRepeatedMessage(m, f, j);
        const FieldDescriptor* key = entry.GetDescriptor()->map_key();
        const Json k = FieldToJson(entry, key, -1);
        object[k.is_string() ? k.get<std::string>() : Dump(k)] =
            FieldToJson(entry, entry.GetDescriptor()->map_value(), -1);
      }
      out[f->name()] = std::move(object);
    } else if (f->is_repeated()) {
      Json array = Json::array();
      for (int j = 0; j < r->FieldSize(m, f); ++j) array.push_back(FieldToJson(m, f, j));
      out[f->name()] = std::move(array);
    } else if ((f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE && f->containing_oneof() == nullptr) ||
               r->HasField(m, f)) {
      out[f->name()] = FieldToJson(m, f, -1);
    }
  }
  return out;
}

Json FieldToJson(const Message& m, const FieldDescriptor* f, int index) {
  const Reflection* r = m.GetReflection();
  const bool rep = index >= 0;
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      return rep ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f);
    case FieldDescriptor::CPPTYPE_INT64:
      return rep ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f);
    case FieldDescriptor::CPPTYPE_UINT32:
      return rep ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f);
    case FieldDescriptor::CPPTYPE_UINT64:
      return rep ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f);
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return rep ? r->GetRepeatedDouble(m, f, index) : r->GetDouble(m, f);
    case FieldDescriptor::CPPTYPE_FLOAT:
      return rep ? r->GetRepeatedFloat(m, f, index) : r->GetFloat(m, f);
    case FieldDescriptor::CPPTYPE_BOOL:
      return rep ? r->GetRepeatedBool(m, f, index) : r->GetBool(m, f);
    case FieldDescriptor::CPPTYPE_ENUM:
      return (rep ? r->GetRepeatedEnum(m, f, index) : r->GetEnum(m, f))->name();
    case FieldDescriptor::CPPTYPE_STRING:
      return rep ? r->GetRepeatedString(m, f, index) : r->GetString(m, f);
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return MessageToJson(rep ? r->GetRepeatedMessage(m, f, index) : r->GetMessage(m, f));
  }
  return nullptr;
}

// What a refused body's error says beyond the parser's words: why more
// than the budget's values is too many (for an infer body: the row limit),
// and what bytes after the JSON mean (binary tensors without the header that
// says where the JSON ends).
struct BodyHints {
  std::string too_many = "more than any request the server accepts";
  std::string after_json;  // empty: only the parser's message
};

// Parses a request's JSON, holding at most `max_values` values and
// `kMaxJsonDepth` levels, so no body can make the parser hold more than
// the largest request the server accepts.
absl::StatusOr<Json> ParseBody(absl::string_view text, int64_t max_values,
                               const BodyHints& hints = {}) {
  if (text.empty()) return Json::object();
  struct TooDeep {};
  struct TooMany {};
  int64_t values = 0;
  try {
    // Every value takes at least two bytes but the last: a short body cannot
    // exceed the budget, and parses without the per-value callback. (The
    // parser keeps its own stack: depth costs no recursion.)
    if (static_cast<int64_t>(text.size()) / 2 + 1 <= max_values) {
      return Json::parse(text.begin(), text.end());
    }
    return Json::parse(
        text.begin(), text.end(),
        [&values, max_values](int depth, Json::parse_event_t event, Json&) {
          if (depth > kMaxJsonDepth) throw TooDeep{};
          if (event == Json::parse_event_t::value && ++values > max_values) throw TooMany{};
          return true;
        });
  } catch (const Json::parse_error& e) {
    // nlohmann's words for a whole JSON value followed by more bytes.
    if (!hints.after_json.empty() && absl::EndsWith(e.what(), "expected end of input")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the request body goes on after its JSON (byte ", e.byte, " of ", text.size(), "): ",
          hints.after_json));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("the request body is not valid JSON: ", ClientText(e.what())));
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request body is not valid JSON: ", ClientText(e.what())));
  } catch (const TooDeep&) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the request body nests deeper than ", kMaxJsonDepth,
        " levels: deeper than any request the server accepts"));
  } catch (const TooMany&) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request body holds more than ", max_values, " values: ", hints.too_many));
  }
}

// A KServe parameter value (bool, integer, number or string).
absl::StatusOr<inference::InferParameter> ToInferParameter(const std::string& key, const Json& v) {
  inference::InferParameter p;
  if (v.is_boolean()) {
    p.set_bool_param(v.get<bool>());
  } else if (v.is_number_unsigned()) {
    p.set_uint64_param(v.get<uint64_t>());
  } else if (v.is_number_integer()) {
    p.set_int64_param(v.get<int64_t>());
  } else if (v.is_number_float()) {
    p.set_double_param(v.get<double>());
  } else if (v.is_string()) {
    p.set_string_param(v.get<std::string>());
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "parameter '", ClientText(key), "': expected a bool, a number or a string, got ",
        v.type_name()));
  }
  return p;
}

template <typename Map>
absl::Status ToParameters(const Json& object, absl::string_view where, Map* out) {
  if (object.is_null()) return absl::OkStatus();
  if (!object.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(where, "'parameters' must be an object"));
  }
  for (const auto& [key, value] : object.items()) {
    ASSIGN_OR_RETURN((*out)[key], ToInferParameter(key, value));
  }
  return absl::OkStatus();
}

// The value at `key` of a JSON object, or null.
const Json& Field(const Json& object, const char* key) {
  static const Json* const kNull = new Json(nullptr);
  auto it = object.find(key);
  return it == object.end() ? *kNull : *it;
}

absl::StatusOr<std::string> StringField(const Json& object, const char* key, absl::string_view where) {
  const Json& v = Field(object, key);
  if (v.is_null()) return std::string();
  if (!v.is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "'", key, "' must be a string, got ", v.type_name()));
  }
  return v.get<std::string>();
}

// `data` flattened row-major into `out`: a flat array or arrays nested as
// the shape (KServe allows both).
absl::Status FlattenData(const Json& data, int depth, absl::string_view where,
                         google::protobuf::RepeatedField<float>* out) {
  if (data.is_number()) {
    out->Add(data.get<float>());
    return absl::OkStatus();
  }
  if (!data.is_array() || depth > 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, "'data' must hold numbers (flat, or in arrays nested as the shape), found ",
        data.type_name()));
  }
  for (const Json& v : data) RETURN_IF_ERROR(FlattenData(v, depth + 1, where, out));
  return absl::OkStatus();
}

// One input tensor of KServe's JSON (`where` names it in errors), added to
// *out; its data is in the JSON, or the next binary_data_size bytes of
// `binary` from *offset on (then a raw input content, and *offset moves on).
// `binary` is absent (nullopt) when the request has no
// Inference-Header-Content-Length: a binary_data_size is then refused naming it.
absl::Status AddInputTensor(const Json& in, const std::string& where,
                            std::optional<absl::string_view> binary, size_t* offset,
                            inference::ModelInferRequest* out) {
  if (!in.is_object()) return absl::InvalidArgumentError(where + "must be an object");
  auto* tensor = out->add_inputs();
  ASSIGN_OR_RETURN(*tensor->mutable_name(), StringField(in, "name", where));
  ASSIGN_OR_RETURN(*tensor->mutable_datatype(), StringField(in, "datatype", where));
  const Json& shape = Field(in, "shape");
  if (!shape.is_array()) return absl::InvalidArgumentError(where + "'shape' must be an array");
  for (const Json& dim : shape) {
    if (!dim.is_number_integer()) {
      return absl::InvalidArgumentError(where + "'shape' must hold integers");
    }
    tensor->add_shape(dim.get<int64_t>());
  }
  RETURN_IF_ERROR(ToParameters(Field(in, "parameters"), where, tensor->mutable_parameters()));
  auto size = tensor->parameters().find("binary_data_size");
  if (size == tensor->parameters().end()) {
    if (tensor->datatype() != "FP32") return absl::OkStatus();  // the translation says what it expected
    return FlattenData(Field(in, "data"), 0, where,
                       tensor->mutable_contents()->mutable_fp32_contents());
  }
  const inference::InferParameter& p = size->second;
  if (!p.has_uint64_param() && !p.has_int64_param()) {
    return absl::InvalidArgumentError(
        where + "binary_data_size must be a byte count (a non-negative integer)");
  }
  const int64_t bytes = p.has_uint64_param()
                            ? static_cast<int64_t>(std::min<uint64_t>(p.uint64_param(), INT64_MAX))
                            : p.int64_param();
  if (!binary.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, "binary_data_size says ", bytes, " bytes of binary tensor data follow the JSON, "
        "but the request has no Inference-Header-Content-Length header: add it, giving the "
        "JSON's length in bytes (Triton's binary tensor data extension)"));
  }
  if (bytes < 0 || static_cast<uint64_t>(bytes) > binary->size() - *offset) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, "binary_data_size ", bytes, " is more than the ", binary->size() - *offset,
        " binary bytes left after the JSON"));
  }
  out->add_raw_input_contents(binary->data() + *offset, bytes);
  *offset += bytes;
  return absl::OkStatus();
}

// The requested outputs of KServe's JSON; *binary_output is set when one
// asks for binary data.
absl::Status ToRequestedOutputs(const Json& outputs, inference::ModelInferRequest* out,
                                bool* binary_output) {
  if (!outputs.is_null() && !outputs.is_array()) {
    return absl::InvalidArgumentError("'outputs' must be an array of requested outputs");
  }
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Json& o = outputs[i];
    const std::string where = absl::StrCat("outputs[", i, "]: ");
    if (!o.is_object()) return absl::InvalidArgumentError(where + "must be an object");
    auto* requested = out->add_outputs();
    ASSIGN_OR_RETURN(*requested->mutable_name(), StringField(o, "name", where));
    RETURN_IF_ERROR(ToParameters(Field(o, "parameters"), where, requested->mutable_parameters()));
    auto binary_data = requested->parameters().find("binary_data");
    if (binary_data != requested->parameters().end() && !binary_data->second.has_bool_param()) {
      return absl::InvalidArgumentError(where + "parameter 'binary_data' must be true or false");
    }
    if (binary_data != requested->parameters().end() && binary_data->second.bool_param()) {
      *binary_output = true;
    }
  }
  return absl::OkStatus();
}

// KServe's JSON infer request (and Triton's binary tensors after it) as the
// protocol's message. *binary_output: the answer's outputs go after its
// JSON, as binary.
absl::Status ToModelInferRequest(const Json& body, std::optional<absl::string_view> binary,
                                 inference::ModelInferRequest* out, bool* binary_output) {
  if (!body.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request body must be a JSON object, got ", body.type_name()));
  }
  ASSIGN_OR_RETURN(*out->mutable_id(), StringField(body, "id", ""));
  RETURN_IF_ERROR(ToParameters(Field(body, "parameters"), "", out->mutable_parameters()));
  const Json& inputs = Field(body, "inputs");
  if (!inputs.is_array()) {
    return absl::InvalidArgumentError("'inputs' must be an array of input tensors");
  }
  size_t offset = 0;  // into `binary`
  for (size_t i = 0; i < inputs.size(); ++i) {
    RETURN_IF_ERROR(
        AddInputTensor(inputs[i], absl::StrCat("inputs[", i, "]: "), binary, &offset, out));
  }
  if (binary.has_value() && offset != binary->size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        binary->size(), " binary bytes follow the JSON, but the inputs' binary_data_size take ",
        offset));
  }
  auto all_binary = out->parameters().find("binary_data_output");
  if (all_binary != out->parameters().end() && !all_binary->second.has_bool_param()) {
    return absl::InvalidArgumentError("parameter 'binary_data_output' must be true or false");
  }
  *binary_output = all_binary != out->parameters().end() && all_binary->second.bool_param();
  return ToRequestedOutputs(Field(body, "outputs"), out, binary_output);
}

FloatJson ParameterToJson(const inference::InferParameter& p) {
  switch (p.parameter_choice_case()) {
    case inference::InferParameter::kBoolParam:
      return p.bool_param();
    case inference::InferParameter::kInt64Param:
      return p.int64_param();
    case inference::InferParameter::kUint64Param:
      return p.uint64_param();
    case inference::InferParameter::kDoubleParam:
      return p.double_param();
    case inference::InferParameter::kStringParam:
      return p.string_param();
    default:
      return nullptr;
  }
}

// The answer as KServe's JSON; with `binary_output`, the outputs' bytes
// follow the JSON (Triton's binary tensor data extension).
HttpReply InferReply(const inference::ModelInferResponse& response, bool binary_output) {
  FloatJson body = FloatJson::object();
  body["model_name"] = response.model_name();
  body["model_version"] = response.model_version();
  if (!response.id().empty()) body["id"] = response.id();
  FloatJson parameters = FloatJson::object();
  for (const auto& [key, value] : response.parameters()) parameters[key] = ParameterToJson(value);
  body["parameters"] = std::move(parameters);
  FloatJson outputs = FloatJson::array();
  std::string binary;
  for (int i = 0; i < response.outputs_size(); ++i) {
    const auto& tensor = response.outputs(i);
    FloatJson out = FloatJson::object();
    out["name"] = tensor.name();
    out["datatype"] = tensor.datatype();
    out["shape"] = std::vector<int64_t>(tensor.shape().begin(), tensor.shape().end());
    const std::string& raw = i < response.raw_output_contents_size() ? response.raw_output_contents(i)
                                                                     : std::string();
    if (binary_output) {
      out["parameters"] = {{"binary_data_size", raw.size()}};
      binary += raw;
    } else {
      std::vector<float> values(raw.size() / sizeof(float));
      std::memcpy(values.data(), raw.data(), values.size() * sizeof(float));
      out["data"] = std::move(values);
    }
    outputs.push_back(std::move(out));
  }
  body["outputs"] = std::move(outputs);
  HttpReply reply;
  reply.body = Dump(body);
  if (binary_output) {
    reply.header_length = static_cast<int64_t>(reply.body.size());
    reply.content_type = "application/octet-stream";
    reply.body += binary;
  }
  return reply;
}

// Runs one of OipProtocol's calls that answer at once and replies with
// its response as JSON.
template <typename Response, typename Call>
HttpReply AnswerNow(const Call& call) {
  Response response;
  const absl::Status status = call(&response);
  if (!status.ok()) return ErrorReply(status);
  return JsonReply(MessageToJson(response));
}

// A 200 with no body, for the health and readiness endpoints.
HttpReply EmptyReply() {
  HttpReply reply;
  reply.content_type = "text/plain";
  return reply;
}

// The load parameters of a RepositoryModelLoad body (Triton's JSON).
void ToLoadParameters(const Json& body, inference::RepositoryModelLoadRequest* r) {
  if (!body.is_object() || !Field(body, "parameters").is_object()) return;
  for (const auto& [key, value] : Field(body, "parameters").items()) {
    inference::ModelRepositoryParameter& p = (*r->mutable_parameters())[key];
    if (value.is_boolean()) {
      p.set_bool_param(value.get<bool>());
    } else if (value.is_number_integer()) {
      p.set_int64_param(value.get<int64_t>());
    } else {
      p.set_string_param(value.is_string() ? value.get<std::string>() : Dump(value));
    }
  }
}

// A model request's name and version from its path's captures.
template <typename Request>
Request ModelRequest(const PathParams& params) {
  Request r;
  r.set_name(params.at("model"));
  if (auto v = params.find("version"); v != params.end()) r.set_version(v->second);
  return r;
}

// An infer request's JSON (`text`), within the values a full batch of
// `model` takes (`max_batch_rows` rows); its errors name the row limit and,
// without Inference-Header-Content-Length, the header binary tensors need.
absl::StatusOr<Json> ParseInferBody(const OipProtocol& api, int64_t max_batch_rows,
                                    absl::string_view text, const std::string& model,
                                    bool has_header_length) {
  // The most values a body may hold: a full batch of the widest version of
  // the model, and room for the rest of the request. Only a body long
  // enough to exceed the room needs the model looked up.
  int64_t max_values = kInferBodyRoom;
  BodyHints hints;
  if (static_cast<int64_t>(text.size()) / 2 + 1 > max_values) {
    const int64_t width = api.InputWidth(model);
    max_values += max_batch_rows * std::max<int64_t>(1, width);
    if (width > 0) {
      // More values than that are more rows than a request may carry.
      hints.too_many = absl::StrCat(
          "more than ", max_batch_rows, " rows of ", width, " inputs (model '", ClientText(model),
          "') plus ", kInferBodyRoom, " values for the rest of the request; the limit is ",
          max_batch_rows, " rows per request (sparse-server --max_batch_rows)");
    }
  }
  if (!has_header_length) {
    hints.after_json =
        "a body whose binary tensor data follows the JSON (Triton's binary tensor data "
        "extension) needs the header Inference-Header-Content-Length giving the JSON's "
        "length in bytes";
  }
  return ParseBody(text, max_values, hints);
}

}  // namespace

RestFrontend::RestFrontend(OipProtocol* api, int64_t max_batch_rows)
    : api_(api), max_batch_rows_(max_batch_rows), router_([](const HttpRequest& request) {
        return ErrorReply(absl::NotFoundError(absl::StrCat(
            "no endpoint ", ClientText(request.method), " ", ClientText(request.path),
            " (the KServe v2 endpoints are under /v2: docs/api.md)")));
      }) {
  AddServerRoutes();
  AddRepositoryRoutes();
  for (const char* prefix : {"/v2/models/{model}", "/v2/models/{model}/versions/{version}"}) {
    AddModelRoutes(prefix);
  }
}

void RestFrontend::Handle(const HttpRequest& request, std::function<void(HttpReply)> done) {
  router_.Handle(request, std::move(done));
}

void RestFrontend::AddServerRoutes() {
  router_.Add("GET", "/v2", [this](const HttpRequest&, const PathParams&, Reply done) {
    done(AnswerNow<inference::ServerMetadataResponse>(
        [&](auto* out) { return api_->ServerMetadata({}, out); }));
  });
  router_.Add("GET", "/v2/health/live",
              [](const HttpRequest&, const PathParams&, Reply done) { done(EmptyReply()); });
  router_.Add("GET", "/v2/health/ready", [this](const HttpRequest&, const PathParams&, Reply done) {
    inference::ServerReadyResponse ready;
    (void)api_->ServerReady({}, &ready);
    done(ready.ready() ? EmptyReply()
                       : ErrorReply(absl::UnavailableError("no model is loaded yet")));
  });
  // Before /v2/models/{model}: a model named "stats" has no metadata by GET.
  router_.Add("GET", "/v2/models/stats", [this](const HttpRequest&, const PathParams&, Reply done) {
    done(AnswerNow<inference::ModelStatisticsResponse>(
        [&](auto* out) { return api_->ModelStatistics({}, out); }));
  });
}

void RestFrontend::AddRepositoryRoutes() {
  router_.Add("POST", "/v2/repository/index",
              [this](const HttpRequest& request, const PathParams&, Reply done) {
                absl::StatusOr<Json> body = ParseBody(request.body, 64);
                if (!body.ok()) return done(ErrorReply(body.status()));
                inference::RepositoryIndexRequest r;
                const Json& ready = body->is_object() ? Field(*body, "ready") : Json(nullptr);
                r.set_ready(ready.is_boolean() && ready.get<bool>());
                inference::RepositoryIndexResponse index;
                if (absl::Status st = api_->RepositoryIndex(r, &index); !st.ok()) {
                  return done(ErrorReply(st));
                }
                Json models = Json::array();
                for (const auto& m : index.models()) models.push_back(MessageToJson(m));
                done(JsonReply(models));
              });
  router_.Add("POST", "/v2/repository/models/{model}/load",
              [this](const HttpRequest& request, const PathParams& params, Reply done) {
                absl::StatusOr<Json> body = ParseBody(request.body, 1024);
                if (!body.ok()) return done(ErrorReply(body.status()));
                inference::RepositoryModelLoadRequest r;
                r.set_model_name(params.at("model"));
                ToLoadParameters(*body, &r);
                api_->RepositoryModelLoad(r, [done](absl::Status st) {
                  done(st.ok() ? JsonReply(Json::object()) : ErrorReply(st));
                });
              });
  router_.Add("POST", "/v2/repository/models/{model}/unload",
              [this](const HttpRequest& request, const PathParams& params, Reply done) {
                absl::StatusOr<Json> body = ParseBody(request.body, 1024);
                if (!body.ok()) return done(ErrorReply(body.status()));
                inference::RepositoryModelUnloadRequest r;
                r.set_model_name(params.at("model"));
                done(AnswerNow<inference::RepositoryModelUnloadResponse>(
                    [&](auto* out) { return api_->RepositoryModelUnload(r, out); }));
              });
}

void RestFrontend::AddModelRoutes(const std::string& prefix) {
  router_.Add("POST", prefix + "/infer",
              [this](const HttpRequest& request, const PathParams& params, Reply done) {
                auto version = params.find("version");
                Infer(request, params.at("model"),
                      version != params.end() ? version->second : std::string(), std::move(done));
              });
  router_.Add("GET", prefix, [this](const HttpRequest&, const PathParams& params, Reply done) {
    const auto r = ModelRequest<inference::ModelMetadataRequest>(params);
    done(AnswerNow<inference::ModelMetadataResponse>(
        [&](auto* out) { return api_->ModelMetadata(r, out); }));
  });
  router_.Add("GET", prefix + "/ready",
              [this](const HttpRequest&, const PathParams& params, Reply done) {
                const auto r = ModelRequest<inference::ModelReadyRequest>(params);
                inference::ModelReadyResponse ready;
                if (absl::Status st = api_->ModelReady(r, &ready); !st.ok()) {
                  return done(ErrorReply(st));
                }
                done(ready.ready() ? EmptyReply()
                                   : ErrorReply(absl::UnavailableError(absl::StrCat(
                                         "model '", ClientText(r.name()), "' is not ready"))));
              });
  router_.Add("GET", prefix + "/config",
              [this](const HttpRequest&, const PathParams& params, Reply done) {
                const auto r = ModelRequest<inference::ModelConfigRequest>(params);
                inference::ModelConfigResponse config;
                if (absl::Status st = api_->ModelConfig(r, &config); !st.ok()) {
                  return done(ErrorReply(st));
                }
                // Triton answers the config itself.
                done(JsonReply(MessageToJson(config.config())));
              });
  router_.Add("GET", prefix + "/stats",
              [this](const HttpRequest&, const PathParams& params, Reply done) {
                const auto r = ModelRequest<inference::ModelStatisticsRequest>(params);
                done(AnswerNow<inference::ModelStatisticsResponse>(
                    [&](auto* out) { return api_->ModelStatistics(r, out); }));
              });
}

void RestFrontend::Infer(const HttpRequest& request, const std::string& model,
                         const std::string& version, std::function<void(HttpReply)> done) {
  absl::string_view text = request.body;
  std::optional<absl::string_view> binary;  // with Inference-Header-Content-Length only
  if (request.header_length.has_value()) {
    const int64_t length = *request.header_length;
    if (length < 0 || length > static_cast<int64_t>(request.body.size())) {
      return done(ErrorReply(absl::InvalidArgumentError(absl::StrCat(
          "Inference-Header-Content-Length is ", length, " but the body has ",
          request.body.size(), " bytes"))));
    }
    text = request.body.substr(0, length);
    binary = request.body.substr(length);
  }
  absl::StatusOr<Json> body = ParseInferBody(*api_, max_batch_rows_, text, model, binary.has_value());
  if (!body.ok()) return done(ErrorReply(body.status()));
  struct Call {
    inference::ModelInferRequest request;
    inference::ModelInferResponse response;
    bool binary_output = false;
  };
  auto call = std::make_shared<Call>();
  call->request.set_model_name(model);
  call->request.set_model_version(version);
  if (absl::Status st = ToModelInferRequest(*body, binary, &call->request, &call->binary_output);
      !st.ok()) {
    return done(ErrorReply(st));
  }
  api_->ModelInfer(
      call->request, OipEncoding::kJson, &call->response,
      [&request](InferRequest* q) {
        q->decode_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                           std::chrono::steady_clock::now() - request.received)
                           .count();
        // As gRPC's: a request still queued at its deadline, or whose client
        // has gone, is answered without computing.
        q->deadline = request.deadline;
        q->cancelled = request.disconnected;
      },
      [call, done = std::move(done)](absl::Status status) {
        done(status.ok() ? InferReply(call->response, call->binary_output) : ErrorReply(status));
      });
}

}  // namespace sparse
