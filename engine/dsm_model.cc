#include "engine/dsm_model.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/workspace.h"

namespace sparse {
namespace {

using Layout = MatmulSpec::WeightLayout;

}  // namespace

absl::StatusOr<std::unique_ptr<DsmModel>> DsmModel::Create(const DsmWeights& w,
                                                          Precision precision,
                                                          WeightStore* store) {
  WeightStore& arrays = store != nullptr ? *store : CopyIn();
  // From a prebuilt store only the dimensions, the router and a0 are read
  // (of a shard's part, its skeleton: the dimensions and its expert range,
  // which ValidateRouting checks of a shard; it holds neither router nor a0).
  RETURN_IF_ERROR(arrays.Prebuilt() ? w.ValidateRouting() : w.Validate());
  const DenseWeights& net = w.network;
  const bool relu = net.activation == Activation::kRelu;
  const bool topk = w.router == RouterKind::kTopk;
  ASSIGN_OR_RETURN(MatmulKernel top,
                   MatmulKernel::Create({.k = topk ? w.num_blocks * w.active_units : w.active_units,
                                         .n = net.output_dim, .layout = Layout::kInputMajor,
                                         .accumulate = true,
                                         // topk gathers its top weights per row.
                                         .allow_packing = !topk,
                                         .precision = topk ? Precision::kFp32 : precision}));
  Kernels kernels{.router = std::nullopt, .bottom = std::nullopt, .top = std::move(top)};
  if (!topk && !w.IsShard()) {
    ASSIGN_OR_RETURN(kernels.router, ExpertRouter::Create(w));
  }
  // topk needs the pre-activation Bx + c to rank units; it applies σ itself.
  // Routed expert slices stay plain: a request's rows reach an expert one
  // or two at a time (32 random rows hit ~26 of 64 experts), and there
  // sgemm on plain rows beats a primitive on the blocked layout (bench/peers,
  // 2026-11-23: the demo DSM at batch 1 2.96 -> 2.6 us, the d=1024 DSM at
  // batch 32 1.49 -> 1.32 ms). They are kept input-major, [d, k] per slice:
  // sgemm streams those faster than output-major ones (engine_bench,
  // 2026-12-03, A/B in turn x3: d=1024 E=64 batch 1 36 -> 24 us, batch 32
  // 840 -> 670 us; E=512 batch 1 37 -> 29 us). At BF16 and INT8 they are
  // packed for those primitives instead (matmul_kernel.h).
  const bool input_major_slices = !topk && precision == Precision::kFp32;
  ASSIGN_OR_RETURN(kernels.bottom,
                   MatmulKernel::Create({.k = net.input_dim,
                                         .n = topk ? net.width : w.active_units,
                                         .layout = input_major_slices ? Layout::kInputMajor
                                                                      : Layout::kOutputMajor,
                                         .bias = true,
                                         .relu = relu && !topk,
                                         .allow_packing = topk || precision != Precision::kFp32,
                                         .precision = precision}));
  Weights packed;
  const int64_t slices = topk ? 1 : w.num_blocks * w.num_experts;
  const int64_t d = net.input_dim, k = w.active_units, o = net.output_dim, t = net.width;
  // The arrays, one part per expert slice (topk: one part): each slice is
  // transposed straight into its place (MatmulKernel::PackInto's
  // MatrixSource), so a load holds the decoded tensors and the packed ones,
  // never a third, transposed copy of all of them.
  if (input_major_slices) {
    // B's slice i is [k, d] rows of B; it is stored as its transpose [d, k].
    ASSIGN_OR_RETURN(packed.bottom,
                     kernels.bottom->PackInto(arrays, "bottom", slices,
                                              [&](int64_t i, float* out) -> const float* {
                       const float* slice = net.bottom_weight.data() + i * k * d;
                       for (int64_t r = 0; r < k; ++r) {
                         for (int64_t c = 0; c < d; ++c) out[c * k + r] = slice[r * d + c];
                       }
                       return out;
                     }));
  } else {
    ASSIGN_OR_RETURN(packed.bottom,
                     kernels.bottom->PackInto(arrays, "bottom", slices,
                                              [&](int64_t i, float*) -> const float* {
                                                return net.bottom_weight.data() + i * k * d;
                                              }));
  }
  if (topk) {
    // Aᵀ [t, o], plain, for gathering.
    ASSIGN_OR_RETURN(packed.top, arrays.Array("top", 1, t * o, [&](int64_t, float* out) {
      for (int64_t r = 0; r < t; ++r) {
        for (int64_t c = 0; c < o; ++c) out[r * o + c] = net.top_weight[c * t + r];
      }
      return absl::OkStatus();
    }));
  } else {
    // Slice i of Aᵀ [t, o] is rows [ik, (i+1)k): columns [ik, (i+1)k) of A.
    ASSIGN_OR_RETURN(packed.top,
                     kernels.top.PackInto(arrays, "top", slices,
                                          [&](int64_t i, float* out) -> const float* {
                       for (int64_t r = 0; r < k; ++r) {
                         for (int64_t c = 0; c < o; ++c) out[r * o + c] = net.top_weight[c * t + i * k + r];
                       }
                       return out;
                     }));
  }
  // c, as the slices split it.
  const int64_t bias_part = topk ? t : k;
  ASSIGN_OR_RETURN(packed.bottom_bias,
                   arrays.Array("bottom_bias", slices, bias_part, [&](int64_t i, float* out) {
                     std::copy_n(net.bottom_bias.data() + i * bias_part, bias_part, out);
                     return absl::OkStatus();
                   }));
  ModelInfo info;
  info.kind = ModelKind::kDsm;
  info.input_dim = net.input_dim;
  info.output_dim = net.output_dim;
  info.flops_per_row = DsmFlopsPerRow(w);
  info.parameters = t * d + t + o * t + o +
                    static_cast<int64_t>(w.router_weight.size() + w.router_bias.size());
  info.description = Describe(w);
  if (precision != Precision::kFp32) absl::StrAppend(&info.description, " ", PrecisionName(precision));
  info.precision = precision;
  info.needs_given_route = w.IsShard();
  // One row: a0, the router, and per block one slice of B and of Aᵀ (topk:
  // all of B, and the L·k rows of Aᵀ it gathers).
  const int64_t blocks = topk ? 1 : w.num_blocks;
  info.weight_bytes_per_row =
      4 * net.output_dim +
      (kernels.router.has_value() ? kernels.router->weight_bytes_per_row() : 0) +
      blocks * (kernels.bottom->weight_bytes_per_read() + kernels.top.weight_bytes_per_read());
  int64_t owned = 4 * o, mapped = 0;
  for (const PackedWeights* a : {&packed.bottom, &packed.top, &packed.bottom_bias}) {
    (a->mapped() ? mapped : owned) += 4 * static_cast<int64_t>(a->size());
  }
  info.resident_bytes = (kernels.router.has_value() ? kernels.router->resident_bytes() : 0) + owned;
  info.mapped_bytes = mapped;
  return std::unique_ptr<DsmModel>(
      new DsmModel(std::move(info), w, std::move(kernels), std::move(packed)));
}

DsmModel::DsmModel(ModelInfo info, const DsmWeights& w, Kernels kernels, Weights weights)
    : Model(std::move(info)), d_(w.network.input_dim), o_(w.network.output_dim),
      t_(w.network.width), L_(w.num_blocks), E_(w.num_experts), k_(w.active_units),
      first_expert_(w.first_expert), total_experts_(w.IsShard() ? w.total_experts : w.num_experts),
      router_(w.router), relu_(w.network.activation == Activation::kRelu),
      top_bias_(w.network.top_bias), kernels_(std::move(kernels)), weights_(std::move(weights)),
      expert_rows_(new std::atomic<int64_t>[L_ * E_]()) {}

WeightResidency DsmModel::Residency() const {
  WeightResidency r;
  r.mapped_bytes = info().mapped_bytes;
  if (r.mapped_bytes == 0) return r;
  const int64_t slices = router_ == RouterKind::kTopk ? 1 : L_ * E_;
  const int64_t b = 4 * kernels_.bottom->packed_floats(), t = 4 * kernels_.top.packed_floats();
  const int64_t c = 4 * (router_ == RouterKind::kTopk ? t_ : k_);
  const int64_t top_part = router_ == RouterKind::kTopk ? 4 * t_ * o_ : t;
  r.part_bytes = b + top_part + c;
  r.part_resident_bytes.resize(slices);
  for (int64_t i = 0; i < slices; ++i) {
    const int64_t in = weights_.bottom.ResidentBytes(i, b) + weights_.top.ResidentBytes(i, top_part) +
                       weights_.bottom_bias.ResidentBytes(i, c);
    r.part_resident_bytes[i] = in;
    r.resident_bytes += in;
  }
  return r;
}

RoutingCounts DsmModel::Routing() const {
  RoutingCounts counts;
  if (router_ == RouterKind::kTopk) return counts;
  counts.blocks = L_;
  counts.experts = E_;
  counts.expert_rows.resize(L_ * E_);
  for (int64_t i = 0; i < L_ * E_; ++i) {
    counts.expert_rows[i] = expert_rows_[i].load(std::memory_order_relaxed);
  }
  return counts;
}

absl::Status DsmModel::PredictValidated(const float* x, int64_t rows, float* y,
                                        PredictStats* stats, Route* route,
                                const PredictOptions& options) const {
  if (options.given != nullptr) {
    // A shard's part: the given experts it holds, nothing else (no a0).
    std::fill(y, y + rows * o_, 0.0f);
    const std::vector<int32_t>& ids = options.given->expert_ids;
    if (route != nullptr) {
      route->experts_per_row = L_;
      route->expert_ids = ids;
    }
    std::vector<int32_t> local(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      const int64_t e = ids[i] - first_expert_;
      local[i] = e >= 0 && e < E_ ? static_cast<int32_t>(e) : -1;
      if (local[i] >= 0) expert_rows_[(i % L_) * E_ + e].fetch_add(1, std::memory_order_relaxed);
    }
    // The front's chunks when it gave them (CheckGivenRoute checked them).
    const std::vector<int32_t>& chunks = options.given->chunk_rows;
    const int64_t chunk = std::min(rows, MatmulKernel::kMaxBucketRows);
    for (int64_t r0 = 0, i = 0; r0 < rows; ++i) {
      const int64_t n = chunks.empty() ? std::min(chunk, rows - r0) : chunks[i];
      RETURN_IF_ERROR(ComputeRouted(x + r0 * d_, n, local.data() + r0 * L_, y + r0 * o_, stats));
      r0 += n;
    }
    return absl::OkStatus();
  }
  for (int64_t r = 0; r < rows; ++r) std::copy(top_bias_.begin(), top_bias_.end(), y + r * o_);
  stats->weight_bytes += 4 * o_;  // a0, read once for the call
  const bool routed = router_ != RouterKind::kTopk;
  if (route != nullptr && routed) {
    route->experts_per_row = L_;
    route->expert_ids.resize(rows * L_);
  }
  const int64_t chunk = std::min(rows, MatmulKernel::kMaxBucketRows);
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t n = std::min(chunk, rows - r0);
    const float* xc = x + r0 * d_;
    float* yc = y + r0 * o_;
    if (!routed) {
      RETURN_IF_ERROR(ComputeTopk(xc, n, yc, stats));
      continue;
    }
    int32_t experts_local[MatmulKernel::kMaxBucketRows * 8];
    std::vector<int32_t> experts_heap;
    int32_t* experts = experts_local;
    if (n * L_ > static_cast<int64_t>(std::size(experts_local))) {
      experts_heap.resize(n * L_);
      experts = experts_heap.data();
    }
    RETURN_IF_ERROR(kernels_.router->Route(xc, n, experts, stats));
    for (int64_t i = 0; i < n * L_; ++i) {
      expert_rows_[(i % L_) * E_ + experts[i]].fetch_add(1, std::memory_order_relaxed);
    }
    if (route != nullptr) std::copy(experts, experts + n * L_, route->expert_ids.begin() + r0 * L_);
    RETURN_IF_ERROR(ComputeRouted(xc, n, experts, yc, stats));
  }
  return absl::OkStatus();
}

