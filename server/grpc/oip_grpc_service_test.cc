// The Open Inference Protocol frontend's request translation, in process
// with no gRPC server (server/grpc/oip_grpc_service.h, TranslateModelInfer):
//  - fp32_contents and raw_input_contents (little-endian floats) give the
//    same core request; fp32_contents are referenced, raw bytes copied.
//  - "m" is the routed sparse path and "m.dense" its dense twin; a version
//    string is a positive decimal or empty (the newest).
//  - An unknown model, version or twin is NOT_FOUND; a wrong datatype,
//    shape, value count, input count or raw length is INVALID_ARGUMENT
//    saying what was expected and what came.
//  - A translated request run through the serving core (InferenceCore)
//    answers what the engine's own Predict gives for the same rows, with
//    the cost of those rows.
// The ModelInferResponse is built inside OipGrpcService::ModelInfer, which only
// a gRPC call reaches; it is not tested here.
#include "server/grpc/oip_grpc_service.h"

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "inference/grpc_service.pb.h"
#include "model_store/checkpoint.h"
#include "model_store/model_repository.h"
#include "server/core/inference_core.h"
#include "tests/testing/infer_and_wait.h"
#include "tests/testing/matchers.h"
#include "tests/testing/random_models.h"
#include "tests/testing/temp_dir.h"

namespace sparse {
namespace {

using ::sparse::testing::RandomDense;
using ::sparse::testing::RandomDsm;
using ::sparse::testing::RandomInputs;
using ::sparse::testing::RandomLshTable;
using ::sparse::testing::InferAndWait;
using ::sparse::testing::TempDir;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr int64_t kD = 8;     // input_dim of "m" (and its twin) and "lsh_alone"
constexpr int64_t kDsmD = 5;  // input_dim of "dsm": differs, so a shape is checked per model

// A request for `model` with one FP32 input of `shape`, its values in
// contents.fp32_contents.
inference::ModelInferRequest FpRequest(const std::string& model, const std::vector<int64_t>& shape,
                                       const std::vector<float>& values) {
  inference::ModelInferRequest r;
  r.set_model_name(model);
  r.set_id("req-1");
  auto* input = r.add_inputs();
  input->set_name("input");
  input->set_datatype("FP32");
  for (int64_t v : shape) input->add_shape(v);
  input->mutable_contents()->mutable_fp32_contents()->Add(values.begin(), values.end());
  return r;
}

// The same request with its values in raw_input_contents[0] instead.
inference::ModelInferRequest RawRequest(const std::string& model, const std::vector<int64_t>& shape,
                                        const std::vector<float>& values) {
  inference::ModelInferRequest r = FpRequest(model, shape, {});
  std::string raw(values.size() * sizeof(float), '\0');
  std::memcpy(raw.data(), values.data(), raw.size());  // the host is little-endian
  r.add_raw_input_contents(raw);
  return r;
}

std::vector<float> ToVector(absl::Span<const float> span) {
  return std::vector<float>(span.begin(), span.end());
}

class OipServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new TempDir("oip_grpc_service_test");
    // An LSH table with a dense twin.
    Checkpoint m;
    testing::LshShape lsh_shape;
    lsh_shape.d = kD;
    lsh_shape.o = 2;
    m.sparse = RandomLshTable(lsh_shape, 1);
    m.dense = RandomDense(kD, 32, 2, Activation::kRelu, 2);
    ASSERT_OK(WriteCheckpoint((*root_ / "m").string(), 1, m));
    // A DSM without a twin: its dense path is its own weights unmasked.
    Checkpoint dsm;
    testing::DsmShape dsm_shape;
    dsm_shape.d = kDsmD;
    dsm_shape.o = 3;
    dsm_shape.experts = 4;
    dsm_shape.active_units = 8;
    dsm.sparse = RandomDsm(dsm_shape, 3);
    ASSERT_OK(WriteCheckpoint((*root_ / "dsm").string(), 1, dsm));
    // An LSH table without a twin: it has no dense path at all.
    Checkpoint alone;
    testing::LshShape alone_shape;
    alone_shape.d = kD;
    alone.sparse = RandomLshTable(alone_shape, 4);
    ASSERT_OK(WriteCheckpoint((*root_ / "lsh_alone").string(), 1, alone));

