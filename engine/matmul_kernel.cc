#include "engine/matmul_kernel.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <new>
#include <optional>
#include <atomic>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/workspace.h"

namespace sparse {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using Dt = memory::data_type;

// The argument map of one bucket of one kernel on one thread. Its memory
// objects are created on the thread's first call and re-pointed with
// set_data_handle afterwards, so a call allocates nothing.
using ArgCache = absl::flat_hash_map<std::pair<uint64_t, int>, std::unordered_map<int, memory>>;

// Ids of destroyed kernels, in order. A thread drops their cache entries on
// its next Run (a version unloaded by a hot reload must not leave a few KiB
// per kernel per thread behind for ever). 8 bytes per destroyed kernel.
absl::Mutex retired_mu;
std::vector<uint64_t>& RetiredIds() ABSL_EXCLUSIVE_LOCKS_REQUIRED(retired_mu) {
  static auto* ids = new std::vector<uint64_t>();
  return *ids;
}
std::atomic<size_t> retired_count{0};

ArgCache& ThreadArgCache() {
  thread_local ArgCache cache;
  thread_local size_t seen = 0;
  if (retired_count.load(std::memory_order_acquire) != seen) {
    absl::MutexLock lock(&retired_mu);
    const std::vector<uint64_t>& ids = RetiredIds();
    for (; seen < ids.size(); ++seen) {
      for (int b = 0; b < MatmulKernel::kNumBuckets; ++b) cache.erase(std::make_pair(ids[seen], b));
    }
  }
  return cache;
}

std::atomic<uint64_t> next_kernel_id{1};

absl::Status FromDnnl(const dnnl::error& e, absl::string_view what) {
  return absl::InternalError(absl::StrCat("oneDNN ", what, " failed: ", e.what()));
}

}  // namespace

void SetKernelThreads(int threads) { omp_set_num_threads(threads); }

int64_t ThreadArgCacheEntriesForTesting() { return static_cast<int64_t>(ThreadArgCache().size()); }

MatmulKernel::Id& MatmulKernel::Id::operator=(Id&& other) noexcept {
  if (this != &other) {
    Id retired(value_);  // retires the id this one held
    value_ = std::exchange(other.value_, 0);
  }
  return *this;
}

MatmulKernel::Id::~Id() {
  if (value_ == 0) return;
  absl::MutexLock lock(&retired_mu);
  RetiredIds().push_back(value_);
  retired_count.store(RetiredIds().size(), std::memory_order_release);
}


namespace {

// Held while oneDNN creates primitives (Create, the reorders of PackAll).
// Models load side by side (model_store's manager), and oneDNN's primitive
// cache and its code generator are shared by the process; creating one at a
// time costs microseconds per kernel at load, and leaves no doubt about
// that shared state (ThreadSanitizer, which cannot see inside libdnnl,
// otherwise reports the cache's entries handed from one loading thread to
// another). Executing primitives, the request path, takes no lock.
absl::Mutex& PrimitiveCreationMutex() {
  static absl::Mutex* mu = new absl::Mutex();
  return *mu;
}

}  // namespace

