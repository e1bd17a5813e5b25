#include "engine/lsh_table_model.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/bucket_index.h"
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

// A table's values and INT8 scales are cut into parts of this many bytes
// or so: what a first touch verifies (docs/weight-cache.md).
constexpr int64_t kPartBytes = 64 << 10;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Buckets per part: a multiple of 4, so that a part of bfloat16 or int8
// values is whole floats, near kPartBytes, and no more than the table.
int64_t BucketsPerPart(int64_t bucket_bytes, int64_t rows) {
  const int64_t near = std::max<int64_t>(1, kPartBytes / std::max<int64_t>(1, bucket_bytes));
  return std::min(CeilDiv(near, 4) * 4, CeilDiv(rows, 4) * 4);
}

template <typename T>
const uint8_t* AsBytes(const T* p) { return reinterpret_cast<const uint8_t*>(p); }
uint8_t* AsBytes(float* p) { return reinterpret_cast<uint8_t*>(p); }

// Rows [first, first + count) of `rows` rows of `row_bytes` at `from`,
// into `out`, the rows past the last zero-filled.
void CopyRows(const uint8_t* from, int64_t rows, int64_t row_bytes, int64_t first, int64_t count,
              uint8_t* out) {
  const int64_t have = std::clamp<int64_t>(rows - first, 0, count);
  if (have > 0) std::memcpy(out, from + first * row_bytes, static_cast<size_t>(have * row_bytes));
  std::memset(out + have * row_bytes, 0, static_cast<size_t>((count - have) * row_bytes));
}

}  // namespace

absl::StatusOr<std::unique_ptr<LshTableModel>> LshTableModel::Create(
    const LshTableWeights& w, Precision precision, WeightStore* store) {
  WeightStore& arrays = store != nullptr ? *store : CopyIn();
  // From a prebuilt store only the hashing, α and the bucket counts are read.
  const bool prebuilt = arrays.Prebuilt();
  RETURN_IF_ERROR(prebuilt ? w.ValidateSkeleton() : w.Validate());
  const int64_t per_bucket = w.ValuesPerBucket();
  const int64_t bucket_bytes = per_bucket * PrecisionBytes(precision);
  int64_t parameters = static_cast<int64_t>(w.projection.size() + w.offset.size() + w.alpha.size());
  int64_t owned = 0, mapped = 0;
  std::vector<Table> tables(w.num_tables);
  for (int64_t i = 0; i < w.num_tables; ++i) {
    const LshTableWeights::Table& src = w.tables[i];
    Table& dst = tables[i];
    const int64_t n = src.Buckets();
    if (n >= BucketIndex::kMaxKeys) {
      return absl::InvalidArgumentError(absl::StrCat("table.", i, " has too many buckets: ", n));
    }
    dst.buckets = n;
    dst.buckets_per_part = BucketsPerPart(bucket_bytes, n + 1);
    dst.index_slots = BucketIndex::SlotsFor(n);
    const int64_t parts = CeilDiv(n + 1, dst.buckets_per_part);
    const std::string prefix = absl::StrCat("table.", i, ".");
    ASSIGN_OR_RETURN(dst.index, arrays.Array(prefix + "index", 1, BucketIndex::BytesFor(n) / 4,
                                             [&](int64_t, float* out) {
                                               BucketIndex::Build(src.keys, AsBytes(out));
                                               return absl::OkStatus();
                                             }));
    // The α-scaled rows (values, then the fallback) at the precision: made
    // only when the store fills its arrays.
    std::vector<float> scaled, scales;
    std::vector<uint16_t> bf16;
    std::vector<int8_t> int8;
    if (!prebuilt) {
      scaled.resize((n + 1) * per_bucket);
      std::copy(src.values.begin(), src.values.end(), scaled.begin());
      std::copy(src.fallback.begin(), src.fallback.end(), scaled.begin() + n * per_bucket);
      for (float& v : scaled) v *= w.alpha[i];
      if (precision != Precision::kFp32) {
        RETURN_IF_ERROR(StoreReduced(precision, n + 1, w.output_dim, per_bucket, scaled, &bf16,
                                     &int8, &scales));
      }
    }
    const uint8_t* rows = precision == Precision::kFp32   ? AsBytes(scaled.data())
                          : precision == Precision::kBf16 ? AsBytes(bf16.data())
                                                          : AsBytes(int8.data());
    ASSIGN_OR_RETURN(dst.values, arrays.Array(prefix + "values", parts,
                                              dst.buckets_per_part * bucket_bytes / 4,
                                              [&](int64_t p, float* out) {
                                                CopyRows(rows, n + 1, bucket_bytes,
                                                         p * dst.buckets_per_part,
                                                         dst.buckets_per_part, AsBytes(out));
                                                return absl::OkStatus();
                                              }));
    if (precision == Precision::kInt8) {
      // Δ=0: one scale per output for the whole table; Δ=1: o per bucket.
      const bool per_table = w.degree == 0;
      const int64_t o = w.output_dim;
      ASSIGN_OR_RETURN(
          dst.scales,
          arrays.Array(prefix + "scales", per_table ? 1 : parts,
                       per_table ? o : dst.buckets_per_part * o, [&](int64_t p, float* out) {
                         if (per_table) {
                           std::copy(scales.begin(), scales.end(), out);
                         } else {
                           CopyRows(AsBytes(scales.data()), n + 1, 4 * o, p * dst.buckets_per_part,
                                    dst.buckets_per_part, AsBytes(out));
                         }
                         return absl::OkStatus();
                       }));
    }
    for (const PackedWeights* a : {&dst.index, &dst.values, &dst.scales}) {
      (a->mapped() ? mapped : owned) += 4 * static_cast<int64_t>(a->size());
    }
    parameters += n * per_bucket + per_bucket + n;
  }
  ASSIGN_OR_RETURN(TableHasher hasher, TableHasher::Create(w));
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
  info.description = Describe(w);
  if (precision != Precision::kFp32) absl::StrAppend(&info.description, " ", PrecisionName(precision));
  info.precision = precision;
  info.needs_given_route = w.total_tables > 0;
  // One row: the projections and offsets, then one bucket per table (its
  // values at the precision's width, and at INT8 its o scales).
  info.weight_bytes_per_row =
      (w.total_tables > 0 ? 0 : hasher.weight_bytes_per_row()) +
      w.num_tables * (bucket_bytes + (precision == Precision::kInt8 ? 4 * w.output_dim : 0));
  info.resident_bytes = hasher.resident_bytes() + owned;
  info.mapped_bytes = mapped;
  return std::unique_ptr<LshTableModel>(new LshTableModel(
      std::move(info), w, precision, std::move(tables), std::move(hasher), std::move(affine)));
}