    ModelRepository::Options options;
    options.max_batch_rows = 64;
    options.log = [](const std::string&) {};
    std::vector<std::string> errors;
    absl::StatusOr<std::unique_ptr<ModelRepository>> repository =
        ModelRepository::Open(root_->string(), options, &errors);
    ASSERT_TRUE(repository.ok()) << repository.status();
    ASSERT_TRUE(errors.empty()) << errors.front();
    repository_ = repository->release();
    // Translation reads the models through a core's read API.
    core_ = new InferenceCore(repository_, InferenceCore::Options{});
  }
  static void TearDownTestSuite() {
    delete core_;
    core_ = nullptr;
    delete repository_;
    repository_ = nullptr;
    delete root_;
    root_ = nullptr;
  }

  static absl::StatusOr<InferRequest> Translate(const inference::ModelInferRequest& request,
                                                std::vector<float>* storage,
                                                OipEncoding encoding = OipEncoding::kProtobuf) {
    return TranslateModelInfer(*core_, request, storage, encoding);
  }

  // Translating `request` (sent in `encoding`) fails with `code` and a
  // message holding `parts` and none of `absent`.
  static void ExpectRefused(const inference::ModelInferRequest& request, absl::StatusCode code,
                            const std::vector<std::string>& parts,
                            OipEncoding encoding = OipEncoding::kProtobuf,
                            const std::vector<std::string>& absent = {}) {
    std::vector<float> storage;
    const absl::StatusOr<InferRequest> translated = Translate(request, &storage, encoding);
    ASSERT_FALSE(translated.ok()) << "accepted a bad request";
    EXPECT_EQ(translated.status().code(), code) << translated.status();
    for (const std::string& part : parts) {
      EXPECT_THAT(std::string(translated.status().message()), HasSubstr(part));
    }
    for (const std::string& part : absent) {
      EXPECT_THAT(std::string(translated.status().message()), Not(HasSubstr(part)));
    }
  }

  static TempDir* root_;
  static ModelRepository* repository_;
  static InferenceCore* core_;
};

TempDir* OipServiceTest::root_ = nullptr;
ModelRepository* OipServiceTest::repository_ = nullptr;
InferenceCore* OipServiceTest::core_ = nullptr;

TEST_F(OipServiceTest, Fp32AndRawContentsGiveTheSameRequest) {
  const int64_t rows = 3;
  const std::vector<float> x = RandomInputs(rows, kD, 11);
  const inference::ModelInferRequest fp = FpRequest("m", {rows, kD}, x);
  const inference::ModelInferRequest raw = RawRequest("m", {rows, kD}, x);

  std::vector<float> fp_storage, raw_storage;
  ASSERT_OK_AND_ASSIGN(const InferRequest a, Translate(fp, &fp_storage));
  ASSERT_OK_AND_ASSIGN(const InferRequest b, Translate(raw, &raw_storage));
  for (const InferRequest* r : {&a, &b}) {
    EXPECT_EQ(r->model, "m");
    EXPECT_EQ(r->version, 0);  // no version: the newest
    EXPECT_FALSE(r->dense);
    EXPECT_EQ(r->rows, rows);
    EXPECT_EQ(ToVector(r->inputs), x);
  }
  // fp32_contents are referenced where they are; raw bytes are copied into
  // the caller's storage.
  EXPECT_EQ(a.inputs.data(), fp.inputs(0).contents().fp32_contents().data());
  EXPECT_EQ(b.inputs.data(), raw_storage.data());
}

TEST_F(OipServiceTest, RawContentsAreCopiedAndOutliveTheRequest) {
  const std::vector<float> x = RandomInputs(2, kD, 12);
  std::vector<float> storage;
  InferRequest translated;
  {
    auto raw = std::make_unique<inference::ModelInferRequest>(RawRequest("m", {2, kD}, x));
    ASSERT_OK_AND_ASSIGN(translated, Translate(*raw, &storage));
    // Overwrite the bytes, then free the message: the copy must not change.
    raw->mutable_raw_input_contents(0)->assign(x.size() * sizeof(float), '\xff');
  }
  EXPECT_EQ(ToVector(translated.inputs), x);
}

TEST_F(OipServiceTest, AOneDimensionalShapeIsOneRow) {
  const std::vector<float> x = RandomInputs(1, kD, 13);
  // fp32_contents are referenced, so the message must outlive the request.
  const inference::ModelInferRequest fp_proto = FpRequest("m", {kD}, x);
  std::vector<float> storage;
  ASSERT_OK_AND_ASSIGN(const InferRequest fp, Translate(fp_proto, &storage));
  EXPECT_EQ(fp.rows, 1);
  EXPECT_EQ(ToVector(fp.inputs), x);
  ASSERT_OK_AND_ASSIGN(const InferRequest raw, Translate(RawRequest("m", {kD}, x), &storage));
  EXPECT_EQ(raw.rows, 1);
  EXPECT_EQ(ToVector(raw.inputs), x);
}