absl::StatusOr<MatmulKernel> MatmulKernel::Create(const MatmulSpec& spec) {
  if (spec.k < 1 || spec.n < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("matmul needs K, N >= 1, got K=", spec.k, " N=", spec.n));
  }
  if (spec.precision != Precision::kFp32 && !spec.allow_packing) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a ", PrecisionName(spec.precision),
        " matmul needs weights packed at load; this one gets them per call"));
  }
  MatmulKernel kernel;
  kernel.spec_ = spec;
  kernel.id_ = Id(next_kernel_id.fetch_add(1));
  if (spec.precision != Precision::kFp32) {
    ASSIGN_OR_RETURN(const bool reduced, kernel.CreateReduced());
    if (reduced) return kernel;
    kernel.spec_.precision = Precision::kFp32;  // see CreateReduced
  }
  kernel.SetBytesPerRead();
  absl::MutexLock creating(&PrimitiveCreationMutex());
  try {
    dnnl::post_ops ops;
    // Order matters: sum (y += ...) is applied to the biased result, and the
    // ReLU is applied before accumulating; no caller combines both today.
    if (spec.relu) ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
    if (spec.accumulate) ops.append_sum(1.0f);
    dnnl::primitive_attr attr;
    attr.set_post_ops(ops);
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);

    const Tag weight_tag = spec.layout == MatmulSpec::WeightLayout::kOutputMajor ? Tag::ba : Tag::ab;
    kernel.plain_weights_ = memory::desc({spec.k, spec.n}, Dt::f32, weight_tag);
    kernel.weights_ = kernel.plain_weights_;
    if (spec.allow_packing) {
      // The layout oneDNN prefers for a batch-1 product of this shape; the
      // same layout serves every bucket.
      const memory::desc any({spec.k, spec.n}, Dt::f32, Tag::any);
      const memory::desc src({1, spec.k}, Dt::f32, Tag::ab);
      const memory::desc dst({1, spec.n}, Dt::f32, Tag::ab);
      const dnnl::matmul::primitive_desc probe(dnnl::matmul::desc(src, any, dst), attr,
                                               CpuEngine());
      const memory::desc preferred = probe.weights_desc();
      // Plain, in the layout oneDNN's sgemm runs fastest (see the header);
      // for N = 1 both plain layouts are the same bytes.
      const memory::desc sgemm_plain =
          spec.n > 1 ? memory::desc({spec.k, spec.n}, Dt::f32, spec.k >= spec.n ? Tag::ba : Tag::ab)
                     : kernel.plain_weights_;
      kernel.weights_ = preferred.get_size() * 4 > kernel.plain_weights_.get_size() * 5
                            ? sgemm_plain
                            : preferred;
    }
    const memory::desc output_major({spec.k, spec.n}, Dt::f32, Tag::ba);
    const memory::desc input_major({spec.k, spec.n}, Dt::f32, Tag::ab);
    if (kernel.weights_ == output_major || kernel.weights_ == input_major) {
      kernel.sgemm_weights_ = kernel.weights_;  // plain: sgemm reads it too
    }
    kernel.packs_ = kernel.weights_ != kernel.plain_weights_;
    kernel.sgemm_ = !kernel.sgemm_weights_.is_zero() && !(spec.relu && spec.accumulate);
    kernel.sgemm_transposed_ = kernel.sgemm_weights_ == output_major || spec.n == 1;
    kernel.packed_floats_ = static_cast<int64_t>(kernel.weights_.get_size() / sizeof(float));
    kernel.CreateBuckets(Dt::f32, Dt::f32, spec.bias, attr);
  } catch (const dnnl::error& e) {
    return FromDnnl(e, absl::StrCat("matmul creation (K=", spec.k, ", N=", spec.n, ")"));
  }
  if (kernel.sgemm_) {
    // oneDNN generates its sgemm code on first use: do that at load, not on
    // the first request.
    std::vector<float> zeros(spec.k * spec.n + spec.k + spec.n, 0.0f);
    RETURN_IF_ERROR(kernel.RunSgemm(zeros.data(), 1, zeros.data(), zeros.data(),
                                    zeros.data() + spec.k * spec.n + spec.k));
  }
  return kernel;
}

void MatmulKernel::CreateBuckets(dnnl::memory::data_type in, dnnl::memory::data_type out,
                                 bool with_bias, const dnnl::primitive_attr& attr) {
  for (int b = 0; b < kNumBuckets; ++b) {
    const int64_t m = int64_t{1} << b;
    Bucket& bucket = buckets_[b];
    bucket.src = memory::desc({m, spec_.k}, in, Tag::ab);
    bucket.weights = weights_;
    bucket.dst = memory::desc({m, spec_.n}, out, Tag::ab);
    std::unique_ptr<dnnl::matmul::desc> desc;
    if (with_bias) {
      bucket.bias = memory::desc({1, spec_.n}, Dt::f32, Tag::ab);
      desc = std::make_unique<dnnl::matmul::desc>(bucket.src, bucket.weights, bucket.bias,
                                                  bucket.dst);
    } else {
      desc = std::make_unique<dnnl::matmul::desc>(bucket.src, bucket.weights, bucket.dst);
    }
    dnnl::matmul::primitive_desc pd(*desc, attr, CpuEngine());
    bucket.scratchpad = pd.scratchpad_desc();
    bucket.primitive = dnnl::matmul(pd);
  }
}

void MatmulKernel::SetBytesPerRead() {
  bytes_per_read_ = spec_.k * spec_.n * PrecisionBytes(spec_.precision) +
                    (spec_.precision == Precision::kInt8 ? 4 * spec_.n : 0) +
                    (spec_.bias ? 4 * spec_.n : 0);
}

