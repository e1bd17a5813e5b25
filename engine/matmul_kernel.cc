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

PackedWeights::PackedWeights(size_t floats) : size_(floats) {
  // aligned_alloc needs a size that is a multiple of the alignment.
  const size_t bytes = ((floats * sizeof(float) + 63) / 64) * 64;
  data_.reset(static_cast<float*>(std::aligned_alloc(64, bytes == 0 ? 64 : bytes)));
  if (data_ == nullptr) throw std::bad_alloc();
}

void PackedWeights::Free::operator()(float* p) const { std::free(p); }

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
  MatmulKernel kernel;
  kernel.spec_ = spec;
  kernel.id_ = Id(next_kernel_id.fetch_add(1));
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
      const bool beyond_cache =
          static_cast<int64_t>(kernel.plain_weights_.get_size()) > kPlainAboveBytes;
      if (preferred.get_size() * 4 > kernel.plain_weights_.get_size() * 5) {
        kernel.weights_ = sgemm_plain;
      } else if (beyond_cache && !(spec.relu && spec.accumulate)) {
        kernel.sgemm_weights_ = sgemm_plain;
        kernel.weights_ = preferred;
        // The blocked copy starts on a 64-byte boundary, like the buffer.
        kernel.primitive_offset_ =
            (static_cast<int64_t>(sgemm_plain.get_size() / sizeof(float)) + 15) / 16 * 16;
      } else {
        kernel.weights_ = preferred;
      }
    }
    const memory::desc output_major({spec.k, spec.n}, Dt::f32, Tag::ba);
    const memory::desc input_major({spec.k, spec.n}, Dt::f32, Tag::ab);
    if (kernel.primitive_offset_ == 0 &&
        (kernel.weights_ == output_major || kernel.weights_ == input_major)) {
      kernel.sgemm_weights_ = kernel.weights_;  // one plain copy serves both
    }
    kernel.packs_ = kernel.primitive_offset_ > 0 || kernel.weights_ != kernel.plain_weights_;
    kernel.sgemm_ = !kernel.sgemm_weights_.is_zero() && !(spec.relu && spec.accumulate);
    kernel.sgemm_transposed_ = kernel.sgemm_weights_ == output_major || spec.n == 1;
    kernel.packed_floats_ = kernel.primitive_offset_ +
                            static_cast<int64_t>(kernel.weights_.get_size() / sizeof(float));
    for (int b = 0; b < kNumBuckets; ++b) {
      const int64_t m = int64_t{1} << b;
      Bucket& bucket = kernel.buckets_[b];
      bucket.src = memory::desc({m, spec.k}, Dt::f32, Tag::ab);
      bucket.weights = kernel.weights_;
      bucket.dst = memory::desc({m, spec.n}, Dt::f32, Tag::ab);
      std::unique_ptr<dnnl::matmul::desc> desc;
      if (spec.bias) {
        bucket.bias = memory::desc({1, spec.n}, Dt::f32, Tag::ab);
        desc = std::make_unique<dnnl::matmul::desc>(bucket.src, bucket.weights, bucket.bias,
                                                    bucket.dst);
      } else {
        desc = std::make_unique<dnnl::matmul::desc>(bucket.src, bucket.weights, bucket.dst);
      }
      dnnl::matmul::primitive_desc pd(*desc, attr, CpuEngine());
      bucket.scratchpad = pd.scratchpad_desc();
      bucket.primitive = dnnl::matmul(pd);
    }
  } catch (const dnnl::error& e) {
    return FromDnnl(e, absl::StrCat("matmul creation (K=", spec.k, ", N=", spec.n, ")"));
  }
  if (kernel.sgemm_) {
    // oneDNN generates its sgemm code on first use: do that at load, not on
    // the first request.
    std::vector<float> zeros(spec.k * spec.n + spec.k + spec.n, 0.0f);
    int64_t flops = 0;
    RETURN_IF_ERROR(kernel.RunSgemm(zeros.data(), 1, zeros.data(), zeros.data(),
                                    zeros.data() + spec.k * spec.n + spec.k, &flops));
  }
  return kernel;
}

