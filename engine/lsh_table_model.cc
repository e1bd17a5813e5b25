#include "engine/lsh_table_model.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "engine/hashing.h"
#include "common/status_macros.h"
#include "engine/workspace.h"

namespace sparse {
namespace {

// Stores a table's α-scaled values [rows, per_bucket] at `precision`:
// bfloat16, or int8 with one scale per output (Δ=0, column j of every
// bucket) or per output row of each bucket's o×(d+1) matrix (Δ=1).
absl::Status StoreReduced(Precision precision, int64_t rows, int64_t o, int64_t per_bucket,
                          const std::vector<float>& values, std::vector<uint16_t>* bf16,
                          std::vector<int8_t>* int8, std::vector<float>* scales) {
  if (precision == Precision::kBf16) {
    bf16->resize(values.size());
    ToBf16(values.data(), static_cast<int64_t>(values.size()), bf16->data());
    for (size_t i = 0; i < bf16->size(); ++i) {
      if (!Bf16IsFinite((*bf16)[i])) {
        return absl::InvalidArgumentError(
            absl::StrCat("a bucket value (", values[i], ") overflows bfloat16"));
      }
    }
    return absl::OkStatus();
  }
  int8->resize(values.size());
  if (per_bucket == o) {  // Δ=0: column j across the buckets
    scales->resize(o);
    for (int64_t j = 0; j < o; ++j) {
      (*scales)[j] = QuantizeInt8Strided(values.data() + j, rows, o, int8->data() + j);
    }
  } else {  // Δ=1: each bucket's matrix row by row
    const int64_t cols = per_bucket / o;
    scales->resize(rows * o);
    for (int64_t r = 0; r < rows * o; ++r) {
      (*scales)[r] = QuantizeInt8(values.data() + r * cols, cols, int8->data() + r * cols);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<LshTableModel>> LshTableModel::Create(
    const LshTableWeights& w, Precision precision) {
  RETURN_IF_ERROR(w.Validate());
  const int64_t per_bucket = w.ValuesPerBucket();
  int64_t parameters = static_cast<int64_t>(w.projection.size() + w.offset.size() + w.alpha.size());
  std::vector<Table> tables(w.num_tables);
  for (int64_t i = 0; i < w.num_tables; ++i) {
    const LshTableWeights::Table& src = w.tables[i];
    Table& dst = tables[i];
    const int64_t n = static_cast<int64_t>(src.keys.size());
    if (n >= int64_t{1} << 32) {
      return absl::InvalidArgumentError(absl::StrCat("table.", i, " has too many buckets: ", n));
    }
    dst.index.reserve(n);
    for (int64_t b = 0; b < n; ++b) dst.index.emplace(src.keys[b], static_cast<uint32_t>(b));
    dst.values.resize((n + 1) * per_bucket);
    std::copy(src.values.begin(), src.values.end(), dst.values.begin());
    std::copy(src.fallback.begin(), src.fallback.end(), dst.values.begin() + n * per_bucket);
    for (float& v : dst.values) v *= w.alpha[i];
    if (precision != Precision::kFp32) {
      RETURN_IF_ERROR(StoreReduced(precision, n + 1, w.output_dim, per_bucket, dst.values,
                                   &dst.bf16, &dst.int8, &dst.scales));
      dst.values = {};
    }
    parameters += static_cast<int64_t>(src.values.size() + src.fallback.size() + src.keys.size());
  }
  ASSIGN_OR_RETURN(MatmulKernel projection,
                   MatmulKernel::Create({.k = w.input_dim, .n = w.num_tables * w.num_hashes,
                                         .layout = MatmulSpec::WeightLayout::kOutputMajor,
                                         .bias = true}));
  ASSIGN_OR_RETURN(PackedWeights projection_weight, projection.PackAll(w.projection.data(), 1));
  std::unique_ptr<MatmulKernel> affine;
  if (w.degree == 1) {
    // Bucket matrices are used where they are stored: no packing.
    ASSIGN_OR_RETURN(MatmulKernel k,
                     MatmulKernel::Create({.k = w.input_dim + 1, .n = w.output_dim,
                                           .layout = MatmulSpec::WeightLayout::kOutputMajor,
                                           .accumulate = true, .allow_packing = false}));
    affine = std::make_unique<MatmulKernel>(std::move(k));
  }
  ModelInfo info;
  info.kind = ModelKind::kLshTable;
  info.input_dim = w.input_dim;
  info.output_dim = w.output_dim;
  info.flops_per_row = LshTableFlopsPerRow(w);
  info.parameters = parameters;
  info.description = absl::StrCat("lsh_table family=", HashFamilyName(w.family), " d=",
                                  w.input_dim, " s=", w.num_tables, " m=", w.num_hashes,
                                  " delta=", w.degree, " o=", w.output_dim);
  if (precision != Precision::kFp32) absl::StrAppend(&info.description, " ", PrecisionName(precision));
  info.precision = precision;
  // One row: the projections and offsets, then one bucket per table (its
  // values at the precision's width, and at INT8 its o scales).
  info.weight_bytes_per_row =
      projection.weight_bytes_per_read() +
      w.num_tables * (per_bucket * PrecisionBytes(precision) +
                      (precision == Precision::kInt8 ? 4 * w.output_dim : 0));
  int64_t resident = 4 * static_cast<int64_t>(projection_weight.size() + w.offset.size());
  for (const Table& t : tables) {
    resident += static_cast<int64_t>(4 * t.values.size() + 2 * t.bf16.size() + t.int8.size() +
                                     4 * t.scales.size()) +
                static_cast<int64_t>(t.index.capacity() *
                                     (sizeof(std::pair<uint64_t, uint32_t>) + 1));
  }
  info.resident_bytes = resident;
  return std::unique_ptr<LshTableModel>(new LshTableModel(
      std::move(info), w, precision, std::move(tables), std::move(projection), std::move(projection_weight),
      std::move(affine)));
}

LshTableModel::LshTableModel(ModelInfo info, const LshTableWeights& w, Precision precision,
                             std::vector<Table> tables,
                             MatmulKernel projection, PackedWeights projection_weight,
                             std::unique_ptr<MatmulKernel> affine)
    : Model(std::move(info)), d_(w.input_dim), o_(w.output_dim), s_(w.num_tables),
      m_(w.num_hashes), degree_(w.degree), precision_(precision), family_(w.family), bucket_width_(w.bucket_width),
      projection_(std::move(projection_weight)), offset_(w.offset), tables_(std::move(tables)),
      projection_kernel_(std::move(projection)), affine_kernel_(std::move(affine)) {}

absl::Status LshTableModel::PredictValidated(const float* x, int64_t rows, float* y,
                                             PredictStats* stats, Route* route) const {
  const int64_t per_bucket = degree_ == 0 ? o_ : o_ * (d_ + 1);
  const int64_t hashes = s_ * m_;
  if (route != nullptr) {
    route->keys_per_row = s_;
    route->bucket_keys.resize(rows * s_);
    route->bucket_missed.resize(rows * s_);
  }
  std::fill(y, y + rows * o_, 0.0f);
  const int64_t chunk = std::min(rows, MatmulKernel::kMaxBucketRows);
  float* z = ScratchFloats(Scratch::kRouter, chunk * hashes);
  float* augmented = degree_ == 1 ? ScratchFloats(Scratch::kInput, d_ + 1) : nullptr;

  int64_t* buckets = ScratchIndices(chunk * s_);
  float* converted =
      precision_ == Precision::kFp32 ? nullptr : ScratchFloats(Scratch::kGather, per_bucket);

  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t n = std::min(chunk, rows - r0);
    // Route: all s*m projections of the chunk in one matmul, then one key
    // and one index probe per (row, table).
    const auto route_start = std::chrono::steady_clock::now();
    RETURN_IF_ERROR(projection_kernel_.Run(x + r0 * d_, n, projection_.data(), offset_.data(), z,
                                           &stats->flops, &stats->weight_bytes));
    int64_t chunk_misses = 0;
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t i = 0; i < s_; ++i) {
        const float* zi = z + r * hashes + i * m_;
        const uint64_t key = family_ == HashFamily::kHyperplane
                                 ? HyperplaneKey(zi, m_)
                                 : EuclideanKey(zi, m_, bucket_width_);
        const Table& table = tables_[i];
        const auto it = table.index.find(key);
        const bool missed = it == table.index.end();
        chunk_misses += missed;
        buckets[r * s_ + i] = missed ? static_cast<int64_t>(table.index.size()) : it->second;
        if (route != nullptr) {
          route->bucket_keys[(r0 + r) * s_ + i] = key;
          route->bucket_missed[(r0 + r) * s_ + i] = missed ? 1 : 0;
        }
      }
    }
    lookups_.fetch_add(n * s_, std::memory_order_relaxed);
    misses_.fetch_add(chunk_misses, std::memory_order_relaxed);
    stats->route_ns += NanosSince(route_start);

    // Compute: each row adds its s bucket values (Δ=0) or affine maps (Δ=1).
    const auto compute_start = std::chrono::steady_clock::now();
    for (int64_t r = 0; r < n; ++r) {
      const int64_t row = r0 + r;
      float* out = y + row * o_;
      if (augmented != nullptr) {
        std::copy(x + row * d_, x + (row + 1) * d_, augmented);
        augmented[d_] = 1.0f;
      }
      for (int64_t i = 0; i < s_; ++i) {
        const float* value;
        if (precision_ == Precision::kFp32) {
          value = tables_[i].values.data() + buckets[r * s_ + i] * per_bucket;
        } else {
          ReadBucket(tables_[i], buckets[r * s_ + i], converted);
          value = converted;
          stats->weight_bytes += per_bucket * PrecisionBytes(precision_) +
                                 (precision_ == Precision::kInt8 ? 4 * o_ : 0);
        }
        if (degree_ == 0) {
          for (int64_t j = 0; j < o_; ++j) out[j] += value[j];
          stats->flops += o_;
          if (precision_ == Precision::kFp32) stats->weight_bytes += 4 * o_;
        } else if (precision_ != Precision::kFp32) {
          // The kernel is FP32 over values converted per call: count only
          // its FLOPs here, the bytes were counted as read above.
          int64_t kernel_bytes = 0;
          RETURN_IF_ERROR(
              affine_kernel_->Run(augmented, 1, value, nullptr, out, &stats->flops, &kernel_bytes));
        } else {
          RETURN_IF_ERROR(affine_kernel_->Run(augmented, 1, value, nullptr, out, &stats->flops,
                                              &stats->weight_bytes));
        }
      }
    }
    stats->compute_ns += NanosSince(compute_start);
  }
  return absl::OkStatus();
}

void LshTableModel::ReadBucket(const Table& table, int64_t b, float* out) const {
  const int64_t per_bucket = degree_ == 0 ? o_ : o_ * (d_ + 1);
  if (precision_ == Precision::kBf16) {
    const uint16_t* v = table.bf16.data() + b * per_bucket;
    for (int64_t j = 0; j < per_bucket; ++j) out[j] = Bf16ToFloat(v[j]);
    return;
  }
  const int8_t* q = table.int8.data() + b * per_bucket;
  if (degree_ == 0) {
    for (int64_t j = 0; j < o_; ++j) out[j] = q[j] * table.scales[j];
    return;
  }
  const int64_t cols = d_ + 1;
  for (int64_t r = 0; r < o_; ++r) {
    const float scale = table.scales[b * o_ + r];
    for (int64_t c = 0; c < cols; ++c) out[r * cols + c] = q[r * cols + c] * scale;
  }
}

RoutingCounts LshTableModel::Routing() const {
  RoutingCounts counts;
  counts.lookups = lookups_.load(std::memory_order_relaxed);
  counts.misses = misses_.load(std::memory_order_relaxed);
  return counts;
}

}  // namespace sparse