absl::StatusOr<bool> MatmulKernel::CreateReduced() {
  const MatmulSpec& spec = spec_;
  const bool bf16 = spec.precision == Precision::kBf16;
  const Dt in = bf16 ? Dt::bf16 : Dt::s8;
  const Dt out = bf16 ? Dt::f32 : Dt::s32;
  absl::MutexLock creating(&PrimitiveCreationMutex());
  try {
    // BF16 fuses bias, ReLU and accumulation as FP32 does; INT8 applies them
    // after its scales (ApplyInt8Epilogue).
    dnnl::post_ops ops;
    if (bf16 && spec.relu) ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
    if (bf16 && spec.accumulate) ops.append_sum(1.0f);
    dnnl::primitive_attr attr;
    attr.set_post_ops(ops);
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const Tag weight_tag = spec.layout == MatmulSpec::WeightLayout::kOutputMajor ? Tag::ba : Tag::ab;
    plain_weights_ = memory::desc({spec.k, spec.n}, in, weight_tag);
    const memory::desc any({spec.k, spec.n}, in, Tag::any);
    const dnnl::matmul::primitive_desc probe(
        dnnl::matmul::desc(memory::desc({1, spec.k}, in, Tag::ab), any,
                           memory::desc({1, spec.n}, out, Tag::ab)),
        attr, CpuEngine());
    weights_ = probe.weights_desc();
    // A narrow matrix (an o = 1 top layer) would be padded to a whole block:
    // it stays FP32, where it is kept plain (a few KiB at most).
    const size_t plain_bytes = static_cast<size_t>(spec.k * spec.n * PrecisionBytes(spec.precision));
    if (weights_.get_size() * 4 > plain_bytes * 5) {
      weights_ = memory::desc();
      plain_weights_ = memory::desc();
      return false;
    }
    CreateBuckets(in, out, bf16 && spec.bias, attr);
  } catch (const dnnl::error& e) {
    return FromDnnl(e, absl::StrCat(PrecisionName(spec.precision), " matmul creation (K=", spec.k,
                                    ", N=", spec.n, ")"));
  }
  packs_ = true;
  sgemm_ = false;
  // The packed matrix, padded to 64 bytes, then (INT8) its N scales.
  const int64_t matrix_floats = (static_cast<int64_t>(weights_.get_size()) + 63) / 64 * 16;
  scales_offset_ = bf16 ? 0 : matrix_floats;
  packed_floats_ = matrix_floats + (bf16 ? 0 : (spec.n + 15) / 16 * 16);
  SetBytesPerRead();
  return true;
}

absl::StatusOr<PackedWeights> MatmulKernel::PackAll(const float* plain, int64_t count) const {
  const int64_t plain_floats = spec_.k * spec_.n;
  return PackAll(count, [plain, plain_floats](int64_t i, float*) { return plain + i * plain_floats; });
}

absl::StatusOr<PackedWeights> MatmulKernel::PackAll(int64_t count, MatrixSource matrix) const {
  return PackInto(CopyIn(), "", count, matrix);
}

absl::StatusOr<PackedWeights> MatmulKernel::PackInto(WeightStore& store, absl::string_view name,
                                                     int64_t count, MatrixSource matrix) const {
  if (store.Prebuilt()) {
    return store.Array(name, count, packed_floats_,
                       [](int64_t, float*) { return absl::OkStatus(); });
  }
  ASSIGN_OR_RETURN(Packer packer, MakePacker());
  std::vector<float> scratch(static_cast<size_t>(packs_ || spec_.precision != Precision::kFp32
                                                     ? spec_.k * spec_.n
                                                     : 0));
  return store.Array(name, count, packed_floats_, [&](int64_t i, float* dst) {
    // Without packing, the matrix may be built in its place in the array.
    float* build = scratch.empty() ? dst : scratch.data();
    return packer.Pack(matrix(i, build), dst, i);
  });
}

absl::StatusOr<MatmulKernel::Packer> MatmulKernel::MakePacker() const {
  Packer packer;
  packer.kernel_ = this;
  if (!packs_ && spec_.precision == Precision::kFp32) return packer;
  const int64_t elements = spec_.k * spec_.n;
  if (spec_.precision == Precision::kBf16) packer.as_bf16_.resize(elements);
  if (spec_.precision == Precision::kInt8) packer.as_int8_.resize(elements);
  try {
    const dnnl::engine& engine = CpuEngine();
    absl::MutexLock creating(&PrimitiveCreationMutex());
    packer.reorder_ =
        dnnl::reorder(dnnl::reorder::primitive_desc(engine, plain_weights_, engine, weights_));
  } catch (const dnnl::error& e) {
    return FromDnnl(e, absl::StrCat(PrecisionName(spec_.precision), " weight reorder"));
  }
  return packer;
}

