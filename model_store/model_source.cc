#include "model_store/model_source.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "common/client_text.h"
#include "common/status_macros.h"
#include "inference/model_config.pb.h"
#include "model_store/file_util.h"

namespace sparse {

namespace fs = std::filesystem;

namespace {

constexpr char kConfigFile[] = "config.pbtxt";
// A config holds a few lines; this bounds what reading one can cost.
constexpr uint64_t kMaxConfigBytes = 1 << 20;

// Collects the first text-format error with its position, and (parsing
// with unknown fields allowed) every unknown field the parser skipped.
class FirstError final : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (error.empty()) {
      error = absl::StrCat("line ", line + 1, " column ", column + 1, ": ", message);
      raw = message;
    }
  }
  void AddWarning(int line, int /*column*/, const std::string& message) override {
    warnings.push_back({line + 1, message});
  }
  std::string error;
  std::string raw;  // the first error without its position
  struct Warning {
    int line;  // protobuf's column is past the field's name: not kept
    std::string message;
  };
  std::vector<Warning> warnings;
};

// The message type and field of protobuf's text-format complaint 'Message
// type "T" has no field named "F".'; false for any other message.
bool UnknownField(absl::string_view message, std::string* type, std::string* field) {
  constexpr absl::string_view kType = "Message type \"";
  constexpr absl::string_view kField = "\" has no field named \"";
  const size_t t = message.find(kType);
  if (t == absl::string_view::npos) return false;
  const size_t f = message.find(kField, t + kType.size());
  if (f == absl::string_view::npos) return false;
  const size_t end = message.find('"', f + kField.size());
  if (end == absl::string_view::npos) return false;
  *type = std::string(message.substr(t + kType.size(), f - t - kType.size()));
  *field = std::string(message.substr(f + kField.size(), end - f - kField.size()));
  return true;
}

// Fields of Triton's ModelConfig that today's form does not have: a
// config.pbtxt whose first unknown field (for today's form) is one of these
// is read in Triton's schema.
bool TritonOnlyField(absl::string_view type, absl::string_view field) {
  static const std::set<std::string, std::less<>> kTop = {
      "name", "platform", "backend", "runtime", "max_batch_size", "input", "output",
      "batch_input", "batch_output", "optimization", "sequence_batching", "ensemble_scheduling",
      "instance_group", "default_model_filename", "cc_model_filenames", "metric_tags",
      "parameters", "model_warmup", "model_operations", "model_transaction_policy",
      "model_repository_agents", "response_cache"};
  static const std::set<std::string, std::less<>> kBatching = {
      "preferred_batch_size", "max_queue_delay_microseconds", "preserve_ordering",
      "priority_levels", "default_priority_level", "default_queue_policy",
      "priority_queue_policy"};
  if (type == "sparse.v1.ModelConfig") return kTop.count(field) > 0;
  if (type == "sparse.v1.DynamicBatching") return kBatching.count(field) > 0;
  return false;
}

// Why a field of Triton's schema is refused (the field as a path).
std::string WhyRefused(absl::string_view path) {
  static const std::map<std::string, std::string, std::less<>> kWhy = {
      {"sequence_batching", "sequence batching is not supported: the models are stateless"},
      {"ensemble_scheduling", "ensembles are not supported: each model serves on its own"},
      {"optimization", "the server chooses its kernels itself (oneDNN, per precision); set "
                       "parameters { key: \"precision\" ... } for the number format"},
      {"model_warmup", "the server warms every version up itself before it serves"},
      {"batch_input", "batch inputs are not supported: the model has one input, 'input'"},
      {"batch_output", "batch outputs are not supported: the model has one output, 'output'"},
      {"model_transaction_policy", "decoupled models are not supported: one response per request"},
      {"response_cache", "the response cache is not supported"},
      {"model_repository_agents", "repository agents are not supported"},
      {"dynamic_batching.default_queue_policy", "queue policies are not supported yet"},
      {"dynamic_batching.priority_queue_policy", "queue policies are not supported yet"},
      {"precision", "in Triton's schema it is a model option: parameters { key: \"precision\" "
                    "value { string_value: \"INT8\" } }"},
  };
  auto it = kWhy.find(path);
  return it != kWhy.end() ? it->second : "sparse-serve does not support it";
}