TEST_F(OipServiceTest, TheDenseSuffixNamesTheDenseTwin) {
  std::vector<float> storage;
  ASSERT_OK_AND_ASSIGN(const InferRequest twin,
                       Translate(FpRequest("m.dense", {1, kD}, RandomInputs(1, kD, 1)), &storage));
  EXPECT_EQ(twin.model, "m");  // the suffix is not part of the model's name
  EXPECT_TRUE(twin.dense);
  // A DSM without a twin still has a dense path (its own weights unmasked),
  // with its own input dimension.
  ASSERT_OK_AND_ASSIGN(
      const InferRequest dsm,
      Translate(FpRequest("dsm.dense", {2, kDsmD}, RandomInputs(2, kDsmD, 1)), &storage));
  EXPECT_EQ(dsm.model, "dsm");
  EXPECT_TRUE(dsm.dense);
  EXPECT_EQ(dsm.rows, 2);
  // An LSH table without a twin has none.
  ExpectRefused(FpRequest("lsh_alone.dense", {1, kD}, RandomInputs(1, kD, 1)),
                absl::StatusCode::kNotFound, {"'lsh_alone'", "no dense twin", "'lsh_alone.dense'"});
}

TEST_F(OipServiceTest, VersionIsAPositiveDecimalOrEmpty) {
  const std::vector<float> x = RandomInputs(1, kD, 2);
  std::vector<float> storage;
  inference::ModelInferRequest r = FpRequest("m", {1, kD}, x);
  r.set_model_version("1");
  ASSERT_OK_AND_ASSIGN(const InferRequest one, Translate(r, &storage));
  EXPECT_EQ(one.version, 1);

  r.set_model_version("2");  // well formed, not loaded
  ExpectRefused(r, absl::StatusCode::kNotFound, {"'m'", "no version 2"});
  for (const std::string bad : {"0", "-1", "x", "1.0", "v1"}) {
    SCOPED_TRACE(bad);
    r.set_model_version(bad);
    ExpectRefused(r, absl::StatusCode::kInvalidArgument,
                  {"positive integer or empty", "'" + bad + "'"});
  }
}

TEST_F(OipServiceTest, AnUnknownModelIsNotFound) {
  const std::vector<float> x = RandomInputs(1, kD, 3);
  ExpectRefused(FpRequest("nope", {1, kD}, x), absl::StatusCode::kNotFound, {"'nope'"});
  ExpectRefused(FpRequest("nope.dense", {1, kD}, x), absl::StatusCode::kNotFound, {"'nope'"});
  ExpectRefused(FpRequest("", {1, kD}, x), absl::StatusCode::kNotFound, {});
}

TEST_F(OipServiceTest, AWrongDatatypeIsInvalidArgument) {
  for (const std::string datatype : {"FP64", "FP16", "INT32", "fp32", ""}) {
    SCOPED_TRACE(datatype);
    inference::ModelInferRequest r = FpRequest("m", {1, kD}, RandomInputs(1, kD, 4));
    r.mutable_inputs(0)->set_datatype(datatype);
    ExpectRefused(r, absl::StatusCode::kInvalidArgument,
                  {"input 'input'", "expected datatype FP32", "got '" + datatype + "'"});
  }
}

TEST_F(OipServiceTest, AWrongShapeIsInvalidArgumentSayingWhatWasExpected) {
  struct Case {
    std::vector<int64_t> shape;
    std::string got;
  };
  const std::vector<Case> cases = {
      {{3, kD - 1}, "got [3, 7]"}, {{kD, 3}, "got [8, 3]"},   {{3, kD, 1}, "got [3, 8, 1]"},
      {{0, kD}, "got [0, 8]"},     {{-1, kD}, "got [-1, 8]"}, {{kD + 1}, "got [9]"},
      {{}, "got []"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.got);
    ExpectRefused(FpRequest("m", c.shape, RandomInputs(3, kD, 5)),
                  absl::StatusCode::kInvalidArgument,
                  {"input 'input'", "expected shape [rows, 8]", c.got});
  }
  // The shape is checked against the model asked for: "dsm" takes 5 inputs.
  ExpectRefused(FpRequest("dsm", {1, kD}, RandomInputs(1, kD, 5)),
                absl::StatusCode::kInvalidArgument, {"expected shape [rows, 5]", "got [1, 8]"});
}

