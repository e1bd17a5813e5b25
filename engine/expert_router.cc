#include "engine/expert_router.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/hashing.h"
#include "engine/workspace.h"

namespace sparse {
namespace {

using Layout = MatmulSpec::WeightLayout;

// The kmeans router scores each centroid c of a block by c·x - |c|²/2, whose
// argmax is the nearest centroid. Centroids are centred on their block's mean
// μ first (c' = c - μ, bias = -c'·μ - |c'|²/2, the same argmax): without it,
// centroids far from the origin lose the difference between them to float
// rounding. Writes c' into *weights and the biases into *bias.
absl::Status CentredCentroids(const std::vector<float>& centroids, int64_t blocks,
                              int64_t experts, int64_t d, std::vector<float>* weights,
                              std::vector<float>* bias) {
  weights->resize(centroids.size());
  bias->resize(blocks * experts);
  for (int64_t l = 0; l < blocks; ++l) {
    std::vector<double> mean(d, 0.0);
    for (int64_t e = 0; e < experts; ++e) {
      for (int64_t j = 0; j < d; ++j) mean[j] += centroids[(l * experts + e) * d + j];
    }
    for (double& m : mean) m /= static_cast<double>(experts);
    for (int64_t e = 0; e < experts; ++e) {
      const int64_t row = l * experts + e;
      double dot = 0, sq = 0;
      for (int64_t j = 0; j < d; ++j) {
        const double c = centroids[row * d + j] - mean[j];
        (*weights)[row * d + j] = static_cast<float>(c);
        dot += c * mean[j];
        sq += c * c;
      }
      const double b = -dot - 0.5 * sq;
      if (!(std::fabs(b) < 3e38)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "router.weight: kmeans centroid ", row, " is too far from the others (|bias| = ", b,
            " does not fit a float)"));
      }
      (*bias)[row] = static_cast<float>(b);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ExpertRouter> ExpertRouter::Create(const DsmWeights& w) {
  if (w.router == RouterKind::kTopk || w.IsShard()) {
    return absl::FailedPreconditionError("only a whole routed DSM (lsh, hash, kmeans) has a router");
  }
  RETURN_IF_ERROR(w.ValidateRouting());
  const int64_t d = w.network.input_dim;
  std::optional<MatmulKernel> kernel;
  PackedWeights packed;
  std::vector<float> bias;
  if (w.router == RouterKind::kLsh && w.RouterBits() > 0) {
    ASSIGN_OR_RETURN(kernel, MatmulKernel::Create({.k = d, .n = w.num_blocks * w.RouterBits(),
                                                   .layout = Layout::kOutputMajor, .bias = true}));
    ASSIGN_OR_RETURN(packed, kernel->PackAll(w.router_weight.data(), 1));
    bias = w.router_bias;
  } else if (w.router == RouterKind::kKmeans) {
    ASSIGN_OR_RETURN(kernel, MatmulKernel::Create({.k = d, .n = w.num_blocks * w.num_experts,
                                                   .layout = Layout::kOutputMajor, .bias = true}));
    std::vector<float> centred;
    RETURN_IF_ERROR(
        CentredCentroids(w.router_weight, w.num_blocks, w.num_experts, d, &centred, &bias));
    ASSIGN_OR_RETURN(packed, kernel->PackAll(centred.data(), 1));
  }
  return ExpertRouter(w, std::move(kernel), std::move(packed), std::move(bias));
}

ExpertRouter::ExpertRouter(const DsmWeights& w, std::optional<MatmulKernel> kernel,
                           PackedWeights weights, std::vector<float> bias)
    : d_(w.network.input_dim), L_(w.num_blocks), E_(w.num_experts), bits_(w.RouterBits()),
      router_(w.router), hash_seed_(w.hash_seed), kernel_(std::move(kernel)),
      weights_(std::move(weights)), bias_(std::move(bias)) {}

int64_t ExpertRouter::flops_per_row() const {
  switch (router_) {
    case RouterKind::kLsh: return L_ * 2 * bits_ * d_;
    case RouterKind::kKmeans: return L_ * 2 * E_ * d_;
    default: return 0;
  }
}

int64_t ExpertRouter::weight_bytes_per_row() const {
  return kernel_.has_value() ? kernel_->weight_bytes_per_read() : 0;
}

int64_t ExpertRouter::resident_bytes() const {
  return 4 * static_cast<int64_t>(weights_.size() + bias_.size());
}

absl::Status ExpertRouter::Route(const float* x, int64_t n, int32_t* experts,
                                 PredictStats* stats) const {
  const auto start = std::chrono::steady_clock::now();
  switch (router_) {
    case RouterKind::kLsh: {
      if (bits_ == 0) {
        std::fill(experts, experts + n * L_, 0);
        break;
      }
      float* z = ScratchFloats(Scratch::kRouter, n * L_ * bits_);
      RETURN_IF_ERROR(kernel_->Run(x, n, weights_.data(), bias_.data(), z, &stats->flops,
                                   &stats->weight_bytes));
      for (int64_t i = 0; i < n * L_; ++i) {
        experts[i] = static_cast<int32_t>(HyperplaneKey(z + i * bits_, bits_));
      }
      break;
    }
    case RouterKind::kKmeans: {
      float* z = ScratchFloats(Scratch::kRouter, n * L_ * E_);
      RETURN_IF_ERROR(kernel_->Run(x, n, weights_.data(), bias_.data(), z, &stats->flops,
                                   &stats->weight_bytes));
      for (int64_t i = 0; i < n * L_; ++i) {
        const float* scores = z + i * E_;
        experts[i] = static_cast<int32_t>(std::max_element(scores, scores + E_) - scores);
      }
      break;
    }
    case RouterKind::kHash:
      for (int64_t r = 0; r < n; ++r) {
        for (int64_t l = 0; l < L_; ++l) {
          experts[r * L_ + l] = static_cast<int32_t>(
              InputHash(x + r * d_, d_, hash_seed_ + static_cast<uint64_t>(l)) %
              static_cast<uint64_t>(E_));
        }
      }
      break;
    case RouterKind::kTopk:
      break;
  }
  stats->route_ns += NanosSince(start);
  return absl::OkStatus();
}

}  // namespace sparse