// The path of a field in Triton's schema, from its message type.
std::string TritonPath(absl::string_view type, absl::string_view field) {
  static const std::map<std::string, std::string, std::less<>> kPrefix = {
      {"inference.ModelConfig", ""},
      {"inference.ModelDynamicBatching", "dynamic_batching."},
      {"inference.ModelInstanceGroup", "instance_group."},
      {"inference.ModelInput", "input."},
      {"inference.ModelOutput", "output."},
      {"inference.ModelParameter", "parameters.value."},
      {"inference.ModelVersionPolicy", "version_policy."},
      {"inference.ModelVersionPolicy.Latest", "version_policy.latest."},
      {"inference.ModelVersionPolicy.All", "version_policy.all."},
      {"inference.ModelVersionPolicy.Specific", "version_policy.specific."},
  };
  auto it = kPrefix.find(type);
  return absl::StrCat(it != kPrefix.end() ? it->second : absl::StrCat(type, "."), field);
}

constexpr absl::string_view kTriton = "config.pbtxt (Triton's schema)";

absl::Status TritonError(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(kTriton, ": ", what));
}

// Checks what both forms share (version policy, batching bounds, precision,
// priorities) once the config is in today's form.
absl::Status ValidateModelConfig(const sparse::v1::ModelConfig& config) {
  const sparse::v1::VersionPolicy& policy = config.version_policy();
  if (policy.has_latest() && policy.latest().num_versions() < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        kConfigFile, ": version_policy.latest.num_versions must be >= 1, got ",
        policy.latest().num_versions()));
  }
  if (policy.has_specific()) {
    if (policy.specific().versions().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(kConfigFile, ": version_policy.specific lists no versions"));
    }
    for (int64_t v : policy.specific().versions()) {
      if (v < 1) {
        return absl::InvalidArgumentError(absl::StrCat(
            kConfigFile, ": version_policy.specific.versions must be >= 1, got ", v));
      }
    }
  }
  if (config.has_dynamic_batching()) {
    const sparse::v1::DynamicBatching& b = config.dynamic_batching();
    if (b.max_batch_rows() < 0 || b.max_batch_rows() > (1 << 20) || b.max_queue_delay_us() < 0 ||
        b.max_queue_delay_us() > 10'000'000 || b.max_queue_size() < 0 ||
        b.max_queue_size() > (1 << 24)) {
      return absl::InvalidArgumentError(absl::StrCat(
          kConfigFile, ": dynamic_batching needs 0 <= max_batch_rows <= 1048576, ",
          "0 <= max_queue_delay_us <= 10000000 and 0 <= max_queue_size <= 16777216; got ",
          b.ShortDebugString()));
    }
  }
  if (!sparse::v1::Precision_IsValid(config.precision())) {
    return absl::InvalidArgumentError(absl::StrCat(
        kConfigFile, ": precision must be FP32, BF16 or INT8; got ", config.precision()));
  }
  if (config.priority_levels() > kMaxPriorityLevels) {
    return absl::InvalidArgumentError(absl::StrCat(kConfigFile, ": priority_levels must be <= ",
                                                   kMaxPriorityLevels, ", got ",
                                                   config.priority_levels()));
  }
  if (config.priority_levels() == 0
          ? config.default_priority_level() != 0
          : config.default_priority_level() < 1 ||
                config.default_priority_level() > config.priority_levels()) {
    return absl::InvalidArgumentError(absl::StrCat(
        kConfigFile, ": default_priority_level must be in [1, priority_levels] (0 without "
        "priority_levels), got ", config.default_priority_level(), " with priority_levels ",
        config.priority_levels()));
  }
  if (config.declared_input_dim() < 0 || config.declared_output_dim() < 0 ||
      config.instance_count() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        kConfigFile, ": declared_input_dim, declared_output_dim and instance_count must be >= 0"));
  }
  if (config.has_limits()) {
    const sparse::v1::Limits& l = config.limits();
    if (l.max_in_flight() < 0 || l.max_in_flight() > (1 << 24) || l.worker_weight() > kMaxWorkerWeight ||
        !sparse::v1::Limits::Action_IsValid(l.over_limit())) {
      return absl::InvalidArgumentError(absl::StrCat(
          kConfigFile, ": limits needs 0 <= max_in_flight <= 16777216, over_limit REJECT or "
          "DELAY and 0 <= worker_weight <= ", kMaxWorkerWeight, "; got ", l.ShortDebugString()));
    }
    const bool delays = l.over_limit() == sparse::v1::Limits::DELAY;
    if (delays ? l.max_delay_us() < 1 || l.max_delay_us() > kMaxDelayUs : l.max_delay_us() != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          kConfigFile, ": limits.max_delay_us is how long a request over max_in_flight waits "
          "with over_limit: DELAY, in [1, ", kMaxDelayUs, "] (0 with REJECT); got ",
          l.max_delay_us(), " with over_limit: ", sparse::v1::Limits::Action_Name(l.over_limit())));
    }
  }
  return absl::OkStatus();
}