absl::Status MatmulKernel::Packer::Pack(const float* w, float* dst, int64_t index) {
  const MatmulSpec& spec = kernel_->spec_;
  const int64_t k = spec.k, n = spec.n, elements = k * n;
  if (!kernel_->packs_ && spec.precision == Precision::kFp32) {
    if (w != dst) std::copy(w, w + elements, dst);
    return absl::OkStatus();
  }
  // Padding in the blocked layout must be zero; the reorder writes all of
  // it, but start from zeros so no byte is left uninitialised.
  std::fill(dst, dst + kernel_->packed_floats_, 0.0f);
  void* source = const_cast<float*>(w);
  if (spec.precision == Precision::kBf16) {
    // One matrix at a time in the reduced type, in spec.layout, then reordered.
    ToBf16(w, elements, as_bf16_.data());
    for (int64_t e = 0; e < elements; ++e) {
      if (!Bf16IsFinite(as_bf16_[e])) {
        return absl::InvalidArgumentError(absl::StrCat(
            "matrix ", index, " element ", e, " (", w[e], ") overflows bfloat16"));
      }
    }
    source = as_bf16_.data();
  } else if (spec.precision == Precision::kInt8) {
    // One scale per output channel: contiguous rows when output-major,
    // strided columns when input-major.
    const bool output_major = spec.layout == MatmulSpec::WeightLayout::kOutputMajor;
    float* scales = dst + kernel_->scales_offset_;
    for (int64_t j = 0; j < n; ++j) {
      scales[j] = output_major ? QuantizeInt8(w + j * k, k, as_int8_.data() + j * k)
                               : QuantizeInt8Strided(w + j, k, n, as_int8_.data() + j);
    }
    source = as_int8_.data();
  }
  try {
    const dnnl::engine& engine = CpuEngine();
    dnnl::stream& stream = ThreadStream();
    memory src(kernel_->plain_weights_, engine, source);
    memory packed_matrix(kernel_->weights_, engine, dst);
    reorder_.execute(stream, src, packed_matrix);
    stream.wait();
  } catch (const dnnl::error& e) {
    return FromDnnl(e, absl::StrCat(PrecisionName(spec.precision), " weight reorder"));
  }
  return absl::OkStatus();
}

void* MatmulKernel::ConvertInput(const float* x, int64_t m, float* row_scales) const {
  const int64_t k = spec_.k;
  if (spec_.precision == Precision::kBf16) {
    auto* out = reinterpret_cast<uint16_t*>(
        ScratchFloats(Scratch::kKernelInput, static_cast<size_t>((m * k + 1) / 2)));
    ToBf16(x, m * k, out);
    return out;
  }
  auto* out = reinterpret_cast<int8_t*>(
      ScratchFloats(Scratch::kKernelInput, static_cast<size_t>((m * k + 3) / 4)));
  for (int64_t r = 0; r < m; ++r) row_scales[r] = QuantizeInt8(x + r * k, k, out + r * k);
  return out;
}

void MatmulKernel::ApplyInt8Epilogue(const int32_t* acc, int64_t m, const float* row_scales,
                                     const float* channel_scales, const float* bias,
                                     float* y) const {
  const int64_t n = spec_.n;
  for (int64_t r = 0; r < m; ++r) {
    const float sx = row_scales[r];
    const int32_t* a = acc + r * n;
    float* yr = y + r * n;
    for (int64_t j = 0; j < n; ++j) {
      float v = static_cast<float>(a[j]) * (sx * channel_scales[j]);
      if (spec_.bias) v += bias[j];
      if (spec_.relu) v = std::max(v, 0.0f);
      yr[j] = spec_.accumulate ? yr[j] + v : v;
    }
  }
}

absl::Status MatmulKernel::RunSgemm(const float* x, int64_t rows, const float* w,
                                    const float* bias, float* y) const {
  const int64_t k = spec_.k, n = spec_.n;
  // y starts as the bias (or 0), plus its old value when accumulating; the
  // product is then added (beta = 1) and the ReLU applied in place.
  for (int64_t r = 0; r < rows; ++r) {
    float* yr = y + r * n;
    if (!spec_.accumulate) {
      if (spec_.bias) {
        std::copy(bias, bias + n, yr);
      } else {
        std::fill(yr, yr + n, 0.0f);
      }
    } else if (spec_.bias) {
      for (int64_t j = 0; j < n; ++j) yr[j] += bias[j];
    }
  }
  const dnnl_status_t status =
      dnnl_sgemm('N', sgemm_transposed_ ? 'T' : 'N', rows, n, k, 1.0f, x, k, w,
                 sgemm_transposed_ ? k : n, 1.0f, y, n);
  if (status != dnnl_success) {
    return absl::InternalError(absl::StrCat("oneDNN sgemm failed (K=", k, ", N=", n,
                                            ", rows=", rows, "): status ", status));
  }
  if (spec_.relu) {
    for (int64_t i = 0; i < rows * n; ++i) y[i] = std::max(y[i], 0.0f);
  }
  return absl::OkStatus();
}

