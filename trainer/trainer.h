// Trainer: fits every model kind of DESIGN.md §1 and its dense twin on a
// dataset, then evaluates both through the engine, so the reported MSE is
// exactly what a server loading the checkpoint will compute.
//
// How each kind is fitted (all bottom layers are fixed random features, as
// in the paper's section 5; only top layers and bucket values are fitted):
//  - lsh_table: offset hyperplanes (through random training points) or
//    p-stable hashes; each bucket with at least min_bucket_rows rows stores
//    the mean target (Δ=0) or a ridge-regression affine map (Δ=1); the rest
//    fall back to the global mean / global affine fit.
//  - dsm lsh / hash / kmeans: rows are routed first; each expert slice's
//    units are random hyperplanes through points of its own region, and its
//    top weights are a ridge regression on the rows routed to it. Several
//    blocks are fitted by backfitting on the residual.
//  - dsm topk and dense: ridge regression on the (masked) random features
//    in closed form when the width is at most closed_form_limit, otherwise
//    Adam on minibatches; the summary says which.
#ifndef SPARSE_TRAINER_TRAINER_H_
#define SPARSE_TRAINER_TRAINER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "engine/model.h"
#include "engine/precision.h"
#include "engine/weights.h"
#include "model_store/checkpoint.h"
#include "trainer/dataset.h"

namespace sparse {

struct TrainOptions {
  ModelKind kind = ModelKind::kDsm;  // kLshTable or kDsm
  // LSH table
  int64_t tables = 8;
  int64_t hashes = 11;
  int64_t lsh_degree = 0;
  HashFamily family = HashFamily::kHyperplane;
  float bucket_width = 0;       // euclidean; 0 = the std-dev of the projections
  int64_t min_bucket_rows = 0;  // 0 = 1 for Δ=0, d + 2 for Δ=1
  // DSM
  RouterKind router = RouterKind::kLsh;
  int64_t experts = 16;
  int64_t active_units = 64;
  int64_t blocks = 1;
  int64_t topk_width = 1024;    // topk: total width t
  Activation activation = Activation::kRelu;
  // Dense twin width; 0 = the sparse model's activated units per row
  // (L·k for a DSM, s·(Δ=0 ? 1 : d+1) for an LSH table).
  int64_t dense_width = 0;
  // Fitting
  // Relative ridge (see SolveRidge). The normal equations come from float32
  // GEMMs (relative error ~1e-7), so the ridge must stay well above that:
  // at 1e-6 an expert with fewer rows than units was measured to blow up.
  double ridge = 1e-5;
  int64_t closed_form_limit = 8192; // widest closed-form fit
  int64_t epochs = 20;              // Adam
  double learning_rate = 1e-3;      // Adam
  uint64_t seed = 1;
  // What the checkpoint stores the networks' weight matrices at (F32, BF16,
  // or I8 with per-row scales; docs/checkpoint-format.md). Accuracy is
  // measured at every serving precision either way (ModelMetrics::at).
  Precision precision = Precision::kFp32;
  // Receives one line per progress event (may be empty).
  std::function<void(const std::string&)> progress = nullptr;
};

// Test accuracy when served at a reduced precision (config.pbtxt), from the
// weights as the checkpoint stores them.
struct PrecisionMetrics {
  double test_mse = 0;
  double test_accuracy = 0;  // when classification
  // Test rows whose route (expert ids, bucket keys) differs from FP32's.
  double routes_changed = 0;
  // Weight bytes one row reads at this precision (a matrix too narrow for
  // the reduced layouts stays FP32, so this shows what actually shrank).
  int64_t weight_bytes_per_row = 0;
};

struct ModelMetrics {
  double train_mse = 0;
  double test_mse = 0;  // the float32 weights served at FP32
  bool classification = false;  // targets look like class labels
  double test_accuracy = 0;     // when classification
  int64_t parameters = 0;
  int64_t flops_per_row = 0;
  int64_t weight_bytes_per_row = 0;  // at FP32
  int64_t activated_units = 0;  // per row
  std::string solver;           // how the fitted part was solved
  std::string description;
  std::map<Precision, PrecisionMetrics> at;  // BF16 and INT8
};

struct TrainResult {
  Checkpoint checkpoint;
  ModelMetrics sparse;
  ModelMetrics dense;
  double train_seconds = 0;
  double eval_seconds = 0;
};

// Errors: INVALID_ARGUMENT for options that do not fit the data (e.g. an
// lsh router with a non-power-of-two expert count) or empty datasets.
absl::StatusOr<TrainResult> Train(const Dataset& train, const Dataset& test,
                                  const TrainOptions& options);

// Mean squared error of `model` on `data`, through Model::Predict.
absl::StatusOr<double> EvaluateMse(const Model& model, const Dataset& data);

}  // namespace sparse

#endif  // SPARSE_TRAINER_TRAINER_H_