absl::Status DsmModel::CheckGivenRoute(const Route& given, int64_t rows) const {
  if (!info().needs_given_route) return Model::CheckGivenRoute(given, rows);
  if (given.experts_per_row != L_ || static_cast<int64_t>(given.expert_ids.size()) != rows * L_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected ", L_, " expert ids per row (", rows * L_, " for ", rows, " rows), got ",
        given.experts_per_row, " per row (", given.expert_ids.size(), ")"));
  }
  for (size_t i = 0; i < given.expert_ids.size(); ++i) {
    if (given.expert_ids[i] < 0 || given.expert_ids[i] >= total_experts_) {
      return absl::InvalidArgumentError(absl::StrCat("expert id ", given.expert_ids[i], " of row ",
                                                     i / L_, " is outside [0, ", total_experts_,
                                                     ")"));
    }
  }
  int64_t chunked = 0;
  for (const int32_t n : given.chunk_rows) {
    if (n < 1 || n > MatmulKernel::kMaxBucketRows) {
      return absl::InvalidArgumentError(absl::StrCat("a chunk of ", n, " rows: chunks hold 1 to ",
                                                     MatmulKernel::kMaxBucketRows));
    }
    chunked += n;
  }
  if (!given.chunk_rows.empty() && chunked != rows) {
    return absl::InvalidArgumentError(
        absl::StrCat("the chunks hold ", chunked, " rows, the call ", rows));
  }
  return absl::OkStatus();
}