// The width a Triton input or output declares: dims [w] (the batch
// dimension apart, max_batch_size > 0), or [w] or [-1, w] with
// max_batch_size 0 (the rows are part of the shape).
absl::StatusOr<int64_t> DeclaredWidth(absl::string_view what,
                                      const google::protobuf::RepeatedField<int64_t>& dims,
                                      bool batched) {
  const bool ok = dims.size() == 1 ? dims[0] >= 1
                                   : !batched && dims.size() == 2 && dims[0] == -1 && dims[1] >= 1;
  if (!ok) {
    return TritonError(absl::StrCat(
        what, ".dims must be ",
        batched ? "[w] (the batch dimension is implicit with max_batch_size > 0)"
                : "[w] or [-1, w] (max_batch_size 0)",
        " with w the model's width, got [", absl::StrJoin(dims, ", "), "]"));
  }
  return dims[dims.size() - 1];
}

// Maps a config in Triton's schema to today's form, refusing every field
// the server cannot honour by name.
absl::StatusOr<sparse::v1::ModelConfig> FromTriton(const inference::ModelConfig& t,
                                                   absl::string_view model) {
  sparse::v1::ModelConfig config;
  if (!t.name().empty() && !model.empty() && t.name() != model) {
    return TritonError(absl::StrCat("name is \"", ClientText(t.name(), 128),
                                    "\" but the model directory is \"", ClientText(model, 128),
                                    "\"; they must be the same (Triton's rule)"));
  }
  if (!t.platform().empty() && !absl::StartsWith(t.platform(), "sparse-serve")) {
    return TritonError(absl::StrCat("platform is \"", ClientText(t.platform(), 128),
                                    "\"; this server serves sparse-serve checkpoints only: leave "
                                    "platform out, or \"sparse-serve\""));
  }
  if (!t.backend().empty() && t.backend() != "sparse-serve") {
    return TritonError(absl::StrCat("backend is \"", ClientText(t.backend(), 128),
                                    "\"; this server serves sparse-serve checkpoints only: leave "
                                    "backend out, or \"sparse-serve\""));
  }
  if (t.max_batch_size() < 0 || t.max_batch_size() > (1 << 20)) {
    return TritonError(absl::StrCat("max_batch_size must be in [0, 1048576], got ",
                                    t.max_batch_size()));
  }
  const bool batched = t.max_batch_size() > 0;
  if (t.input_size() > 1 || t.output_size() > 1) {
    return TritonError(absl::StrCat("the model has one input ('input') and one output ('output'); "
                                    "got ", t.input_size(), " input(s) and ", t.output_size(),
                                    " output(s)"));
  }
  for (const inference::ModelInput& input : t.input()) {
    if (input.name() != "input") {
      return TritonError(absl::StrCat("input.name must be \"input\" (the model's input tensor as "
                                      "the server's OIP names it), got \"",
                                      ClientText(input.name(), 128), "\""));
    }
    if (input.data_type() != inference::TYPE_FP32) {
      return TritonError(absl::StrCat("input.data_type must be TYPE_FP32, got ",
                                      inference::DataType_Name(input.data_type())));
    }
    ASSIGN_OR_RETURN(const int64_t width, DeclaredWidth("input", input.dims(), batched));
    config.set_declared_input_dim(width);
  }
  for (const inference::ModelOutput& output : t.output()) {
    if (output.name() != "output") {
      return TritonError(absl::StrCat("output.name must be \"output\" (the model's output tensor "
                                      "as the server's OIP names it), got \"",
                                      ClientText(output.name(), 128), "\""));
    }
    if (output.data_type() != inference::TYPE_FP32) {
      return TritonError(absl::StrCat("output.data_type must be TYPE_FP32, got ",
                                      inference::DataType_Name(output.data_type())));
    }
    ASSIGN_OR_RETURN(const int64_t width, DeclaredWidth("output", output.dims(), batched));
    config.set_declared_output_dim(width);
  }
  if (t.has_version_policy()) {
    // The same messages, field for field.
    if (!config.mutable_version_policy()->ParseFromString(t.version_policy().SerializeAsString())) {
      return TritonError("version_policy does not convert");  // not reached: same wire format
    }
  }
  if (t.has_dynamic_batching()) {
    const inference::ModelDynamicBatching& b = t.dynamic_batching();
    if (!batched) {
      return TritonError("dynamic_batching needs max_batch_size > 0 (the most rows a batch holds)");
    }
    if (b.max_queue_delay_microseconds() > 10'000'000) {
      return TritonError(absl::StrCat(
          "dynamic_batching.max_queue_delay_microseconds must be <= 10000000, got ",
          b.max_queue_delay_microseconds()));
    }
    if (b.preserve_ordering()) {
      return TritonError(
          "dynamic_batching.preserve_ordering is refused: batches of a model run on several "
          "workers at once and answer as each finishes");
    }
    sparse::v1::DynamicBatching* out = config.mutable_dynamic_batching();
    out->set_max_batch_rows(t.max_batch_size());
    out->set_max_queue_delay_us(static_cast<int64_t>(b.max_queue_delay_microseconds()));
    if (b.preferred_batch_size_size() > 1) {
      return TritonError(absl::StrCat(
          "dynamic_batching.preferred_batch_size takes at most one size (the rows a batch waits "
          "for, at most max_batch_size), got [",
          absl::StrJoin(b.preferred_batch_size(), ", "), "]"));
    }
    for (int32_t size : b.preferred_batch_size()) {
      if (size < 1 || size > t.max_batch_size()) {
        return TritonError(absl::StrCat("dynamic_batching.preferred_batch_size must be in [1, ",
                                        t.max_batch_size(), "] (max_batch_size), got ", size));
      }
      out->set_max_batch_rows(size);
    }
    config.set_priority_levels(b.priority_levels());
    config.set_default_priority_level(b.default_priority_level());
  }
  if (t.instance_group_size() > 1) {
    return TritonError(absl::StrCat("instance_group takes one group (KIND_CPU), got ",
                                    t.instance_group_size()));
  }
  for (const inference::ModelInstanceGroup& group : t.instance_group()) {
    if (group.kind() != inference::ModelInstanceGroup::KIND_CPU &&
        group.kind() != inference::ModelInstanceGroup::KIND_AUTO) {
      return TritonError(absl::StrCat("instance_group.kind must be KIND_CPU (the server runs on "
                                      "CPUs only), got ",
                                      inference::ModelInstanceGroup::Kind_Name(group.kind())));
    }
    if (group.count() < 0) {
      return TritonError(absl::StrCat("instance_group.count must be >= 0, got ", group.count()));
    }
    config.set_instance_count(group.count());
  }
  // Model options, sorted: the first refused one is always the same.
  std::map<std::string, std::string> parameters;
  for (const auto& [key, value] : t.parameters()) parameters[key] = value.string_value();
  for (const auto& [key, value] : parameters) {
    const std::string field = absl::StrCat("parameters[\"", ClientText(key, 64), "\"]");
    if (key == "precision") {
      sparse::v1::Precision precision;
      if (!sparse::v1::Precision_Parse(value, &precision)) {
        return TritonError(absl::StrCat(field, " must be FP32, BF16 or INT8, got \"",
                                        ClientText(value, 64), "\""));
      }
      config.set_precision(precision);
    } else if (key == "max_queue_size" || key == "paths") {
      if (!t.has_dynamic_batching()) {
        return TritonError(absl::StrCat(field, " is a dynamic batching option: add "
                                        "dynamic_batching { } to use it"));
      }
      if (key == "max_queue_size") {
        int64_t size = 0;
        if (!absl::SimpleAtoi(value, &size) || size < 1 || size > (1 << 24)) {
          return TritonError(absl::StrCat(field, " must be an integer in [1, 16777216], got \"",
                                          ClientText(value, 64), "\""));
        }
        config.mutable_dynamic_batching()->set_max_queue_size(size);
      } else {
        sparse::v1::DynamicBatching::Paths paths;
        if (!sparse::v1::DynamicBatching::Paths_Parse(value, &paths)) {
          return TritonError(absl::StrCat(field, " must be BOTH, DENSE_ONLY or SPARSE_ONLY, got \"",
                                          ClientText(value, 64), "\""));
        }
        config.mutable_dynamic_batching()->set_paths(paths);
      }
    } else if (key == "max_in_flight" || key == "max_delay_us" || key == "worker_weight") {
      const int64_t most = key == "max_in_flight" ? (1 << 24)
                           : key == "max_delay_us" ? kMaxDelayUs
                                                   : kMaxWorkerWeight;
      int64_t number = 0;
      if (!absl::SimpleAtoi(value, &number) || number < 0 || number > most) {
        return TritonError(absl::StrCat(field, " must be an integer in [0, ", most, "], got \"",
                                        ClientText(value, 64), "\""));
      }
      sparse::v1::Limits* limits = config.mutable_limits();
      if (key == "max_in_flight") limits->set_max_in_flight(number);
      if (key == "max_delay_us") limits->set_max_delay_us(number);
      if (key == "worker_weight") limits->set_worker_weight(static_cast<uint32_t>(number));
    } else if (key == "over_limit") {
      sparse::v1::Limits::Action action;
      if (!sparse::v1::Limits::Action_Parse(value, &action)) {
        return TritonError(absl::StrCat(field, " must be REJECT or DELAY, got \"",
                                        ClientText(value, 64), "\""));
      }
      config.mutable_limits()->set_over_limit(action);
    } else if (key == "max_batch_rows") {
      return TritonError(absl::StrCat(field, " is refused: in Triton's schema it is "
                                      "max_batch_size (or dynamic_batching.preferred_batch_size)"));
    } else if (key == "max_queue_delay_us") {
      return TritonError(absl::StrCat(field, " is refused: in Triton's schema it is "
                                      "dynamic_batching.max_queue_delay_microseconds"));
    } else if (key == "flops_per_row" || key == "weight_bytes_per_row" ||
               key == "dense_flops_per_row" || key == "dense_cost_only") {
      return TritonError(absl::StrCat(field, " is refused: the server reports it (ModelConfig); "
                                      "it is not a setting"));
    } else {
      return TritonError(absl::StrCat(field, " is refused: not a model option (the options are "
                                      "precision, max_queue_size and paths)"));
    }
  }
  return config;
}

