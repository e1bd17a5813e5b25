// MatmulKernel: y = act(x·W + bias) [+ y] on oneDNN 2.6 matmul primitives.
//
// Primitives are created once, in Create(), with static shapes: one per batch
// bucket M = 1, 2, 4, ..., 128. Run() splits any row count into those
// buckets (binary decomposition, no padding), so the arithmetic executed is
// exactly 2·rows·K·N FLOPs and nothing is created on the request path.
// Weights and bias are passed per call, which lets one kernel serve every
// expert slice or bucket of the same shape.
//
// Weights are packed once, at load, into the blocked layout oneDNN picks for
// the shape (Pack / PackAll). Weights stay plain, as output-major [N, K] when
// K >= N and input-major [K, N] otherwise, where the blocked layout would pad
// the matrix by more than 25% (small N: an lsh router's r hyperplanes, an
// o = 1 top layer, LSH projections of small d). Where the spec disallows
// packing (weights gathered per call), spec.layout is kept.
//
// Every matrix is kept once. (Until 2026-12-03 one over 32 MiB was kept
// twice, plain for sgemm at 1-2 rows and blocked for more; measured again,
// the blocked kernel alone was as fast at 1 row for 64 MiB and 5% slower
// for 512 MiB, which did not pay for twice the memory: docs/benchmarks.md.)
//
// Plain weights run the buckets of 1 and 2 rows, and every row count when
// N = 1, on oneDNN's sgemm (dnnl_sgemm, no primitive) instead, which costs
// less per call than executing a primitive.
//
// Each of these choices was measured; the figures, their dates and the
// commands are in docs/benchmarks.md ("Kernel choices").
//
// At BF16 and INT8 (spec.precision, see precision.h) every bucket of 2 or
// more rows runs on a primitive over weights packed at load in oneDNN's
// layout for that data type: bf16 x bf16 -> f32 (brgemm avx512_core_bf16
// here), and s8 x s8 -> s32 (brgemm avx512_core_vnni) followed by the
// scales, bias and ReLU applied here. Each matrix's storage then ends with
// its N float32 scales (INT8). One row runs on this file's own AVX-512
// kernels over the same packed bytes (matmul_kernel.cc, "One-row kernels";
// since 2026-12-07), which read them faster than the primitive and give its
// results bit for bit; where the CPU or the layout does not fit them, one
// row runs on the primitive too. There is no sgemm route and no second copy.
// A matrix that the blocked layout would pad by more than 25% (N = 1) stays
// FP32: precision() says what a kernel runs at.
//
// Bytes: each execution over a matrix (a primitive bucket or an sgemm call)
// reads it once, and Run() adds weight_bytes_per_read() to the caller's
// count; the rule and its formula are in docs/checkpoint-format.md.
//
// Thread-safety: Create() and destruction are not concurrent with Run().
// Run() is safe from any number of threads at once: each thread executes on
// its own oneDNN stream with its own scratchpad (see workspace.h).
#ifndef SPARSE_ENGINE_MATMUL_KERNEL_H_
#define SPARSE_ENGINE_MATMUL_KERNEL_H_

#include <array>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/precision.h"
#include "engine/weight_store.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace sparse {

struct MatmulSpec {
  enum class WeightLayout {
    kOutputMajor,  // W stored [N, K] row-major (a PyTorch Linear weight)
    kInputMajor,   // W stored [K, N] row-major
  };
  int64_t k = 0;  // input features
  int64_t n = 0;  // output features
  WeightLayout layout = WeightLayout::kOutputMajor;
  bool bias = false;        // adds a [N] bias
  bool relu = false;        // applies ReLU after the bias
  bool accumulate = false;  // adds the result into y instead of overwriting
  bool allow_packing = true;  // false when Run() gets weights built per call
  // BF16 and INT8 need allow_packing: their weights are converted at load.
  Precision precision = Precision::kFp32;
};

class MatmulKernel {
 public:
  static constexpr int kNumBuckets = 8;
  static constexpr int64_t kMaxBucketRows = int64_t{1} << (kNumBuckets - 1);  // 128
  // Plain-layout buckets up to this many rows run on sgemm (see above).
  static constexpr int64_t kSgemmMaxRows = 2;