TEST_F(OipServiceTest, MoreRowsThanTheLimitIsInvalidArgumentNamingTheLimitAndItsFlag) {
  // Refused from the shape alone, before rows x d values are looked for,
  // in the words the core's admission uses on every protocol.
  ExpectRefused(FpRequest("m", {core_->max_batch_rows() + 1, kD}, {}),
                absl::StatusCode::kInvalidArgument,
                {"batch of 1025 rows exceeds the limit of 1024 rows per request",
                 "sparse-server --max_batch_rows"});
  ExpectRefused(FpRequest("m", {int64_t{1} << 62, kD}, {}), absl::StatusCode::kInvalidArgument,
                {"the limit of 1024 rows", "--max_batch_rows"}, OipEncoding::kJson);
}

TEST_F(OipServiceTest, AWrongNumberOfValuesNamesTheFieldOfTheCallersProtocol) {
  for (int64_t values : {int64_t{0}, 3 * kD - 1, 3 * kD + 1, 2 * kD}) {
    SCOPED_TRACE(values);
    const inference::ModelInferRequest r = FpRequest("m", {3, kD}, RandomInputs(1, values, 6));
    const std::string got = "got " + std::to_string(values);
    ExpectRefused(r, absl::StatusCode::kInvalidArgument,
                  {"input 'input'", "shape [3, 8] needs 24 values in inputs[0].contents.fp32_contents",
                   got});
    // REST's JSON carries them in `data`: no protobuf field names.
    ExpectRefused(r, absl::StatusCode::kInvalidArgument,
                  {"input 'input'", "shape [3, 8] needs 24 values in inputs[0].data", got},
                  OipEncoding::kJson, {"fp32_contents", "contents"});
  }
}

TEST_F(OipServiceTest, AnInputNotNamedAsTheMetadataSaysIsRefusedOnBothProtocols) {
  for (const std::string name : {"x", "", "INPUT", "input0", "output"}) {
    SCOPED_TRACE(name);
    inference::ModelInferRequest r = FpRequest("m", {1, kD}, RandomInputs(1, kD, 12));
    r.mutable_inputs(0)->set_name(name);
    for (OipEncoding encoding : {OipEncoding::kProtobuf, OipEncoding::kJson}) {
      ExpectRefused(r, absl::StatusCode::kInvalidArgument,
                    {"unknown input '" + name + "'", "model 'm' has one input, 'input'",
                     "FP32, shape [rows, 8]"},
                    encoding);
    }
  }
  // The name is the one ModelMetadata gives.
  inference::ModelMetadataRequest asked;
  asked.set_name("m");
  inference::ModelMetadataResponse metadata;
  ASSERT_OK(OipProtocol(core_, nullptr).ModelMetadata(asked, &metadata));
  ASSERT_EQ(metadata.inputs_size(), 1);
  EXPECT_EQ(metadata.inputs(0).name(), "input");
}

TEST_F(OipServiceTest, AnythingButOneInputIsInvalidArgument) {
  inference::ModelInferRequest none = FpRequest("m", {1, kD}, RandomInputs(1, kD, 7));
  none.clear_inputs();
  ExpectRefused(none, absl::StatusCode::kInvalidArgument,
                {"expected exactly 1 input tensor", "shape [rows, 8]", "got 0"});

  inference::ModelInferRequest two = FpRequest("m", {1, kD}, RandomInputs(1, kD, 7));
  *two.add_inputs() = two.inputs(0);
  ExpectRefused(two, absl::StatusCode::kInvalidArgument,
                {"expected exactly 1 input tensor", "got 2"});
}

TEST_F(OipServiceTest, ARawLengthThatIsNotRowsTimesDTimesFourIsInvalidArgument) {
  const std::vector<float> x = RandomInputs(3, kD, 8);
  for (size_t bytes : {size_t{0}, size_t{95}, size_t{97}, size_t{24}, size_t{192}}) {
    SCOPED_TRACE(bytes);
    inference::ModelInferRequest r = RawRequest("m", {3, kD}, x);
    r.mutable_raw_input_contents(0)->resize(bytes, '\0');
    const std::string got = "got " + std::to_string(bytes);
    ExpectRefused(r, absl::StatusCode::kInvalidArgument,
                  {"raw_input_contents[0]", "expected 96 bytes", "3 x 8 FP32", got});
    // Over REST the bytes are an input's binary data, sized by its
    // binary_data_size parameter.
    ExpectRefused(r, absl::StatusCode::kInvalidArgument,
                  {"inputs[0].parameters.binary_data_size", "expected 96 bytes", "3 x 8 FP32", got},
                  OipEncoding::kJson, {"raw_input_contents"});
  }
}