// config.pbtxt in Triton's schema: parsed skipping unknown fields, then the
// first one skipped refused by name, then mapped.
absl::StatusOr<sparse::v1::ModelConfig> ParseTritonConfig(absl::string_view text,
                                                          absl::string_view model) {
  inference::ModelConfig triton;
  google::protobuf::TextFormat::Parser parser;
  FirstError errors;
  parser.RecordErrorsTo(&errors);
  parser.AllowUnknownField(true);
  // An unknown field is refused even when the parse then fails: protobuf
  // 3.21 cannot skip some unknown values (a list of messages without ':',
  // `model_warmup [ {...} ]`), and the field came first.
  const bool parsed = parser.ParseFromString(std::string(text), &triton);
  for (const FirstError::Warning& warning : errors.warnings) {
    std::string type, field;
    if (!UnknownField(warning.message, &type, &field)) continue;
    const std::string path = TritonPath(type, field);
    return TritonError(absl::StrCat("line ", warning.line, ": ",
                                    ClientText(path, 128), " is refused: ", WhyRefused(path)));
  }
  if (!parsed) return TritonError(errors.error);
  return FromTriton(triton, model);
}

}  // namespace

absl::StatusOr<sparse::v1::ModelConfig> ParseModelConfig(absl::string_view text,
                                                         absl::string_view model) {
  sparse::v1::ModelConfig config;
  google::protobuf::TextFormat::Parser parser;
  FirstError errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(std::string(text), &config)) {
    std::string type, field;
    if (!UnknownField(errors.raw, &type, &field) || !TritonOnlyField(type, field)) {
      return absl::InvalidArgumentError(absl::StrCat(kConfigFile, " ", errors.error));
    }
    ASSIGN_OR_RETURN(config, ParseTritonConfig(text, model));
  }
  RETURN_IF_ERROR(ValidateModelConfig(config));
  return config;
}