  // Creates the primitives. Errors if oneDNN rejects the shape.
  static absl::StatusOr<MatmulKernel> Create(const MatmulSpec& spec);

  MatmulKernel(MatmulKernel&&) = default;
  MatmulKernel& operator=(MatmulKernel&&) = default;

  // Storage one weight matrix takes in the kernel's layout, in 4-byte units
  // ("floats"; >= K·N at FP32, about K·N/2 at BF16 and K·N/4 + N at INT8).
  int64_t packed_floats() const { return packed_floats_; }
  // What one execution over one matrix reads, as docs/checkpoint-format.md
  // counts it: K·N elements at the precision's width, plus the N float32
  // scales at INT8, plus the N float32 biases when spec.bias.
  int64_t weight_bytes_per_read() const { return bytes_per_read_; }
  Precision precision() const { return spec_.precision; }
  // Whether the kernel's layout differs from spec.layout.
  bool packs() const { return packs_; }
  // Whether the kernel's layout pads the matrix (K or N not a multiple of
  // its blocks): oneDNN then writes zeros into the padding whenever a
  // primitive is given the weights, so they cannot be read-only.
  bool WritesPadding() const;
  // Whether 1-2-row buckets run on sgemm (over plain weights).
  bool runs_sgemm() const { return sgemm_; }

  // Packs `count` weight matrices stored consecutively in spec.layout
  // (matrix i at plain + i·K·N) into one buffer, matrix i at
  // i·packed_floats(). Load-time only: it creates a reorder primitive.
  absl::StatusOr<PackedWeights> PackAll(const float* plain, int64_t count) const;
  // The same for matrices made one at a time: matrix(i, scratch) returns
  // matrix i in spec.layout, either a pointer to it or `scratch` (K·N
  // floats) filled with it. Without packing, scratch is the matrix's place
  // in the result, so a matrix built there is never copied: a model laid
  // out differently on disk (DsmModel's transposed slices) then needs no
  // second whole copy of its weights while it loads.
  using MatrixSource = absl::FunctionRef<const float*(int64_t i, float* scratch)>;
  absl::StatusOr<PackedWeights> PackAll(int64_t count, MatrixSource matrix) const;

  // Packs one matrix at a time into storage the caller places (a
  // WeightStore's part: weight_store.h). Load-time only; one per thread.
  class Packer {
   public:
    // `w`: one matrix in spec.layout (it may be `dst` itself when the
    // kernel does not pack, so a matrix built in place is never copied);
    // `dst`: packed_floats() floats. `index` names the matrix in errors
    // (a bfloat16 overflow).
    absl::Status Pack(const float* w, float* dst, int64_t index);

   private:
    friend class MatmulKernel;
    const MatmulKernel* kernel_ = nullptr;
    dnnl::reorder reorder_;
    std::vector<uint16_t> as_bf16_;
    std::vector<int8_t> as_int8_;
  };
  // Creates the reorder primitive a Packer runs. The kernel must outlive it.
  absl::StatusOr<Packer> MakePacker() const;
  // PackAll into array `name` of `store` (weight_store.h): `count` parts
  // of packed_floats() floats, matrix i packed into part i. A prebuilt
  // store's array is used as it is and `matrix` is never called, unless
  // WritesPadding(): a mapped array is then copied into process memory.
  absl::StatusOr<PackedWeights> PackInto(WeightStore& store, absl::string_view name, int64_t count,
                                         MatrixSource matrix) const;

  // x: [rows, K] row-major; w: one matrix as PackAll laid it out (or, when
  // !packs(), in spec.layout); bias: [N] (when
  // spec.bias, else ignored); y: [rows, N] row-major. Adds 2·rows·K·N to
  // *flops and weight_bytes_per_read() per execution to *weight_bytes.
  // REQUIRES: rows >= 1, every x finite, and the pointers cover those
  // extents.
  absl::Status Run(const float* x, int64_t rows, const float* w, const float* bias,
                   float* y, int64_t* flops, int64_t* weight_bytes) const;