LshTableModel::LshTableModel(ModelInfo info, const LshTableWeights& w, Precision precision,
                             std::vector<Table> tables, TableHasher hasher,
                             std::unique_ptr<MatmulKernel> affine)
    : Model(std::move(info)), d_(w.input_dim), o_(w.output_dim), s_(w.num_tables),
      degree_(w.degree), precision_(precision), tables_(std::move(tables)),
      hasher_(std::move(hasher)), affine_kernel_(std::move(affine)) {}

absl::Status LshTableModel::PredictValidated(const float* x, int64_t rows, float* y,
                                             PredictStats* stats, Route* route,
                                const PredictOptions& options) const {
  if (route != nullptr) {
    route->keys_per_row = s_;
    route->bucket_keys.resize(rows * s_);
    route->bucket_missed.resize(rows * s_);
  }
  std::fill(y, y + rows * o_, 0.0f);
  const int64_t chunk = std::min(rows, MatmulKernel::kMaxBucketRows);
  if (options.given != nullptr) {
    // A shard's part: the front's keys for this shard's tables.
    const uint64_t* given = options.given->bucket_keys.data();
    if (route != nullptr) std::copy(given, given + rows * s_, route->bucket_keys.begin());
    std::vector<uint8_t> missed(route != nullptr ? 0 : chunk * s_);
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
      const int64_t n = std::min(chunk, rows - r0);
      RETURN_IF_ERROR(AddBuckets(x + r0 * d_, n, given + r0 * s_, y + r0 * o_,
                                 route != nullptr ? route->bucket_missed.data() + r0 * s_
                                                  : missed.data(),
                                 stats));
    }
    return absl::OkStatus();
  }
  uint64_t* keys = reinterpret_cast<uint64_t*>(ScratchIndices(chunk * s_));
  std::vector<uint8_t> missed(route != nullptr ? 0 : chunk * s_);
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t n = std::min(chunk, rows - r0);
    // Route: all s*m projections of the chunk in one matmul, then one key
    // and one index probe per (row, table).
    const auto route_start = std::chrono::steady_clock::now();
    RETURN_IF_ERROR(hasher_.Keys(x + r0 * d_, n, keys, stats));
    if (route != nullptr) std::copy(keys, keys + n * s_, route->bucket_keys.begin() + r0 * s_);
    stats->route_ns += NanosSince(route_start);
    RETURN_IF_ERROR(AddBuckets(x + r0 * d_, n, keys, y + r0 * o_,
                               route != nullptr ? route->bucket_missed.data() + r0 * s_
                                                : missed.data(),
                               stats));
  }
  return absl::OkStatus();
}

absl::Status LshTableModel::CheckGivenRoute(const Route& given, int64_t rows) const {
  if (!info().needs_given_route) return Model::CheckGivenRoute(given, rows);
  if (given.keys_per_row != s_ || static_cast<int64_t>(given.bucket_keys.size()) != rows * s_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected ", s_, " bucket keys per row, one per table of this shard (", rows * s_,
        " for ", rows, " rows), got ", given.keys_per_row, " per row (", given.bucket_keys.size(),
        ")"));
  }
  return absl::OkStatus();
}