absl::Status CheckDeclaredDims(const sparse::v1::ModelConfig& config, int64_t input_dim,
                               int64_t output_dim) {
  if (config.declared_input_dim() != 0 && config.declared_input_dim() != input_dim) {
    return absl::FailedPreconditionError(absl::StrCat(
        kConfigFile, " declares input dims [", config.declared_input_dim(),
        "], but this version's model takes d = ", input_dim, " inputs"));
  }
  if (config.declared_output_dim() != 0 && config.declared_output_dim() != output_dim) {
    return absl::FailedPreconditionError(absl::StrCat(
        kConfigFile, " declares output dims [", config.declared_output_dim(),
        "], but this version's model gives o = ", output_dim, " outputs"));
  }
  return absl::OkStatus();
}

Precision PrecisionFromConfig(sparse::v1::Precision precision) {
  switch (precision) {
    case sparse::v1::BF16:
      return Precision::kBf16;
    case sparse::v1::INT8:
      return Precision::kInt8;
    default:
      return Precision::kFp32;
  }
}

absl::Status CheckModelName(absl::string_view name) {
  if (name.empty() || name == "." || name == ".." || name[0] == '.' ||
      name.find('/') != absl::string_view::npos || name.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        "a model name is a plain directory name: not empty, not hidden, without '/' or NUL");
  }
  return absl::OkStatus();
}

