#include "engine/matmul_kernel.h"

#include <omp.h>

// GCC 12 reports the AVX-512 intrinsics' undefined pass-through operands as
// "(may be) used uninitialized" wherever they are inlined (a known false
// positive, see precision.cc); the diagnostic is about the header's lines.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include <algorithm>
#include <cstring>
#include <cstdlib>
#include <new>
#include <optional>
#include <type_traits>
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

namespace {

// ---------------------------------------------------------------------------
// One-row kernels for BF16 and INT8 (the bucket of 1 row).
//
// At one row the product is a read of the packed matrix and little else,
// and the primitive read it well below the memory's rate: on the expert
// slices of engine_bench's larger-than-cache DSM (K=1024, N=256), 2026-12-07,
// 11-14 us at INT8 where reading 256 KiB from the same place takes 9 us
// (BM_KernelRow against BM_ReadSlices). Its brgemm kernel streams one
// 64-column block after another, and each call pays oneDNN's argument
// handling (set_data_handle, execute's maps) and, at INT8, a pass over the
// int32 sums for the scales. These kernels read the same packed bytes, in
// the same layout (checked in CreateReduced(); any other stays on the
// primitive), four blocks side by side, and apply the epilogue to the sums
// in registers. Their results are the primitive's bit for bit: INT8 sums are
// exact in int32 whatever the order, and BF16 runs the same vdpbf16ps chain
// per output in the same order, over the same K chunks, added the same way
// (matmul_kernel_test compares the two at many shapes and epilogues).

const bool kRowVnni = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vnni");
const bool kRowBf16 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512bf16");
std::atomic<bool> row_kernels_enabled{true};

// INT8's ReLU is ApplyInt8Epilogue's std::max(v, 0.0f) (v unless v < 0, so
// -0 stays -0); BF16's is oneDNN's post-op, vmaxps(v, 0) (0 unless v > 0).
enum class Relu { kNone, kStdMax, kMaxps };

struct RowEpilogue {
  const float* channel_scales;  // INT8
  float row_scale;              // INT8
  const float* bias;            // or null
  Relu relu;
  bool accumulate;
};

// The lanes of columns j..j+15 that exist (j < n).
inline __mmask16 ValidLanes(int64_t n, int64_t j) {
  return n - j >= 16 ? __mmask16{0xffff} : static_cast<__mmask16>((1u << (n - j)) - 1);
}

// y[j] for the 16 columns of `v` (lanes past `valid` left alone): the
// scalar ApplyInt8Epilogue's operations in the same order.
__attribute__((target("avx512f,avx512bw"))) inline void StoreColumns(__m512 v, float* y,
                                                                     const float* bias, Relu relu,
                                                                     bool accumulate,
                                                                     __mmask16 valid) {
  if (bias != nullptr) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(valid, bias));
  const __m512 zero = _mm512_setzero_ps();
  if (relu == Relu::kStdMax) {
    v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), v, zero);
  } else if (relu == Relu::kMaxps) {
    v = _mm512_max_ps(v, zero);
  }
  if (accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(valid, y), v);
  _mm512_mask_storeu_ps(y, valid, v);
}

// The kernels read four 64-column blocks side by side: one core keeps more
// misses in flight on several streams than on one, and at one row nothing
// else limits them. Measured with BM_KernelRow (engine_bench), 2026-12-07,
// against BM_ReadSlices in the same runs: four streams without software
// prefetch beat one or two streams, and beat four with prefetches 2 KiB
// ahead (docs/benchmarks.md, "Serving precision").
constexpr int kRowStreams = 4;

// INT8, BA16a64b4a: 64-column blocks of kp/4 groups of 256 bytes (4 k x 64
// columns); the s8s8 compensation (-128 * column sum, int32) after them.
// x: the quantized row, k4 groups of 4 values (bytes past K are read but
// meet zero weights). kBlocks blocks starting at column j0 at once.
template <int kBlocks>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void Int8Blocks(
    const int8_t* x, int64_t k4, const int8_t* w, int64_t block_bytes, int64_t n, int64_t j0,
    const int32_t* compensation, const RowEpilogue& e, float* y) {
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  const int8_t* b = w + j0 / 64 * block_bytes;
  __m512i acc[kBlocks][4];
  for (auto& block : acc) {
    for (__m512i& a : block) a = _mm512_setzero_si512();
  }
  for (int64_t g = 0; g < k4; ++g) {
    int32_t x0;
    std::memcpy(&x0, x + g * 4, 4);
    const __m512i a0 = _mm512_xor_si512(_mm512_set1_epi32(x0), flip);
    for (int s = 0; s < kBlocks; ++s) {
      const int8_t* p = b + s * block_bytes + g * 256;
      for (int c = 0; c < 4; ++c) {
        acc[s][c] = _mm512_dpbusd_epi32(acc[s][c], a0, _mm512_loadu_si512(p + 64 * c));
      }
    }
  }
  for (int s = 0; s < kBlocks; ++s) {
    for (int c = 0; c < 4; ++c) {
      const int64_t j = j0 + 64 * s + 16 * c;
      if (j >= n) break;
      const __mmask16 valid = ValidLanes(n, j);
      const __m512i sum = _mm512_add_epi32(acc[s][c], _mm512_loadu_si512(compensation + j));
      // static_cast<float>(acc) * (row scale * channel scale), as the scalar code.
      const __m512 scale = _mm512_mul_ps(_mm512_set1_ps(e.row_scale),
                                         _mm512_maskz_loadu_ps(valid, e.channel_scales + j));
      const __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(sum), scale);
      StoreColumns(v, y + j, e.bias == nullptr ? nullptr : e.bias + j, e.relu, e.accumulate,
                   valid);
    }
  }
}

