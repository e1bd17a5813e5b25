#include "engine/workspace.h"

#include <array>
#include <vector>

namespace sparse {
namespace {

struct ThreadWorkspace {
  std::array<std::vector<float>, static_cast<int>(Scratch::kCount)> floats;
  std::vector<int64_t> indices;
  std::vector<unsigned char> bytes;
};

ThreadWorkspace& Local() {
  thread_local ThreadWorkspace workspace;
  return workspace;
}

}  // namespace

const dnnl::engine& CpuEngine() {
  static const dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

dnnl::stream& ThreadStream() {
  thread_local dnnl::stream stream(CpuEngine());
  return stream;
}

float* ScratchFloats(Scratch slot, size_t count) {
  std::vector<float>& v = Local().floats[static_cast<int>(slot)];
  if (v.size() < count) v.resize(count);
  return v.data();
}

int64_t* ScratchIndices(size_t count) {
  std::vector<int64_t>& v = Local().indices;
  if (v.size() < count) v.resize(count);
  return v.data();
}

void* ScratchBytes(size_t bytes) {
  std::vector<unsigned char>& v = Local().bytes;
  if (v.size() < bytes) v.resize(bytes);
  return v.data();
}

}  // namespace sparse