AspiredVersions SelectVersions(const sparse::v1::VersionPolicy& policy,
                               const std::vector<int64_t>& on_disk) {
  AspiredVersions aspired;
  const std::set<int64_t> specific(policy.specific().versions().begin(),
                                   policy.specific().versions().end());
  for (int64_t version : on_disk) {
    if (policy.has_specific() && specific.count(version) == 0) continue;
    aspired.candidates.push_back(version);
  }
  aspired.count = policy.has_all() || policy.has_specific()
                      ? aspired.candidates.size()
                      : static_cast<size_t>(policy.has_latest() ? policy.latest().num_versions() : 1);
  return aspired;
}

std::string RepositorySource::ModelDir(const std::string& model) const {
  return single_model_.empty() ? (fs::path(root_) / model).string() : root_;
}

RepositorySource::SingleLayout RepositorySource::ReadSingleLayout(std::error_code* ec) const {
  SingleLayout layout;
  for (fs::directory_iterator it(root_, *ec); !*ec && it != fs::directory_iterator();
       it.increment(*ec)) {
    const std::string name = it->path().filename().string();
    std::error_code entry_ec;
    int64_t version = 0;
    if (absl::SimpleAtoi(name, &version) && version >= 1 && std::to_string(version) == name &&
        it->is_directory(entry_ec)) {
      layout.version_dirs.push_back(version);
    } else if ((name == "manifest.json" || name == "model.safetensors") &&
               !it->is_directory(entry_ec)) {
      layout.version_files.push_back(name);
    }
  }
  std::sort(layout.version_dirs.rbegin(), layout.version_dirs.rend());
  std::sort(layout.version_files.begin(), layout.version_files.end());
  return layout;
}

std::vector<std::string> RepositorySource::ListModels(std::error_code* ec) const {
  std::vector<std::string> models;
  if (!single_model_.empty()) {
    if (fs::is_directory(root_, *ec)) models.push_back(single_model_);
    return models;
  }
  for (fs::directory_iterator it(root_, *ec); !*ec && it != fs::directory_iterator();
       it.increment(*ec)) {
    const std::string name = it->path().filename().string();
    std::error_code dir_ec;
    if (CheckModelName(name).ok() && it->is_directory(dir_ec)) models.push_back(name);
  }
  return models;
}

bool RepositorySource::HasModel(const std::string& model) const {
  std::error_code ec;
  if (!single_model_.empty()) return model == single_model_ && fs::is_directory(root_, ec);
  return CheckModelName(model).ok() && fs::is_directory(fs::path(root_) / model, ec);
}

std::string RepositorySource::VersionDir(const std::string& model, int64_t version) const {
  if (!single_model_.empty()) {
    // One version's files directly in the root: that is version 1.
    std::error_code ec;
    if (version == 1 && !ReadSingleLayout(&ec).version_files.empty()) return root_;
  }
  return (fs::path(ModelDir(model)) / std::to_string(version)).string();
}

