// Per-thread scratch memory and oneDNN execution resources.
//
// Every thread that runs a model gets, on first use, its own oneDNN stream
// and a set of growable scratch buffers. They live until the thread exits,
// so the request path allocates only while a thread's buffers are still
// growing to the largest model it has served. Nothing here is shared
// between threads; that is what makes concurrent Predict calls safe.
#ifndef SPARSE_ENGINE_WORKSPACE_H_
#define SPARSE_ENGINE_WORKSPACE_H_

#include <cstddef>
#include <cstdint>

#include "oneapi/dnnl/dnnl.hpp"

namespace sparse {

// The process-wide oneDNN CPU engine.
const dnnl::engine& CpuEngine();

// The calling thread's stream on CpuEngine().
dnnl::stream& ThreadStream();

// Scratch slots. One model call may use each slot for one purpose at a time.
enum class Scratch : int {
  kInput,      // gathered or augmented input rows
  kRouter,     // router / hash projections
  kHidden,     // hidden activations
  kOutput,     // per-group outputs before scatter
  kGather,     // gathered weights or activations
  kKernelInput,  // MatmulKernel: rows converted to bf16 or int8
  kKernelAccumulator,  // MatmulKernel: int32 products before the INT8 scales
  kCount,
};

// Returns at least `count` floats of the calling thread's buffer `slot`.
// The pointer is valid until the next call with the same slot on this thread.
float* ScratchFloats(Scratch slot, size_t count);
// The calling thread's index buffer (row ids grouped by expert).
int64_t* ScratchIndices(size_t count);
// Bytes for the oneDNN scratchpad.
void* ScratchBytes(size_t bytes);

}  // namespace sparse

#endif  // SPARSE_ENGINE_WORKSPACE_H_