TEST_F(OipServiceTest, RawAndFp32ContentsTogetherOrTwoRawEntriesAreInvalidArgument) {
  const std::vector<float> x = RandomInputs(1, kD, 9);
  inference::ModelInferRequest both = RawRequest("m", {1, kD}, x);
  both.mutable_inputs(0)->mutable_contents()->mutable_fp32_contents()->Add(x.begin(), x.end());
  ExpectRefused(both, absl::StatusCode::kInvalidArgument, {"not both"});

  inference::ModelInferRequest two = RawRequest("m", {1, kD}, x);
  two.add_raw_input_contents(two.raw_input_contents(0));
  ExpectRefused(two, absl::StatusCode::kInvalidArgument, {"raw_input_contents (one entry)"});
}

// The engine model behind a path, as the core runs it.
const Model& Engine(const LoadedModel& loaded, bool dense) {
  return dense ? static_cast<const Model&>(*loaded.dense) : *loaded.sparse;
}

TEST_F(OipServiceTest, TranslatedRequestsAnswerAsTheEngineThroughTheCore) {
  InferenceCore core(repository_, InferenceCore::Options{.workers = 1,
                                                         .max_queue = 16,
                                                         .max_batch_rows = 64,
                                                         .inline_max_flops = int64_t{1} << 40,
                                                         .observe = nullptr});
  struct Case {
    std::string name;  // as the client names it
    std::string model;
    bool dense;
    int64_t d;
  };
  const std::vector<Case> cases = {
      {"m", "m", false, kD},
      {"m.dense", "m", true, kD},
      {"dsm", "dsm", false, kDsmD},
      {"dsm.dense", "dsm", true, kDsmD},
  };
  const int64_t rows = 5;
  for (const Case& c : cases) {
    for (bool raw : {false, true}) {
      SCOPED_TRACE(c.name + (raw ? " raw" : " fp32"));
      const std::vector<float> x = RandomInputs(rows, c.d, 21);
      const inference::ModelInferRequest proto =
          raw ? RawRequest(c.name, {rows, c.d}, x) : FpRequest(c.name, {rows, c.d}, x);
      std::vector<float> storage;
      ASSERT_OK_AND_ASSIGN(const InferRequest request, Translate(proto, &storage));

      InferResponse response;
      ASSERT_OK(InferAndWait(core, request, &response));

      ASSERT_OK_AND_ASSIGN(const std::shared_ptr<const Servable> servable,
                           repository_->Find(c.model, 0));
      const LoadedModel& loaded = servable->loaded;
      const Model& engine = Engine(loaded, c.dense);
      std::vector<float> want(rows * engine.info().output_dim);
      PredictStats stats;
      ASSERT_OK(engine.Predict(x, rows, absl::MakeSpan(want), &stats, nullptr));

      EXPECT_EQ(response.model, c.model);
      EXPECT_EQ(response.version, 1);
      EXPECT_EQ(response.rows, rows);
      EXPECT_EQ(response.output_dim, engine.info().output_dim);
      EXPECT_EQ(response.outputs, want);
      EXPECT_EQ(response.dense_cost_only, c.dense && loaded.dense_cost_only);
      EXPECT_EQ(response.cost.flops, stats.flops);
      EXPECT_EQ(response.cost.flops, rows * engine.info().flops_per_row);
      EXPECT_EQ(response.cost.dense_flops, rows * loaded.dense->info().flops_per_row);
    }
  }
}

TEST_F(OipServiceTest, Fp32AndRawRequestsGetTheSameAnswer) {
  InferenceCore core(repository_, InferenceCore::Options{.workers = 1,
                                                         .max_queue = 16,
                                                         .max_batch_rows = 64,
                                                         .inline_max_flops = int64_t{1} << 40,
                                                         .observe = nullptr});
  const std::vector<float> x = RandomInputs(4, kD, 31);
  std::vector<std::vector<float>> answers;
  for (const inference::ModelInferRequest& proto :
       {FpRequest("m", {4, kD}, x), RawRequest("m", {4, kD}, x)}) {
    std::vector<float> storage;
    ASSERT_OK_AND_ASSIGN(const InferRequest request, Translate(proto, &storage));
    InferResponse response;
    ASSERT_OK(InferAndWait(core, request, &response));
    answers.push_back(response.outputs);
  }
  ASSERT_EQ(answers.size(), 2u);
  EXPECT_EQ(answers[0].size(), 4u * 2u);
  EXPECT_EQ(answers[0], answers[1]);
}