 private:
  struct Bucket {
    dnnl::matmul primitive;
    dnnl::memory::desc src, weights, bias, dst, scratchpad;
  };
  MatmulKernel() = default;
  // Create() for BF16 and INT8: false, creating nothing, when the blocked
  // layout would pad the matrix by more than 25% (it then stays FP32).
  absl::StatusOr<bool> CreateReduced();
  void SetBytesPerRead();
  // One primitive per bucket over weights_ (in -> out data types; the bias
  // is float32). Throws dnnl::error. REQUIRES: PrimitiveCreationMutex held.
  void CreateBuckets(dnnl::memory::data_type in, dnnl::memory::data_type out, bool with_bias,
                     const dnnl::primitive_attr& attr);
  // The primitives' part of Run(): the binary decomposition into buckets
  // (with sgemm for 1-2 rows where it applies); counts executions in *reads.
  absl::Status RunBuckets(const float* x, int64_t rows, const float* w, const float* bias,
                          float* y, int64_t* reads) const;
  // y = act(x·W + bias) [+ y] for `rows` rows on dnnl_sgemm. REQUIRES: sgemm_.
  absl::Status RunSgemm(const float* x, int64_t rows, const float* w, const float* bias,
                        float* y) const;
  // Converts (BF16) or quantizes (INT8) m rows of x into the thread's
  // scratch, returning the primitive's source; INT8 writes each row's scale
  // to row_scales.
  void* ConvertInput(const float* x, int64_t m, float* row_scales) const;
  // The 1-row bucket at BF16 and INT8 on the kernels of matmul_kernel.cc
  // ("One-row kernels") instead of the primitive. REQUIRES: row_kernel_.
  void RunRow(const float* x, const float* w, const float* bias, float* y) const;
  // INT8: y = acc·(row scale · channel scale) + bias, ReLU, [+ y].
  void ApplyInt8Epilogue(const int32_t* acc, int64_t m, const float* row_scales,
                         const float* channel_scales, const float* bias, float* y) const;

  // Unique per Create(); keys the per-thread argument caches. When a kernel
  // is destroyed its id is retired, and each thread drops the kernel's
  // cache entries on its next Run, so loading and unloading versions for
  // ever does not grow memory. A moved-from id is 0 and retires nothing.
  class Id {
   public:
    Id() = default;
    explicit Id(uint64_t value) : value_(value) {}
    Id(Id&& other) noexcept : value_(std::exchange(other.value_, 0)) {}
    Id& operator=(Id&& other) noexcept;
    ~Id();
    uint64_t value() const { return value_; }

   private:
    uint64_t value_ = 0;
  };

  MatmulSpec spec_;
  Id id_;
  dnnl::memory::desc plain_weights_;  // spec.layout
  dnnl::memory::desc weights_;        // the primitives' layout
  dnnl::memory::desc sgemm_weights_;  // set when weights_ is plain: sgemm reads it
  int64_t packed_floats_ = 0;
  int64_t scales_offset_ = 0;   // INT8: where a matrix's N scales start, in floats
  int64_t bytes_per_read_ = 0;
  bool packs_ = false;
  // BF16 and INT8: the 1-row bucket runs RunRow (weights_ is the layout it
  // reads: 64-column blocks of row_block_ elements, K padded to row_kp_).
  bool row_kernel_ = false;
  int64_t row_kp_ = 0;
  int64_t row_block_ = 0;
  int64_t row_chunk_ = 0;  // BF16: the K values oneDNN sums in one chain
  bool sgemm_ = false;             // plain weights, and not ReLU and accumulate together
  bool sgemm_transposed_ = false;  // weights_ is output-major (or N = 1)
  std::array<Bucket, kNumBuckets> buckets_;
};

// Sets the OpenMP thread count oneDNN uses on the calling thread. The
// server runs one request per core with 1; benchmarks state what they use.
void SetKernelThreads(int threads);

// Whether BF16 and INT8 kernels created from now on run one row on their
// own kernels (true, the default) or on the oneDNN primitive, for tests
// that compare the two bit for bit.
void SetRowKernelsForTesting(bool enabled);

// Entries in the calling thread's argument cache (one per kernel and
// bucket the thread has run), after dropping those of destroyed kernels.
int64_t ThreadArgCacheEntriesForTesting();

}  // namespace sparse

#endif  // SPARSE_ENGINE_MATMUL_KERNEL_H_