absl::StatusOr<PackedWeights> MatmulKernel::PackAll(const float* plain, int64_t count) const {
  PackedWeights packed(static_cast<size_t>(count * packed_floats_));
  const int64_t plain_floats = spec_.k * spec_.n;
  if (!packs_) {
    std::copy(plain, plain + count * plain_floats, packed.data());
    return packed;
  }
  try {
    const dnnl::engine& engine = CpuEngine();
    dnnl::stream& stream = ThreadStream();
    // Padding in the blocked layout must be zero; the reorder writes all of
    // it, but start from zeros so no byte is left uninitialised.
    std::fill(packed.data(), packed.data() + packed.size(), 0.0f);
    // The primitives' copy, then (when there are two) sgemm's plain one.
    std::vector<std::pair<memory::desc, int64_t>> copies = {{weights_, primitive_offset_}};
    if (primitive_offset_ > 0) copies.emplace_back(sgemm_weights_, 0);
    for (const auto& [layout, offset] : copies) {
      std::optional<dnnl::reorder> created;
      {
        absl::MutexLock creating(&PrimitiveCreationMutex());
        created.emplace(dnnl::reorder::primitive_desc(engine, plain_weights_, engine, layout));
      }
      dnnl::reorder& reorder = *created;
      for (int64_t i = 0; i < count; ++i) {
        memory src(plain_weights_, engine, const_cast<float*>(plain + i * plain_floats));
        memory dst(layout, engine, packed.data() + i * packed_floats_ + offset);
        reorder.execute(stream, src, dst);
      }
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return FromDnnl(e, "weight reorder");
  }
  return packed;
}

absl::Status MatmulKernel::RunSgemm(const float* x, int64_t rows, const float* w,
                                    const float* bias, float* y, int64_t* flops) const {
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
  *flops += 2 * rows * k * n;
  return absl::OkStatus();
}

absl::Status MatmulKernel::Run(const float* x, int64_t rows, const float* w, const float* bias,
                               float* y, int64_t* flops) const {
  // N = 1: sgemm is the faster kernel at every row count measured.
  if (sgemm_ && spec_.n == 1) return RunSgemm(x, rows, w, bias, y, flops);
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
      if (sgemm_ && m <= kSgemmMaxRows) {
        int64_t counted_below = 0;
        RETURN_IF_ERROR(
            RunSgemm(x + done * spec_.k, m, w, bias, y + done * spec_.n, &counted_below));
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
        if (spec_.bias) args.emplace(DNNL_ARG_BIAS, memory(bucket.bias, engine, DNNL_MEMORY_NONE));
        args.emplace(DNNL_ARG_DST, memory(bucket.dst, engine, DNNL_MEMORY_NONE));
        if (pad > 0) {
          args.emplace(DNNL_ARG_SCRATCHPAD, memory(bucket.scratchpad, engine, DNNL_MEMORY_NONE));
        }
      }
      args.at(DNNL_ARG_SRC).set_data_handle(const_cast<float*>(x + done * spec_.k));
      args.at(DNNL_ARG_WEIGHTS).set_data_handle(const_cast<float*>(w + primitive_offset_));
      if (spec_.bias) args.at(DNNL_ARG_BIAS).set_data_handle(const_cast<float*>(bias));
      args.at(DNNL_ARG_DST).set_data_handle(y + done * spec_.n);
      if (pad > 0) args.at(DNNL_ARG_SCRATCHPAD).set_data_handle(ScratchBytes(pad));
      bucket.primitive.execute(stream, args);
      done += m;
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return FromDnnl(e, "matmul execution");
  }
  *flops += 2 * rows * spec_.k * spec_.n;
  return absl::OkStatus();
}

}  // namespace sparse