Route DsmModel::WarmupRoute(int64_t rows) const {
  if (!info().needs_given_route) return {};
  Route route{.experts_per_row = L_};
  route.expert_ids.assign(rows * L_, static_cast<int32_t>(first_expert_));
  return route;
}

absl::Status DsmModel::ComputeRouted(const float* x, int64_t n, const int32_t* experts, float* y,
                                     PredictStats* stats) const {
  const auto start = std::chrono::steady_clock::now();
  float* hidden = ScratchFloats(Scratch::kHidden, n * k_);
  float* out = ScratchFloats(Scratch::kOutput, n * o_);
  float* gathered = ScratchFloats(Scratch::kInput, n * d_);
  // order holds the rows sorted by expert (counting sort); starts[e] where
  // expert e's rows begin in it.
  // Rows whose expert is not held here (-1) sort last, as expert E_.
  int64_t* order = ScratchIndices(n + E_ + 2);
  int64_t* starts = order + n;
  auto group = [experts, this](int64_t r, int64_t l) {
    const int32_t e = experts[r * L_ + l];
    return e < 0 ? E_ : static_cast<int64_t>(e);
  };
  for (int64_t l = 0; l < L_; ++l) {
    std::fill(starts, starts + E_ + 2, 0);
    for (int64_t r = 0; r < n; ++r) ++starts[group(r, l) + 1];
    for (int64_t e = 0; e <= E_; ++e) starts[e + 1] += starts[e];
    {
      // Place rows; `starts` is shifted by one while filling, then restored.
      for (int64_t r = 0; r < n; ++r) order[starts[group(r, l)]++] = r;
      for (int64_t e = E_ + 1; e > 0; --e) starts[e] = starts[e - 1];
      starts[0] = 0;
    }
    for (int64_t e = 0; e < E_; ++e) {
      const int64_t g = starts[e + 1] - starts[e];
      if (g == 0) continue;
      const int64_t slice = l * E_ + e;  // expert slice index into the t units
      const float* xin = x;
      if (g != n) {
        for (int64_t i = 0; i < g; ++i) {
          const int64_t r = order[starts[e] + i];
          std::copy(x + r * d_, x + (r + 1) * d_, gathered + i * d_);
        }
        xin = gathered;
      }
      // A mapped slice is checked on its first touch (weight_store.h).
      RETURN_IF_ERROR(weights_.bottom.Touch(slice));
      RETURN_IF_ERROR(weights_.top.Touch(slice));
      RETURN_IF_ERROR(weights_.bottom_bias.Touch(slice));
      const float* bottom = weights_.bottom.data() + slice * kernels_.bottom->packed_floats();
      RETURN_IF_ERROR(kernels_.bottom->Run(xin, g, bottom, weights_.bottom_bias.data() + slice * k_, hidden,
                                           &stats->flops, &stats->weight_bytes));
      const float* top = weights_.top.data() + slice * kernels_.top.packed_floats();
      if (g == n) {
        // Every row of the chunk is in this group, in order: accumulate in place.
        RETURN_IF_ERROR(
            kernels_.top.Run(hidden, g, top, nullptr, y, &stats->flops, &stats->weight_bytes));
        continue;
      }
      std::fill(out, out + g * o_, 0.0f);
      RETURN_IF_ERROR(
          kernels_.top.Run(hidden, g, top, nullptr, out, &stats->flops, &stats->weight_bytes));
      for (int64_t i = 0; i < g; ++i) {
        float* dst = y + order[starts[e] + i] * o_;
        for (int64_t j = 0; j < o_; ++j) dst[j] += out[i * o_ + j];
      }
    }
  }
  stats->compute_ns += NanosSince(start);
  return absl::OkStatus();
}