std::vector<int64_t> RepositorySource::ListVersions(const std::string& model,
                                                    std::error_code* ec,
                                                    std::vector<std::string>* not_versions) const {
  std::vector<int64_t> versions;
  if (!single_model_.empty()) {
    if (model != single_model_) return versions;
    const SingleLayout layout = ReadSingleLayout(ec);
    // Both a version's files and version directories: ambiguous, nothing
    // serves (NothingToServe says why).
    if (*ec || (!layout.version_files.empty() && !layout.version_dirs.empty())) return versions;
    if (!layout.version_files.empty()) return {1};
    if (layout.version_dirs.empty() && not_versions != nullptr) {
      ListVersionsIn(root_, ec, not_versions);
    }
    return layout.version_dirs;
  }
  return ListVersionsIn(ModelDir(model), ec, not_versions);
}

std::vector<int64_t> RepositorySource::ListVersionsIn(const std::string& dir, std::error_code* ec,
                                                      std::vector<std::string>* not_versions) {
  std::vector<int64_t> versions;
  fs::directory_iterator it(dir, *ec);
  for (; !*ec && it != fs::directory_iterator(); it.increment(*ec)) {
    int64_t version = 0;
    std::error_code entry_ec;
    // Only canonical names ("7", not "007", "+7" or " 7"): a version is
    // looked up on disk by its number's name.
    const std::string name = it->path().filename().string();
    if (absl::SimpleAtoi(name, &version) && version >= 1 && std::to_string(version) == name &&
        it->is_directory(entry_ec)) {
      versions.push_back(version);
    } else if (not_versions != nullptr && !name.empty() && name[0] != '.' &&
               it->is_directory(entry_ec)) {
      not_versions->push_back(name);
    }
  }
  std::sort(versions.rbegin(), versions.rend());
  if (not_versions != nullptr) std::sort(not_versions->begin(), not_versions->end());
  return versions;
}

std::string RepositorySource::NothingToServe(const std::string& model) const {
  constexpr absl::string_view kReason = "no version directory to serve";
  std::error_code ec;
  if (!single_model_.empty()) {
    const SingleLayout layout = ReadSingleLayout(&ec);
    if (!ec && !layout.version_files.empty() && !layout.version_dirs.empty()) {
      std::vector<std::string> dirs;
      for (int64_t v : layout.version_dirs) dirs.push_back(absl::StrCat(v, "/"));
      return absl::StrCat(
          "--model_name: the repository holds both version directories (",
          absl::StrJoin(dirs, ", "), ") and a version's own files (",
          absl::StrJoin(layout.version_files, ", "),
          "); KServe's layout is one or the other: a model (version directories) or one "
          "version (its files)");
    }
    if (!ec && layout.version_dirs.empty() && layout.version_files.empty()) {
      return absl::StrCat(
          "--model_name: the repository holds neither version directories (1/, 2/, ...) nor a "
          "version's files (manifest.json and model.safetensors); a repository of model "
          "directories is served without --model_name");
    }
  }
  std::vector<std::string> others;
  const std::vector<int64_t> versions = ListVersions(model, &ec, &others);
  if (ec) return absl::StrCat(kReason, " (cannot list it: ", ec.message(), ")");
  if (!versions.empty()) {
    return absl::StrCat(kReason, ": config.pbtxt's version_policy selects none of versions ",
                        absl::StrJoin(versions, ", "));
  }
  if (others.empty()) {
    return absl::StrCat(kReason, " (the model directory holds no directory; a version is a "
                                 "directory named by an integer >= 1, e.g. ",
                        ClientText(model), "/1/)");
  }
  const size_t count = others.size();
  if (others.size() > 8) others.resize(8);  // the first few say enough
  for (std::string& name : others) name = absl::StrCat(ClientText(name, 64), "/");
  return absl::StrCat(kReason, ": ", absl::StrJoin(others, ", "), count > others.size() ? ", ..." : "",
                      count == 1 ? " is not a version" : " are not versions",
                      " (a version directory is named by an integer >= 1 without leading "
                      "zeros, e.g. 1/)");
}

absl::Status CheckNotDenseTwinName(absl::string_view name) {
  if (!absl::EndsWith(name, kDenseTwinSuffix) || name.size() == kDenseTwinSuffix.size()) {
    return absl::OkStatus();
  }
  const absl::string_view twin_of = name.substr(0, name.size() - kDenseTwinSuffix.size());
  return absl::FailedPreconditionError(absl::StrCat(
      "refused: a model name ending in '.dense' names the dense twin of model '",
      ClientText(twin_of, 128), "' over REST and OIP; rename the directory (e.g. '",
      ClientText(twin_of, 128), "_dense')"));
}