// Runs blocks(std::integral_constant<int, B>, j0) over the N columns, B
// blocks of 64 from column j0 at a time: kRowStreams while they last.
template <typename Blocks>
void ForBlockGroups(int64_t n, Blocks blocks) {
  const int64_t count = (n + 63) / 64;
  int64_t b = 0;
  for (; b + kRowStreams <= count; b += kRowStreams) {
    blocks(std::integral_constant<int, kRowStreams>(), b * 64);
  }
  for (; b + 2 <= count; b += 2) blocks(std::integral_constant<int, 2>(), b * 64);
  for (; b < count; ++b) blocks(std::integral_constant<int, 1>(), b * 64);
}

void Int8Row(const int8_t* x, int64_t k4, const int8_t* w, int64_t block_bytes, int64_t n,
             const int32_t* compensation, const RowEpilogue& e, float* y) {
  ForBlockGroups(n, [&](auto group, int64_t j0) {
    Int8Blocks<decltype(group)::value>(x, k4, w, block_bytes, n, j0, compensation, e, y);
  });
}

// BF16, BA16a64b2a: 64-column blocks of kp/2 groups of 256 bytes (2 k x 64
// columns). Each output is one vdpbf16ps chain from zero per K chunk of
// `chunk2` pairs, the chunks' sums added in order (sum = chunk + sum), as
// oneDNN's brgemm does; then bias, ReLU and accumulation as its post-ops.
// x: the row in bfloat16, k2 pairs.
template <int kBlocks>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void Bf16Blocks(
    const uint16_t* x, int64_t k2, const uint16_t* w, int64_t block_elements, int64_t n,
    int64_t j0, int64_t chunk2, const RowEpilogue& e, float* y) {
  const uint16_t* b = w + j0 / 64 * block_elements;
  __m512 total[kBlocks][4];
  for (auto& block : total) {
    for (__m512& t : block) t = _mm512_setzero_ps();
  }
  for (int64_t c0 = 0; c0 < k2; c0 += chunk2) {
    const int64_t c1 = std::min(k2, c0 + chunk2);
    __m512 acc[kBlocks][4];
    for (auto& block : acc) {
      for (__m512& a : block) a = _mm512_setzero_ps();
    }
    for (int64_t g = c0; g < c1; ++g) {
      int32_t xp;
      std::memcpy(&xp, x + g * 2, 4);
      const __m512bh a = reinterpret_cast<__m512bh>(_mm512_set1_epi32(xp));
      for (int s = 0; s < kBlocks; ++s) {
        const uint16_t* p = b + s * block_elements + g * 128;
        for (int c = 0; c < 4; ++c) {
          acc[s][c] = _mm512_dpbf16_ps(
              acc[s][c], reinterpret_cast<__m512bh>(_mm512_loadu_si512(p + 32 * c)), a);
        }
      }
    }
    for (int s = 0; s < kBlocks; ++s) {
      for (int c = 0; c < 4; ++c) {
        total[s][c] = c0 == 0 ? acc[s][c] : _mm512_add_ps(acc[s][c], total[s][c]);
      }
    }
  }
  for (int s = 0; s < kBlocks; ++s) {
    for (int c = 0; c < 4; ++c) {
      const int64_t j = j0 + 64 * s + 16 * c;
      if (j >= n) break;
      const __mmask16 valid = ValidLanes(n, j);
      StoreColumns(total[s][c], y + j, e.bias == nullptr ? nullptr : e.bias + j, e.relu,
                   e.accumulate, valid);
    }
  }
}

void Bf16Row(const uint16_t* x, int64_t k2, const uint16_t* w, int64_t block_elements, int64_t n,
             int64_t chunk2, const RowEpilogue& e, float* y) {
  ForBlockGroups(n, [&](auto group, int64_t j0) {
    Bf16Blocks<decltype(group)::value>(x, k2, w, block_elements, n, j0, chunk2, e, y);
  });
}

}  // namespace