absl::Status DsmModel::ComputeTopk(const float* x, int64_t n, float* y,
                                   PredictStats* stats) const {
  const auto start = std::chrono::steady_clock::now();
  const int64_t block_units = t_ / L_;
  const int64_t active = L_ * k_;
  float* z = ScratchFloats(Scratch::kHidden, n * t_);
  RETURN_IF_ERROR(weights_.bottom.Touch(0));
  RETURN_IF_ERROR(weights_.top.Touch(0));
  RETURN_IF_ERROR(weights_.bottom_bias.Touch(0));
  RETURN_IF_ERROR(kernels_.bottom->Run(x, n, weights_.bottom.data(), weights_.bottom_bias.data(), z,
                                       &stats->flops, &stats->weight_bytes));
  const float* top_t = weights_.top.data();  // plain Aᵀ [t, o]
  float* units = ScratchFloats(Scratch::kRouter, active);
  float* weights = ScratchFloats(Scratch::kGather, active * o_);
  int64_t* index = ScratchIndices(block_units);
  for (int64_t r = 0; r < n; ++r) {
    const float* zr = z + r * t_;
    for (int64_t l = 0; l < L_; ++l) {
      const int64_t base = l * block_units;
      for (int64_t i = 0; i < block_units; ++i) index[i] = base + i;
      // The k largest pre-activations; ties go to the lower unit index so the
      // selection is deterministic.
      // A NaN (inf - inf from a huge input) ranks lowest, keeping the
      // comparison a strict weak order; Predict then rejects the output.
      auto value = [zr](int64_t u) { return std::isnan(zr[u]) ? -INFINITY : zr[u]; };
      std::nth_element(index, index + k_ - 1, index + block_units, [&value](int64_t a, int64_t b) {
        return value(a) > value(b) || (value(a) == value(b) && a < b);
      });
      for (int64_t i = 0; i < k_; ++i) {
        const int64_t unit = index[i];
        const float v = zr[unit];
        units[l * k_ + i] = relu_ && v < 0.0f ? 0.0f : v;
        std::copy(top_t + unit * o_, top_t + (unit + 1) * o_, weights + (l * k_ + i) * o_);
      }
    }
    RETURN_IF_ERROR(kernels_.top.Run(units, 1, weights, nullptr, y + r * o_, &stats->flops,
                                     &stats->weight_bytes));
  }
  stats->compute_ns += NanosSince(start);
  return absl::OkStatus();
}

}  // namespace sparse