absl::Status MatmulKernel::Run(const float* x, int64_t rows, const float* w, const float* bias,
                               float* y, int64_t* flops, int64_t* weight_bytes) const {
  int64_t reads = 0;
  // N = 1: sgemm is the faster kernel at every row count measured.
  if (sgemm_ && spec_.n == 1) {
    RETURN_IF_ERROR(RunSgemm(x, rows, w, bias, y));
    reads = 1;
  } else {
    RETURN_IF_ERROR(RunBuckets(x, rows, w, bias, y, &reads));
  }
  *flops += 2 * rows * spec_.k * spec_.n;
  *weight_bytes += reads * bytes_per_read_;
  return absl::OkStatus();
}

absl::Status MatmulKernel::RunBuckets(const float* x, int64_t rows, const float* w,
                                      const float* bias, float* y, int64_t* reads) const {
  const bool int8 = spec_.precision == Precision::kInt8;
  const bool reduced = spec_.precision != Precision::kFp32;
  float row_scales[kMaxBucketRows];
  try {
    dnnl::stream& stream = ThreadStream();
    ArgCache& cache = ThreadArgCache();
    int64_t done = 0;
    // Binary decomposition: full 128-row chunks, then the remainder's bits
    // from the highest down. Every row runs once; none is padded.
    while (done < rows) {
      const int64_t left = rows - done;
      int b = kNumBuckets - 1;
      while ((int64_t{1} << b) > left) --b;
      const int64_t m = int64_t{1} << b;
      ++*reads;
      if (sgemm_ && m <= kSgemmMaxRows) {
        RETURN_IF_ERROR(RunSgemm(x + done * spec_.k, m, w, bias, y + done * spec_.n));
        done += m;
        continue;
      }
      const Bucket& bucket = buckets_[b];
      const size_t pad = bucket.scratchpad.get_size();
      auto [entry, inserted] = cache.try_emplace(std::make_pair(id_.value(), b));
      std::unordered_map<int, memory>& args = entry->second;
      if (inserted) {
        const dnnl::engine& engine = CpuEngine();
        args.emplace(DNNL_ARG_SRC, memory(bucket.src, engine, DNNL_MEMORY_NONE));
        args.emplace(DNNL_ARG_WEIGHTS, memory(bucket.weights, engine, DNNL_MEMORY_NONE));
        if (!bucket.bias.is_zero()) {
          args.emplace(DNNL_ARG_BIAS, memory(bucket.bias, engine, DNNL_MEMORY_NONE));
        }
        args.emplace(DNNL_ARG_DST, memory(bucket.dst, engine, DNNL_MEMORY_NONE));
        if (pad > 0) {
          args.emplace(DNNL_ARG_SCRATCHPAD, memory(bucket.scratchpad, engine, DNNL_MEMORY_NONE));
        }
      }
      const float* xm = x + done * spec_.k;
      float* ym = y + done * spec_.n;
      int32_t* acc = nullptr;
      args.at(DNNL_ARG_SRC).set_data_handle(reduced ? ConvertInput(xm, m, row_scales)
                                                    : const_cast<float*>(xm));
      args.at(DNNL_ARG_WEIGHTS).set_data_handle(const_cast<float*>(w));
      if (!bucket.bias.is_zero()) args.at(DNNL_ARG_BIAS).set_data_handle(const_cast<float*>(bias));
      if (int8) {
        acc = reinterpret_cast<int32_t*>(
            ScratchFloats(Scratch::kKernelAccumulator, static_cast<size_t>(m * spec_.n)));
        args.at(DNNL_ARG_DST).set_data_handle(acc);
      } else {
        args.at(DNNL_ARG_DST).set_data_handle(ym);
      }
      if (pad > 0) args.at(DNNL_ARG_SCRATCHPAD).set_data_handle(ScratchBytes(pad));
      bucket.primitive.execute(stream, args);
      if (int8) {
        stream.wait();
        ApplyInt8Epilogue(acc, m, row_scales, w + scales_offset_, bias, ym);
      }
      done += m;
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return FromDnnl(e, "matmul execution");
  }
  return absl::OkStatus();
}

}  // namespace sparse