Route LshTableModel::WarmupRoute(int64_t rows) const {
  if (!info().needs_given_route) return {};
  Route route{.keys_per_row = s_};
  route.bucket_keys.assign(rows * s_, 0);
  return route;
}

absl::Status LshTableModel::AddBuckets(const float* x, int64_t n, const uint64_t* keys, float* y,
                                       uint8_t* missed, PredictStats* stats) const {
  const int64_t per_bucket = degree_ == 0 ? o_ : o_ * (d_ + 1);
  const auto start = std::chrono::steady_clock::now();
  float* augmented = degree_ == 1 ? ScratchFloats(Scratch::kInput, d_ + 1) : nullptr;
  float* converted =
      precision_ == Precision::kFp32 ? nullptr : ScratchFloats(Scratch::kGather, per_bucket);
  int64_t misses = 0;
  for (int64_t r = 0; r < n; ++r) {
    float* out = y + r * o_;
    if (augmented != nullptr) {
      std::copy(x + r * d_, x + (r + 1) * d_, augmented);
      augmented[d_] = 1.0f;
    }
    for (int64_t i = 0; i < s_; ++i) {
      const Table& table = tables_[i];
      bool miss = false;
      ASSIGN_OR_RETURN(const int64_t bucket, Lookup(table, keys[r * s_ + i], &miss));
      misses += miss;
      missed[r * s_ + i] = miss ? 1 : 0;
      const float* value;
      if (precision_ == Precision::kFp32) {
        value = std::as_const(table.values).data() + bucket * per_bucket;
      } else {
        ReadBucket(table, bucket, converted);
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
  lookups_.fetch_add(n * s_, std::memory_order_relaxed);
  misses_.fetch_add(misses, std::memory_order_relaxed);
  stats->compute_ns += NanosSince(start);
  return absl::OkStatus();
}

absl::StatusOr<int64_t> LshTableModel::Lookup(const Table& table, uint64_t key,
                                              bool* missed) const {
  RETURN_IF_ERROR(table.index.Touch(0));
  const int64_t row =
      BucketIndex(reinterpret_cast<const uint8_t*>(std::as_const(table.index).data()),
                  table.index_slots)
          .Find(key);
  *missed = row < 0;
  const int64_t bucket = row < 0 ? table.buckets : row;
  if (bucket > table.buckets) {
    return absl::DataLossError(absl::StrCat("a bucket index names row ", row, " of ",
                                            table.buckets, " rows"));
  }
  const int64_t part = bucket / table.buckets_per_part;
  RETURN_IF_ERROR(table.values.Touch(part));
  if (precision_ == Precision::kInt8) RETURN_IF_ERROR(table.scales.Touch(degree_ == 0 ? 0 : part));
  return bucket;
}

void LshTableModel::ReadBucket(const Table& table, int64_t b, float* out) const {
  const int64_t per_bucket = degree_ == 0 ? o_ : o_ * (d_ + 1);
  const float* values = std::as_const(table.values).data();
  const float* scales = std::as_const(table.scales).data();
  if (precision_ == Precision::kBf16) {
    const uint16_t* v = reinterpret_cast<const uint16_t*>(values) + b * per_bucket;
    for (int64_t j = 0; j < per_bucket; ++j) out[j] = Bf16ToFloat(v[j]);
    return;
  }
  const int8_t* q = reinterpret_cast<const int8_t*>(values) + b * per_bucket;
  if (degree_ == 0) {
    for (int64_t j = 0; j < o_; ++j) out[j] = q[j] * scales[j];
    return;
  }
  const int64_t cols = d_ + 1;
  for (int64_t r = 0; r < o_; ++r) {
    const float scale = scales[b * o_ + r];
    for (int64_t c = 0; c < cols; ++c) out[r * cols + c] = q[r * cols + c] * scale;
  }
}

WeightResidency LshTableModel::Residency() const {
  WeightResidency r;
  r.mapped_bytes = info().mapped_bytes;
  if (r.mapped_bytes == 0) return r;
  auto add = [&r](const PackedWeights& a, int64_t parts) {
    if (!a.mapped() || parts == 0) return;
    const int64_t part_bytes = 4 * static_cast<int64_t>(a.size()) / parts;
    for (int64_t p = 0; p < parts; ++p) r.resident_bytes += a.ResidentBytes(p, part_bytes);
  };
  for (const Table& t : tables_) {
    const int64_t parts = CeilDiv(t.buckets + 1, t.buckets_per_part);
    add(t.index, 1);
    add(t.values, parts);
    add(t.scales, degree_ == 0 ? 1 : parts);
  }
  return r;
}

RoutingCounts LshTableModel::Routing() const {
  RoutingCounts counts;
  counts.lookups = lookups_.load(std::memory_order_relaxed);
  counts.misses = misses_.load(std::memory_order_relaxed);
  return counts;
}

}  // namespace sparse