std::string RepositorySource::Fingerprint(const std::string& dir) {
  std::vector<std::string> parts;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    std::error_code file_ec;
    const auto size = it->file_size(file_ec);
    const auto time = it->last_write_time(file_ec);
    parts.push_back(absl::StrCat(it->path().filename().string(), ":", file_ec ? 0 : size, ":",
                                 time.time_since_epoch().count()));
  }
  std::sort(parts.begin(), parts.end());
  return absl::StrJoin(parts, ",");
}

uint64_t RepositorySource::FileBytes(const std::string& dir) {
  uint64_t bytes = 0;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    std::error_code file_ec;
    if (!it->is_regular_file(file_ec)) continue;
    const uintmax_t size = it->file_size(file_ec);
    if (!file_ec) bytes += size;
  }
  return bytes;
}

bool RepositorySource::UnderRoot(const std::string& resolved) const {
  std::error_code ec;
  const fs::path root = fs::canonical(root_, ec);
  if (ec) return false;
  const fs::path path(resolved);
  // Component by component: /models2 is not inside /models.
  return std::mismatch(root.begin(), root.end(), path.begin(), path.end()).first == root.end();
}

bool RepositorySource::InsideRoot(const std::string& dir) const {
  std::error_code ec;
  const fs::path real = fs::canonical(dir, ec);
  if (ec || !UnderRoot(real.string())) return false;
  // The files too: a version's model.safetensors may be a link as well.
  for (fs::directory_iterator it(real, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    std::error_code file_ec;
    const fs::path file = fs::canonical(it->path(), file_ec);
    if (file_ec || !UnderRoot(file.string())) return false;
  }
  return !ec;
}

absl::StatusOr<std::string> RepositorySource::ReadConfigText(const std::string& model) const {
  const fs::path path = fs::path(ModelDir(model)) / kConfigFile;
  std::error_code ec;
  if (fs::symlink_status(path, ec).type() == fs::file_type::not_found) return std::string();
  const fs::path real = fs::canonical(path, ec);
  if (ec == std::errc::no_such_file_or_directory) return std::string();  // gone, or dangling
  if (ec || !UnderRoot(real.string())) {
    return absl::InvalidArgumentError(absl::StrCat(
        kConfigFile, " leads outside the model repository (a symlink?); refused"));
  }
  // Opened without blocking (a FIFO), only if it is a regular file (not a
  // device or a directory), and only up to the cap: never a hang while
  // loading, never unbounded memory.
  absl::StatusOr<FileContents> file = FileContents::Read(
      real.string(), kConfigFile, kMaxConfigBytes,
      absl::StrCat("more than the ", kMaxConfigBytes, " bytes a config may have"));
  if (absl::IsNotFound(file.status())) return std::string();
  if (!file.ok()) return file.status();
  return std::string(reinterpret_cast<const char*>(file->bytes().data()), file->bytes().size());
}

void RepositorySource::ReadModelConfig(
    const std::string& model, const ModelState* previous, ModelState* state,
    std::vector<std::string>* log,
    const std::function<absl::Status(const sparse::v1::ModelConfig&)>& check) const {
  if (previous != nullptr) {
    state->config = previous->config;
    state->config_text = previous->config_text;
  }
  // Logged once per new error, saying what applies meanwhile.
  auto fail = [&](absl::string_view error) {
    state->config_error = std::string(error);
    if (previous == nullptr || previous->config_error != state->config_error) {
      log->push_back(absl::StrCat("model ", model, ": ", state->config_error,
                                  previous != nullptr && previous->config_error.empty()
                                      ? " (the previous config stays)"
                                      : " (defaults apply)"));
    }
  };
  absl::StatusOr<std::string> text = ReadConfigText(model);
  if (!text.ok()) {
    fail(text.status().message());
    return;
  }
  if (previous != nullptr && *text == previous->config_text && previous->config_error.empty()) {
    return;  // unchanged
  }
  absl::StatusOr<sparse::v1::ModelConfig> config = ParseModelConfig(*text, model);
  if (config.ok() && check) {
    if (absl::Status checked = check(*config); !checked.ok()) config = checked;
  }
  if (!config.ok()) {
    fail(config.status().message());
    return;
  }
  state->config = *std::move(config);
  state->config_text = *std::move(text);
  if (previous != nullptr) log->push_back(absl::StrCat("model ", model, ": new ", kConfigFile, " applied"));
}

}  // namespace sparse