void SetRowKernelsForTesting(bool enabled) { row_kernels_enabled.store(enabled); }

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
    // The one-row kernels read exactly this layout; any other stays on the
    // primitive.
    const dnnl_memory_desc_t& md = weights_.data;
    const dnnl_blocking_desc_t& blk = md.format_desc.blocking;
    const int64_t kp = md.padded_dims[0], np = md.padded_dims[1];
    const int64_t inner_k = bf16 ? 2 : 4;
    // BA16a64b4a (INT8) and BA16a64b2a (BF16): blocks of 64 columns, each
    // all of K (padded to 16·inner_k) in groups of inner_k values x 64
    // columns; at INT8 the N int32 compensations right after the blocks.
    const bool layout = md.format_kind == dnnl_blocked && md.ndims == 2 && md.offset0 == 0 &&
                        kp % (16 * inner_k) == 0 && np % 64 == 0 && blk.inner_nblks == 3 &&
                        blk.inner_blks[0] == 16 && blk.inner_idxs[0] == 0 &&
                        blk.inner_blks[1] == 64 && blk.inner_idxs[1] == 1 &&
                        blk.inner_blks[2] == inner_k && blk.inner_idxs[2] == 0 &&
                        blk.strides[0] == 16 * 64 * inner_k && blk.strides[1] == kp * 64;
    const bool extra =
        bf16 ? md.extra.flags == dnnl_memory_extra_flag_none
             : md.extra.flags == dnnl_memory_extra_flag_compensation_conv_s8s8 &&
                   md.extra.compensation_mask == 2 &&
                   weights_.get_size() >= static_cast<size_t>(kp * np + 4 * np);
    row_kernel_ = layout && extra && (bf16 ? kRowBf16 : kRowVnni) &&
                  row_kernels_enabled.load(std::memory_order_relaxed);
    row_kp_ = kp;
    row_block_ = kp * 64;
    // oneDNN 2.6's brgemm matmul sums K in blocks of 512, or 1024 when K >
    // 1024 (brgemm_matmul_utils.cpp, compute_blocking_heuristic_avx512);
    // the BF16 kernel follows it, so only on that version.
    const dnnl_version_t* version = dnnl_version();
    row_chunk_ = spec.k > 1024 ? 1024 : 512;
    if (bf16 && !(version->major == 2 && version->minor == 6)) row_kernel_ = false;
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
    ASSIGN_OR_RETURN(PackedWeights mapped,
                     store.Array(name, count, packed_floats_,
                                 [](int64_t, float*) { return absl::OkStatus(); }));
    if (!mapped.mapped() || !WritesPadding()) return mapped;
    // oneDNN zero-fills a padded layout's padding each time a primitive is
    // given the weights (memory::set_data_handle), which a read-only
    // mapping cannot take: such arrays are checked and copied out.
    PackedWeights copy(mapped.size());
    for (int64_t i = 0; i < count; ++i) RETURN_IF_ERROR(mapped.Touch(i));
    const float* from = std::as_const(mapped).data();
    std::copy(from, from + mapped.size(), copy.data());
    return copy;
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

bool MatmulKernel::WritesPadding() const {
  if (!packs_) return false;
  const dnnl_memory_desc_t& d = weights_.data;
  for (int i = 0; i < d.ndims; ++i) {
    if (d.padded_dims[i] != d.dims[i]) return true;
  }
  return false;
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

void MatmulKernel::RunRow(const float* x, const float* w, const float* bias, float* y) const {
  const int64_t k = spec_.k, n = spec_.n;
  float row_scale = 0.0f;
  void* src = ConvertInput(x, 1, &row_scale);
  RowEpilogue e{.channel_scales = nullptr,
                .row_scale = row_scale,
                .bias = spec_.bias ? bias : nullptr,
                .relu = Relu::kNone,
                .accumulate = spec_.accumulate};
  if (spec_.precision == Precision::kInt8) {
    if (spec_.relu) e.relu = Relu::kStdMax;
    e.channel_scales = w + scales_offset_;
    const auto* packed = reinterpret_cast<const int8_t*>(w);
    Int8Row(static_cast<const int8_t*>(src), (k + 3) / 4, packed, row_block_, n,
            reinterpret_cast<const int32_t*>(packed + row_kp_ * ((n + 63) / 64 * 64)), e, y);
    return;
  }
  if (spec_.relu) e.relu = Relu::kMaxps;
  auto* row = static_cast<uint16_t*>(src);
  if (k % 2 == 1) row[k] = 0;  // the pair's other half meets a zero weight
  Bf16Row(row, (k + 1) / 2, reinterpret_cast<const uint16_t*>(w), row_block_, n,
          (row_chunk_ + 1) / 2, e, y);
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
  if (rows == 1 && row_kernel_) {
    // One row at BF16 or INT8, on no oneDNN object at all.
    RunRow(x, w, bias, y);
    reads = 1;
  } else if (sgemm_ && spec_.n == 1) {
    // N = 1: sgemm is the faster kernel at every row count measured.
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
      if (m == 1 && row_kernel_) {
        RunRow(x + done * spec_.k, w, bias, y + done * spec_.n);
        done += 1;
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