TEST_F(OipServiceTest, RequestedOutputsAndTritonParametersAreHonouredOrRefused) {
  const std::vector<float> x = RandomInputs(2, kD, 41);
  // What Triton's clients send: the output by name, harmless parameters.
  inference::ModelInferRequest ok = FpRequest("m", {2, kD}, x);
  ok.add_outputs()->set_name("output");
  (*ok.mutable_outputs(0)->mutable_parameters())["binary_data"].set_bool_param(true);
  (*ok.mutable_parameters())["priority"].set_int64_param(1);
  (*ok.mutable_parameters())["timeout"].set_int64_param(1000000);
  (*ok.mutable_parameters())["sequence_id"].set_int64_param(0);  // 0: no sequence
  std::vector<float> storage;
  EXPECT_OK(Translate(ok, &storage).status());

  struct Case {
    std::string says;
    std::function<void(inference::ModelInferRequest*)> edit;
  };
  const std::vector<Case> cases = {
      {"unknown output 'probabilities'",
       [](inference::ModelInferRequest* r) { r->add_outputs()->set_name("probabilities"); }},
      {"classification is not supported",
       [](inference::ModelInferRequest* r) {
         auto* o = r->add_outputs();
         o->set_name("output");
         (*o->mutable_parameters())["classification"].set_int64_param(3);
       }},
      {"sequence batching is not supported",
       [](inference::ModelInferRequest* r) {
         (*r->mutable_parameters())["sequence_id"].set_int64_param(7);
       }},
      {"sequence batching is not supported",
       [](inference::ModelInferRequest* r) {
         (*r->mutable_parameters())["sequence_start"].set_bool_param(true);
       }},
      {"shared-memory tensors are not supported",
       [](inference::ModelInferRequest* r) {
         (*r->mutable_inputs(0)->mutable_parameters())["shared_memory_region"].set_string_param("r");
       }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.says);
    inference::ModelInferRequest bad = FpRequest("m", {2, kD}, x);
    c.edit(&bad);
    const absl::Status s = Translate(bad, &storage).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(c.says));
  }
}

TEST(ToModelInferResponseTest, OneFp32TensorAndTheCostInParameters) {
  inference::ModelInferRequest request;
  request.set_model_name("m.dense");
  request.set_id("req-7");
  InferResponse answer;
  answer.version = 3;
  answer.rows = 2;
  answer.output_dim = 3;
  answer.outputs = {1, 2, 3, 4, 5, 6};
  answer.cost.flops = 100;
  answer.cost.dense_flops = 400;
  answer.cost.route_ns = 7;
  answer.cost.compute_ns = 11;
  answer.cost.queue_ns = 13;
  inference::ModelInferResponse out;
  ToModelInferResponse(request, answer, &out);
  EXPECT_EQ(out.model_name(), "m.dense");  // the name the client asked for
  EXPECT_EQ(out.model_version(), "3");
  EXPECT_EQ(out.id(), "req-7");
  ASSERT_EQ(out.outputs_size(), 1);
  const auto& tensor = out.outputs(0);
  EXPECT_EQ(tensor.datatype(), "FP32");
  EXPECT_THAT(tensor.shape(), ::testing::ElementsAre(2, 3));
  EXPECT_FALSE(tensor.has_contents()) << "values go in raw_output_contents only";
  ASSERT_EQ(out.raw_output_contents_size(), 1);
  const std::string& raw = out.raw_output_contents(0);
  ASSERT_EQ(raw.size(), 6 * sizeof(float));
  std::vector<float> values(6);
  std::memcpy(values.data(), raw.data(), raw.size());
  EXPECT_THAT(values, ::testing::ElementsAre(1, 2, 3, 4, 5, 6));
  EXPECT_EQ(out.parameters().at("flops").int64_param(), 100);
  EXPECT_EQ(out.parameters().at("dense_flops").int64_param(), 400);
  EXPECT_EQ(out.parameters().at("compute_ns").int64_param(), 18);
  EXPECT_EQ(out.parameters().at("queue_ns").int64_param(), 13);
}

}  // namespace
}  // namespace sparse
